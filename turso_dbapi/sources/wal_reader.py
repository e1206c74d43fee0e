"""Requests for a remote ``-wal`` (sources/live.py S2, S4, P1, C).

  (1) ``whole()``: one GET with ``Range: bytes=0-``; 404/403 (S3 answers 403 for a key
      that does not exist without list permission) means no WAL; 416 or an empty 200
      means an empty WAL; a short body is retried.
  (2) ``tail(wal)``: the header and everything after frame N in ONE request (a
      ``multipart/byteranges`` reply, or one part when the server merged them); a server
      that answers it with 200 or with parts that do not match makes every later tail two
      requests (header, tail). A WAL that is gone, empty or shorter than the header is
      None (another generation).
  (3) A 200 to a single-range request is a server that ignores ranges: an error naming
      it, never a silent whole-file read on every pull.
  (4) The bytes after frame N are asked as a 64 KiB window (``TAIL_WINDOW``); only when
      every whole frame in it is a valid frame of the generation is the rest asked (one
      more request): a restarted WAL's leftovers of older generations are not downloaded
      again and again.
  (5) Cacheable ranges, as for the database (``range_align``): every range asked is an
      aligned block of the WAL file in 4 KiB units, the same for every reader of it (a CDN
      or S3 cache keys a reply by its range). The header is the block ``bytes=0-4095``;
      the window starts at the 4 KiB boundary at or below frame N's end (up to 4 KiB of
      frames we have are read again) and is ``TAIL_WINDOW`` long, split into aligned
      blocks; the rest starts where the window ends (a 4 KiB boundary; open ended: the
      WAL grows). Cost: a pull with nothing new reads the header block and the
      known part of the window's first block (< 8 KiB) instead of 32 bytes. Without
      multi-range (S3) the window is the one 64 KiB block holding frame N's end (two
      requests, as before: the header's block, that block).
"""

from __future__ import annotations

from array import array
from typing import List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from .. import _reference as ref
from ..errors import RemoteError
from ..storage.wal_index import WalIndex, parse_header
from ..transport.http import HttpClient, Reply, TransientReplyError
from .range_align import aligned_blocks
from .range_reply import content_range, is_encoded, parse_byteranges

ABSENT = (403, 404)


def wal_url(url: str) -> str:
    """``<url>-wal``: the suffix goes on the path, before any query string."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + "-wal"))


TAIL_WINDOW = 64 * 1024  # (4) bytes after frame N read first: a WAL restarted by a checkpoint
# keeps its older frames as leftovers (SQLite overwrites, it does not truncate), which a
# pull or a read's confirmation would otherwise download every time
UNIT = 4096  # (5) the WAL's blocks are aligned in these units (range_align's smallest block)
HEADER_BLOCK = (0, UNIT - 1)  # (5) the header's block


def window_blocks(end: int) -> List[Tuple[int, int]]:
    """(5) The byte ranges (inclusive) of the window after ``end``: aligned blocks from the
    4 KiB boundary at or below ``end``, ``TAIL_WINDOW`` bytes in all."""
    first = end // UNIT  # 0-based unit
    return [((a - 1) * UNIT, b * UNIT - 1) for a, b in aligned_blocks(first + 1, first + TAIL_WINDOW // UNIT, UNIT)]


def _all_valid(wal: WalIndex, part: bytes) -> bool:
    """Are all whole frames of ``part`` valid frames continuing ``wal``'s chain?"""
    probe = WalIndex(wal.header, wal.raw_header)
    probe.cksum, probe.frames = wal.cksum, wal.frames
    probe.index = array("I", bytes(4))
    probe.extend(part, pages=False)
    return probe.last_stop == len(part) // wal.frame_size


class _NotAWal(Exception):
    def __init__(self, received: int):
        super().__init__(received)
        self.received = received


class _Refused(Exception):
    """The server answered a multi-range request with something else (then: two requests)."""


