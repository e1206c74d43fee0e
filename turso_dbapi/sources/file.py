"""``FileSource``: a ``PageSource`` over a local SQLite file.

Serves the pages of a file on disk the way a remote would, counting every ``open()``
and ``fetch()`` call as one request. Useful to exercise the lazy page store without a
server (tests, benchmarks of the hit path), and to users who want a lazily filled,
separately writable copy of a large local file.

The version is pinned at ``open()`` (size + mtime_ns + inode); a later ``fetch()``
that finds the file changed raises ``RemoteChangedError``, like the HTTP source.
``fail_with`` makes every later ``fetch()`` raise that exception (fault injection).
"""

from __future__ import annotations

import os
import threading
from typing import Dict, Optional, Sequence

from ..errors import DatabaseError, RemoteChangedError
from ..transport.stats import SourceStats

SQLITE_MAGIC = b"SQLite format 3\x00"


def _identity(st: os.stat_result) -> str:
    return f"size={st.st_size};mtime_ns={st.st_mtime_ns};ino={st.st_ino}"


class FileSource:
    """Pages of a local SQLite file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, open_bytes: int = 4096):
        self.path = os.fspath(path)
        self.display_url = "file://" + os.path.abspath(self.path)
        self.open_bytes = max(100, int(open_bytes))
        self.page_size = 0
        self.size = 0
        self.version = ""
        self.stats = SourceStats()
        self.fail_with: Optional[BaseException] = None
        self.fetch_log: list = []  # one list of pgnos per fetch() call, in order
        self._lock = threading.Lock()

    def open(self) -> bytes:
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(self.open_bytes)
        self.stats.add(requests=1, received=len(head))
        if st.st_size == 0:
            self.page_size, self.size, self.version = 4096, 0, _identity(st)
            return head
        if len(head) < 100 or head[:16] != SQLITE_MAGIC:
            raise DatabaseError(f"file is not a database: {self.display_url}")
        raw = int.from_bytes(head[16:18], "big")
        self.page_size = 65536 if raw == 1 else raw
        self.size = st.st_size
        self.version = _identity(st)
        return head

    def fetch(self, pgnos: Sequence[int]) -> Dict[int, bytes]:
        if not self.page_size:
            raise RuntimeError("FileSource.fetch() before open()")
        with self._lock:
            self.fetch_log.append(sorted(pgnos))
        if self.fail_with is not None:
            self.stats.add(requests=1)
            raise self.fail_with
        ps = self.page_size
        n_pages = -(-self.size // ps)
        out: Dict[int, bytes] = {}
        with open(self.path, "rb") as f:
            if _identity(os.fstat(f.fileno())) != self.version:
                self.stats.add(requests=1)
                raise RemoteChangedError(
                    f"{self.display_url} changed since it was opened; reopen to read the new version",
                    url=self.display_url,
                )
            for p in sorted(set(pgnos)):
                if 1 <= p <= n_pages:
                    f.seek((p - 1) * ps)
                    out[p] = f.read(ps).ljust(ps, b"\x00")
        self.stats.add(requests=1, received=len(out) * ps, pages=len(out))
        return out

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<FileSource {self.display_url} version={self.version or '-'}>"
