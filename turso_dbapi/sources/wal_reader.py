"""Requests for a remote ``-wal`` (sources/live.py S2, S4, P1, C).

  (1) ``whole()``: one GET with ``Range: bytes=0-``; 404/403 (S3 answers 403 for a key
      that does not exist without list permission) means no WAL; 416 or an empty 200
      means an empty WAL; a short body is retried.
  (2) ``tail(wal)``: the 32 header bytes and everything after frame N in ONE request,
      ``Range: bytes=0-31,<end>-`` (a ``multipart/byteranges`` reply, or one part when
      the server merged them); a server that answers it with 200 or with parts that do
      not match makes every later tail two requests (header, tail). A WAL that is gone,
      empty or shorter than the header is None (another generation).
  (3) A 200 to a single-range request is a server that ignores ranges: an error naming
      it, never a silent whole-file read on every pull.
  (4) The bytes after frame N are asked as a 64 KiB window (``TAIL_WINDOW``); only when
      every whole frame in it is a valid frame of the generation is the rest asked (one
      more request): a restarted WAL's leftovers of older generations are not downloaded
      again and again.
"""

from __future__ import annotations

from array import array
from typing import Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from .. import _reference as ref
from ..errors import RemoteError
from ..storage.wal_index import WalIndex, parse_header
from ..transport.http import HttpClient, Reply, TransientReplyError
from .range_reply import content_range, is_encoded, parse_byteranges

ABSENT = (403, 404)


def wal_url(url: str) -> str:
    """``<url>-wal``: the suffix goes on the path, before any query string."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path + "-wal"))


TAIL_WINDOW = 64 * 1024  # (4) bytes after frame N read first: a WAL restarted by a checkpoint
# keeps its older frames as leftovers (SQLite overwrites, it does not truncate), which a
# pull or a read's confirmation would otherwise download every time


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
        read with a second request."""
        end = wal.end_offset
        window = f"{end}-{end + TAIL_WINDOW - 1}"
        got: Optional[Tuple[bytes, bytes]] = None
        if self.multi_range:
            try:
                got = self._ranges(f"bytes=0-{ref.WAL_HDR - 1},{window}", end)
            except _Refused:
                self.multi_range = False
        if not self.multi_range:
            head = self._ranges(f"bytes=0-{ref.WAL_HDR - 1}", end)
            if head is None:
                return None
            part = self._ranges(f"bytes={window}", end)
            got = head[0], (part[1] if part is not None else b"")
        if got is None:
            return None
        head, part = got
        if len(part) < TAIL_WINDOW or not _all_valid(wal, part):
            return head, part  # the file ends, or the generation's frames end, in the window
        rest = self._ranges(f"bytes={end + TAIL_WINDOW}-", end + TAIL_WINDOW)
        return head, part + (rest[1] if rest is not None else b"")

    def _ranges(self, spec: str, end: int) -> Optional[Tuple[bytes, bytes]]:
        def read_body(reply: Reply) -> bool:
            return reply.status == 206 and not is_encoded(reply)

        def check(reply: Reply) -> Optional[Tuple[bytes, bytes]]:
            if reply.status in ABSENT or reply.status == 416 or (
                    reply.status == 200 and reply.headers.get("Content-Length") == "0"):
                return None  # gone, empty, or shorter than the range asked: not our generation
            if is_encoded(reply):
                raise self._error(reply, "the server compressed it")
            if reply.status == 200:
                if "," in spec:
                    raise _Refused()
                raise self._error(reply, "the server ignored the Range header")
            if reply.status != 206:
                raise self.http.error(reply, f"cannot read {self.display_url}")
            body = reply.body or b""
            ctype = reply.headers.get("Content-Type", "")
            parts = (parse_byteranges(body, ctype) if ctype.lower().lstrip().startswith("multipart/byteranges")
                     else [(*content_range(reply), body)])
            head = b""
            tail = b""
            for first, last, _total, data in parts:
                if len(data) != last - first + 1:
                    raise TransientReplyError("short WAL body")
                if first == 0:
                    head = bytes(data[: ref.WAL_HDR])
                    if last >= end:  # the server merged both ranges into one part
                        tail = bytes(data[end:])
                elif first == end:
                    tail = bytes(data)
                else:
                    raise _Refused() if "," in spec else TransientReplyError("misplaced WAL range")
            if spec.startswith(f"bytes={end}-"):
                return b"", tail
            if len(head) < ref.WAL_HDR:
                return None
            return head, tail

        return self.http.request("GET", self.url, headers={"Range": spec}, read_body=read_body,
                                     check=check, what=f"cannot read {self.display_url}")

    def _error(self, reply: Reply, why: str) -> RemoteError:
        return RemoteError(f"cannot follow {self.display_url}: {why}", url=self.display_url,
                           status=reply.status)