class WalReader:
    """The WAL requests of one ``LiveSource`` (through its database's HTTP client)."""

    def __init__(self, http: HttpClient, url: str, display_url: str):
        self.http = http
        self.url = url
        self.display_url = display_url
        self.multi_range = True  # (2) one request until a server refuses

    def whole(self) -> Tuple[int, bytes]:
        """S2: (status, the whole WAL); an absent WAL is (404 or 403, b""). A body that does
        not start with a WAL header SQLite would use (a server answering every path with
        some file) is abandoned after its first chunk: (1), no WAL."""
        buf = bytearray()

        def sink(chunk: Optional[bytes]) -> None:
            if chunk is None:
                del buf[:]  # a retry starts over
                return
            before = len(buf)
            buf.extend(chunk)
            if before < ref.WAL_HDR <= len(buf) and parse_header(buf) is None:
                raise _NotAWal(len(buf))

        def read_body(reply: Reply) -> bool:
            return reply.status in (200, 206) and not is_encoded(reply)

        def check(reply: Reply) -> Tuple[int, bytes]:
            if reply.status in ABSENT:
                return reply.status, b""
            if reply.status == 416:
                return 206, b""  # an empty WAL (after a TRUNCATE checkpoint)
            if is_encoded(reply):
                raise self._error(reply, "the server compressed it")
            if reply.status not in (200, 206):
                raise self.http.error(reply, f"cannot read {self.display_url}")
            body = bytes(buf)
            if reply.status == 206:
                first, last, total = content_range(reply)
                if first != 0 or len(body) != last - first + 1 or (total is not None and last != total - 1):
                    raise TransientReplyError(f"short WAL body: {len(body)} bytes")
            elif reply.headers.get("Content-Length") not in (None, str(len(body))):
                raise TransientReplyError(f"short WAL body: {len(body)} bytes")
            return reply.status, body

        # Range: bytes=0- asks the same as a plain GET (a 200 is accepted here).
        try:
            return self.http.request("GET", self.url, headers={"Range": "bytes=0-"}, read_body=read_body,
                                     check=check, what=f"cannot read {self.display_url}", sink=sink)
        except _NotAWal as exc:
            self.http.stats.add(received=exc.received)
            return 200, b""

    def tail(self, wal: WalIndex) -> Optional[Tuple[bytes, bytes]]:
        """(2): (the WAL's 32 header bytes, the bytes after frame N), or None when the WAL is
        gone or too short to hold a header. The bytes after frame N are read in a window
        first (4): when the window ends inside valid frames of this generation, the rest is
        read with a second request. Every range is an aligned block (5)."""
        end = wal.end_offset
        window = window_blocks(end)
        parts: Optional[list] = None
        if self.multi_range:
            try:
                parts = self._parts(([] if window[0][0] == 0 else [HEADER_BLOCK]) + window)
            except _Refused:
                self.multi_range = False
        if not self.multi_range:  # (5) the header's block, then the 64 KiB block holding ``end``
            block = end // TAIL_WINDOW * TAIL_WINDOW
            parts = self._parts([HEADER_BLOCK] if block else [(0, TAIL_WINDOW - 1)])
            if parts is not None and block:
                parts += self._parts([(block, block + TAIL_WINDOW - 1)]) or []
        got = _head_and_tail(parts, end) if parts is not None else None
        if got is None:
            return None
        head, part = got
        last = max(b[1] for b in window) if self.multi_range else end // TAIL_WINDOW * TAIL_WINDOW + TAIL_WINDOW - 1
        if end + len(part) <= last or not _all_valid(wal, part):
            return head, part  # the file ends, or the generation's frames end, in the window
        rest = self._parts([(last + 1, None)])
        tail = _head_and_tail(rest, end + len(part), want_head=False) if rest else None
        return head, part + (tail[1] if tail is not None else b"")

    def _parts(self, blocks: List[Tuple[int, Optional[int]]]) -> Optional[list]:
        """One request for ``blocks`` (byte ranges; ``None``: to the end of the file): the
        reply's parts, (first, last, total, bytes) each. None: the WAL is gone or empty, or
        ends before the first block."""
        spec = "bytes=" + ",".join(f"{a}-" if b is None else f"{a}-{b}" for a, b in blocks)
        multi = len(blocks) > 1

        def read_body(reply: Reply) -> bool:
            return reply.status == 206 and not is_encoded(reply)

        def check(reply: Reply) -> Optional[list]:
            if reply.status in ABSENT or reply.status == 416 or (
                    reply.status == 200 and reply.headers.get("Content-Length") == "0"):
                return None  # gone, empty, or shorter than the range asked: not our generation
            if is_encoded(reply):
                raise self._error(reply, "the server compressed it")
            if reply.status == 200:
                if multi:
                    raise _Refused()
                raise self._error(reply, "the server ignored the Range header")
            if reply.status != 206:
                raise self.http.error(reply, f"cannot read {self.display_url}")
            body = reply.body or b""
            ctype = reply.headers.get("Content-Type", "")
            parts = (parse_byteranges(body, ctype) if ctype.lower().lstrip().startswith("multipart/byteranges")
                     else [(*content_range(reply), body)])
            starts = {a for a, _b in blocks}
            for first, last, _total, data in parts:
                if len(data) != last - first + 1:
                    raise TransientReplyError("short WAL body")
                if first not in starts:  # a part starts where a block asked does (or merged ones)
                    raise _Refused() if multi else TransientReplyError("misplaced WAL range")
            return parts

        return self.http.request("GET", self.url, headers={"Range": spec}, read_body=read_body,
                                 check=check, what=f"cannot read {self.display_url}")

    def _error(self, reply: Reply, why: str) -> RemoteError:
        return RemoteError(f"cannot follow {self.display_url}: {why}", url=self.display_url,
                           status=reply.status)



def _head_and_tail(parts: list, end: int, want_head: bool = True) -> Optional[Tuple[bytes, bytes]]:
    """From a reply's parts: the 32 header bytes (None when wanted and missing) and the
    contiguous bytes from ``end`` on (b"" when no part holds ``end``: the file ends there)."""
    head = b""
    for first, _last, _total, data in parts:
        if first == 0:
            head = bytes(data[: ref.WAL_HDR])
    if want_head and len(head) < ref.WAL_HDR:
        return None
    chunks: List[bytes] = []
    cursor = end
    for first, last, _total, data in sorted(parts, key=lambda p: p[0]):
        if first <= cursor <= last:
            chunks.append(bytes(memoryview(data)[cursor - first:]))
            cursor = last + 1
    return head, b"".join(chunks)
