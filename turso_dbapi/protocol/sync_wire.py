"""`/pull-updates` messages of the Turso sync protocol and the response framing.

Spec: shared/spec/turso-sync-protocol.md §2. Pages are 4096 bytes; wire page ids are
0-based (``page_id = pgno - 1``). The response body is ``varint(len) header`` followed by
``varint(len) PageData`` repeated until EOF (``writeDelimitedTo`` framing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Tuple, Union

from . import protobuf as pb
from .protobuf import DecodeError

PAGE_SIZE = 4096

# enum PageUpdatesEncodingReq
ENCODING_RAW = 0
ENCODING_ZSTD = 1
# enum PullUpdatesStreamKind
STREAM_PAGES = 0
STREAM_MVCC_LOGICAL_LOG = 1
# enum PullUpdatesApplyMode
APPLY_INCREMENTAL = 0
APPLY_REPLACE_BASE = 1
# enum PullUpdatesProtocol
PROTOCOL_UNSPECIFIED = 0
PROTOCOL_PAGES = 1
PROTOCOL_MVCC_LOGICAL = 2

# The client's varint reader for the length prefix accepts at most 9 bytes.
MAX_PREFIX_VARINT = 9

# Reply bounds a client checks before it stores anything (a reply outside them is refused
# whole, so it can never be recorded and wedge a replica):
MAX_DB_PAGES = 0xFFFFFFFE  # SQLite's largest page count: page numbers are u32, 2^32-1 unused
MAX_REVISION_BYTES = 4096  # revisions are opaque but short ("17", a small JSON object)
MAX_HEADER_FRAME = 1 << 20  # a header frame; a page frame is PAGE_SIZE plus a few bytes
_PAGE_FRAME_SLACK = 32


@dataclass
class PullUpdatesRequest:
    encoding: int = ENCODING_RAW
    server_revision: str = ""
    client_revision: str = ""
    long_poll_timeout_ms: int = 0
    server_pages_selector: bytes = b""
    client_pages: bytes = b""
    server_query_selector: str = ""
    stream_kind: int = STREAM_PAGES

    def encode(self) -> bytes:
        return b"".join(
            (
                pb.field_varint(1, self.encoding),
                pb.field_string(2, self.server_revision),
                pb.field_string(3, self.client_revision),
                pb.field_varint(4, self.long_poll_timeout_ms),
                pb.field_bytes(5, self.server_pages_selector),
                pb.field_bytes(6, self.client_pages),
                pb.field_string(7, self.server_query_selector),
                pb.field_varint(8, self.stream_kind),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> PullUpdatesRequest:
        """Decode a request body; an empty body is the all-default request (full bootstrap)."""
        req = cls()
        for num, wt, val in pb.iter_fields(data):
            if num == 1:
                pb.expect(wt, pb.VARINT, "encoding")
                req.encoding = int(val)  # type: ignore[arg-type]
            elif num == 2:
                pb.expect(wt, pb.LEN, "server_revision")
                req.server_revision = pb.decode_str(val, "server_revision")  # type: ignore[arg-type]
            elif num == 3:
                pb.expect(wt, pb.LEN, "client_revision")
                req.client_revision = pb.decode_str(val, "client_revision")  # type: ignore[arg-type]
            elif num == 4:
                pb.expect(wt, pb.VARINT, "long_poll_timeout_ms")
                req.long_poll_timeout_ms = int(val) & 0xFFFFFFFF  # type: ignore[arg-type]
            elif num == 5:
                pb.expect(wt, pb.LEN, "server_pages_selector")
                req.server_pages_selector = val  # type: ignore[assignment]
            elif num == 6:
                pb.expect(wt, pb.LEN, "client_pages")
                req.client_pages = val  # type: ignore[assignment]
            elif num == 7:
                pb.expect(wt, pb.LEN, "server_query_selector")
                req.server_query_selector = pb.decode_str(val, "server_query_selector")  # type: ignore[arg-type]
            elif num == 8:
                # An intermediate client sent a bool here; true == 1 == MVCC_LOGICAL_LOG either way.
                pb.expect(wt, pb.VARINT, "stream_kind")
                req.stream_kind = int(val)  # type: ignore[arg-type]
        return req


@dataclass
class ZstdEncoding:
    level: int = 0
    pages_dict: List[int] = field(default_factory=list)

    def encode(self) -> bytes:
        packed = b"".join(pb.encode_varint(p) for p in self.pages_dict)
        return pb.field_varint(1, self.level & 0xFFFFFFFF) + pb.field_bytes(2, packed)


@dataclass
class PullUpdatesResponseHeader:
    server_revision: str = ""
    db_size: int = 0  # in pages
    raw_encoding: bool = True  # presence of the (empty) PageSetRawEncoding message
    zstd_encoding: Optional[ZstdEncoding] = None
    stream_kind: int = STREAM_PAGES
    apply_mode: int = APPLY_INCREMENTAL
    mvcc_log: Optional[bytes] = None  # opaque here: pages-only implementation
    protocol: int = PROTOCOL_UNSPECIFIED

    def encode(self) -> bytes:
        parts = [pb.field_string(1, self.server_revision), pb.field_varint(2, self.db_size)]
        if self.raw_encoding:
            parts.append(pb.field_bytes(3, b"", always=True))  # `1a 00`: must be present
        if self.zstd_encoding is not None:
            parts.append(pb.field_bytes(4, self.zstd_encoding.encode(), always=True))
        parts.append(pb.field_varint(5, self.stream_kind))
        parts.append(pb.field_varint(6, self.apply_mode))
        if self.mvcc_log is not None:
            parts.append(pb.field_bytes(7, self.mvcc_log, always=True))
        parts.append(pb.field_varint(8, self.protocol))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> PullUpdatesResponseHeader:
        hdr = cls(raw_encoding=False)
        for num, wt, val in pb.iter_fields(data):
            if num == 1:
                pb.expect(wt, pb.LEN, "server_revision")
                hdr.server_revision = pb.decode_str(val, "server_revision")  # type: ignore[arg-type]
            elif num == 2:
                pb.expect(wt, pb.VARINT, "db_size")
                hdr.db_size = int(val)  # type: ignore[arg-type]
            elif num == 3:
                pb.expect(wt, pb.LEN, "raw_encoding")
                hdr.raw_encoding = True
            elif num == 4:
                pb.expect(wt, pb.LEN, "zstd_encoding")
                hdr.zstd_encoding = _decode_zstd(val)  # type: ignore[arg-type]
            elif num == 5:
                pb.expect(wt, pb.VARINT, "stream_kind")
                hdr.stream_kind = int(val)  # type: ignore[arg-type]
            elif num == 6:
                pb.expect(wt, pb.VARINT, "apply_mode")
                hdr.apply_mode = int(val)  # type: ignore[arg-type]
            elif num == 7:
                pb.expect(wt, pb.LEN, "mvcc_log")
                hdr.mvcc_log = val  # type: ignore[assignment]
            elif num == 8:
                pb.expect(wt, pb.VARINT, "protocol")
                hdr.protocol = int(val)  # type: ignore[arg-type]
        if hdr.raw_encoding and hdr.zstd_encoding is not None:
            raise DecodeError("pull-updates header has both raw and zstd encodings")
        return hdr


def _decode_zstd(data: bytes) -> ZstdEncoding:
    enc = ZstdEncoding()
    for num, wt, val in pb.iter_fields(data):
        if num == 1 and wt == pb.VARINT:
            enc.level = int(val)  # type: ignore[arg-type]
        elif num == 2 and wt == pb.VARINT:
            enc.pages_dict.append(int(val))  # type: ignore[arg-type]
        elif num == 2 and wt == pb.LEN:  # packed repeated
            pos = 0
            while pos < len(val):  # type: ignore[arg-type]
                item, pos = pb.decode_varint(val, pos)  # type: ignore[arg-type]
                enc.pages_dict.append(item)
    return enc


@dataclass
class PageData:
    page_id: int
    encoded_page: bytes

    def encode(self) -> bytes:
        return pb.field_varint(1, self.page_id) + pb.field_bytes(2, self.encoded_page)

    @classmethod
    def decode(cls, data: bytes) -> PageData:
        page_id = 0
        page = b""
        for num, wt, val in pb.iter_fields(data):
            if num == 1:
                pb.expect(wt, pb.VARINT, "page_id")
                page_id = int(val)  # type: ignore[arg-type]
            elif num == 2:
                pb.expect(wt, pb.LEN, "encoded_page")
                page = val  # type: ignore[assignment]
        return cls(page_id, page)


def frame(message: bytes) -> bytes:
    """Length-delimited framing: ``varint(len(message)) message``."""
    return pb.encode_varint(len(message)) + message


def encode_page_frame(page_id: int, page: bytes) -> bytes:
    """One framed PageData without building intermediate objects (server hot path)."""
    body = pb.field_varint(1, page_id) + pb.key(2, pb.LEN) + pb.encode_varint(len(page))
    return pb.encode_varint(len(body) + len(page)) + body + page


def encode_response(header: PullUpdatesResponseHeader, pages: Iterable[PageData]) -> bytes:
    """A whole response body: framed header, then framed pages (no padding)."""
    return frame(header.encode()) + b"".join(
        encode_page_frame(p.page_id, p.encoded_page) for p in pages
    )


@dataclass
class PageRun:
    """Consecutive page frames of a body, not copied out: page ``page_ids[i]`` (0-based)
    is ``buf[offsets[i]:offsets[i] + page_size]``. What the C fast path finds
    (``_native/frames.h``); a sink can store the run with one call."""

    buf: bytes
    page_ids: List[int]
    offsets: List[int]

    def page(self, i: int, page_size: int = PAGE_SIZE) -> bytes:
        off = self.offsets[i]
        return self.buf[off:off + page_size]


Message = Union[PullUpdatesResponseHeader, PageData]
RunMessage = Union[PullUpdatesResponseHeader, PageData, PageRun]


def _scanner(page_size: int) -> Optional[Callable[[bytes, int], Tuple[int, int, List[int], List[int]]]]:
    """The C scan of canonical page frames (``_native/frames.h``), or None without a build."""
    from .._native import ffi, lib

    if lib is None:
        return None

    def scan(data: bytes, start: int) -> Tuple[int, int, List[int], List[int]]:
        room = (len(data) - start) // page_size + 1
        ids = ffi.new("uint32_t[]", room)
        offs = ffi.new("uint32_t[]", room)
        used = ffi.new("size_t *")
        n = lib.tdb_scan_page_frames(ffi.from_buffer(data) + start, len(data) - start, page_size,
                                     ids, offs, room, used)
        return n, int(used[0]), ffi.unpack(ids, n), [start + o for o in ffi.unpack(offs, n)]

    return scan


class PullUpdatesStreamParser:
    """Incremental parser of a `/pull-updates` response body.

    Feed bytes as they arrive; each ``feed`` returns the messages completed so far (the
    header first, then ``PageData``); ``feed_runs`` returns runs of pages as ``PageRun``
    (found by C, one call per chunk) where ``feed`` would return one ``PageData`` each.
    ``finish()`` at EOF raises if the body was empty or stopped inside a message. Page
    checks mirror the Rust client: raw pages only, each exactly ``page_size`` bytes. A
    frame the C scan does not take (another field order, an error) goes through the
    general decoder, so both paths give the same pages and the same errors.
    """

    def __init__(self, page_size: int = PAGE_SIZE) -> None:
        self._buf = b""
        self._page_size = page_size
        self.header: Optional[PullUpdatesResponseHeader] = None
        self.pages_seen = 0
        self._scan = _scanner(page_size)

    def feed(self, chunk: bytes) -> List[Message]:
        out: List[Message] = []
        for msg in self.feed_runs(chunk):
            if isinstance(msg, PageRun):
                out.extend(PageData(pid, msg.page(i, self._page_size)) for i, pid in enumerate(msg.page_ids))
            else:
                out.append(msg)
        return out

    def feed_runs(self, chunk: bytes) -> List[RunMessage]:
        # One buffer per chunk: the chunk itself when nothing was left over (no copy).
        buf = self._buf + bytes(chunk) if self._buf else bytes(chunk)
        out: List[RunMessage] = []
        pos = 0
        fast = self._scan
        while pos < len(buf):
            hdr = self.header
            if fast is not None and hdr is not None and hdr.raw_encoding and hdr.zstd_encoding is None:
                n, used, ids, offs = fast(buf, pos)
                if n:
                    out.append(PageRun(buf, ids, offs))
                    self.pages_seen += n
                    pos += used
                    continue
            try:
                length, body_start = pb.decode_varint(buf, pos, MAX_PREFIX_VARINT)
            except DecodeError as exc:
                if str(exc) == pb.TRUNCATED:
                    break  # the prefix itself is still incomplete
                raise
            limit = MAX_HEADER_FRAME if self.header is None else self._page_size + _PAGE_FRAME_SLACK
            if length > limit:  # refused before buffering it: a hostile length costs nothing
                what = "header" if self.header is None else "page"
                raise DecodeError(f"{what} message of {length} bytes (at most {limit})")
            if body_start + length > len(buf):
                break
            out.append(self._message(buf[body_start : body_start + length]))
            pos = body_start + length
        self._buf = buf[pos:] if pos < len(buf) else b""
        return out

    def _message(self, data: bytes) -> Message:
        if self.header is None:
            header = PullUpdatesResponseHeader.decode(data)
            check_header(header)
            self.header = header
            return header
        hdr = self.header
        if hdr.zstd_encoding is not None:
            raise DecodeError("zstd encoding is not supported")
        if not hdr.raw_encoding:
            raise DecodeError("pull-updates header has no page encoding")
        page = PageData.decode(data)
        if page.page_id >= MAX_DB_PAGES:
            raise DecodeError(f"page_id {page.page_id} is past the largest SQLite page "
                              f"({MAX_DB_PAGES - 1}, 0-based)")
        if len(page.encoded_page) != self._page_size:
            raise DecodeError(
                f"page has unexpected size: {len(page.encoded_page)} (page_id {page.page_id})"
            )
        self.pages_seen += 1
        return page

    def finish(self) -> PullUpdatesResponseHeader:
        if self.header is None and not self._buf:
            raise DecodeError("no header returned in the pull-updates protobuf call")
        if self._buf or self.header is None:
            raise DecodeError(pb.TRUNCATED)
        return self.header


def check_header(header: PullUpdatesResponseHeader) -> None:
    """The header fields a client relies on, within what a SQLite database can be."""
    if header.db_size > MAX_DB_PAGES:
        raise DecodeError(f"db_size {header.db_size} pages is more than SQLite allows "
                          f"({MAX_DB_PAGES})")
    rev = header.server_revision
    if not rev:
        raise DecodeError("the header has no server_revision")
    if len(rev.encode()) > MAX_REVISION_BYTES:
        raise DecodeError(f"server_revision of {len(rev.encode())} bytes (at most {MAX_REVISION_BYTES})")


def parse_response(
    body: bytes, page_size: int = PAGE_SIZE
) -> Tuple[PullUpdatesResponseHeader, List[PageData]]:
    """Parse a complete body: ``(header, [PageData, ...])``."""
    parser = PullUpdatesStreamParser(page_size)
    msgs = parser.feed(body)
    header = parser.finish()
    return header, [m for m in msgs if isinstance(m, PageData)]
