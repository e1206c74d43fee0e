"""The pages a query touches, for ``server_query_selector`` (spec §2.6, §6.3).

A query-bootstrapped replica asks for "the pages this query needs". We answer what SQLite
itself reads: the database as of the requested revision is written from the page log to a
private file (kept while that revision is the one asked for), the query runs there on a
fresh connection (so every page it needs is read once, none from a cache), and a tracing
VFS records the page numbers of the main file's reads. That is the schema pages plus the
b-tree path of a point lookup — a handful — or the whole table for a scan.

The tracing VFS is the default VFS with one method swapped: its ``xOpen`` gives the main
database file an ``sqlite3_io_methods`` copy whose ``xRead`` records ``offset / 4096``
before calling the real one. It is registered with ctypes into the SQLite the stdlib uses
(the library ``describe`` finds). The private copy is in rollback-journal mode with
memory-mapping off, so every page read goes through ``xRead`` of the main file. The query
runs read-only (``mode=ro`` + ``query_only``): it can read, never write.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
import tempfile
import threading
from typing import List, Optional, Set, Tuple

from ..protocol.sync_wire import PAGE_SIZE
from .describe import load_sqlite_library
from .page_log import PageLog

VFS_NAME = b"tdb-query-trace"
_OPEN_MAIN_DB = 0x00000100
_vp = ctypes.c_void_p

_XOPEN = ctypes.CFUNCTYPE(ctypes.c_int, _vp, ctypes.c_char_p, _vp, ctypes.c_int,
                          ctypes.POINTER(ctypes.c_int))
_XREAD = ctypes.CFUNCTYPE(ctypes.c_int, _vp, _vp, ctypes.c_int, ctypes.c_int64)


class _Vfs(ctypes.Structure):  # sqlite3_vfs, the fields up to xOpen (the rest is copied)
    _fields_ = [("iVersion", ctypes.c_int), ("szOsFile", ctypes.c_int),
                ("mxPathname", ctypes.c_int), ("pNext", _vp), ("zName", ctypes.c_char_p),
                ("pAppData", _vp), ("xOpen", _vp)]


class _IoMethods(ctypes.Structure):  # sqlite3_io_methods, the fields up to xRead
    _fields_ = [("iVersion", ctypes.c_int), ("xClose", _vp), ("xRead", _vp)]


class QueryTraceError(RuntimeError):
    """The query cannot be traced here (the message says why)."""


class _Tracer:
    """The registered VFS; ``pages`` collects page ids while ``active``."""

    def __init__(self) -> None:
        self.lib = load_sqlite_library()
        if self.lib is None:
            raise QueryTraceError("this Python's SQLite library is not reachable with ctypes")
        lib = self.lib
        lib.sqlite3_vfs_find.restype, lib.sqlite3_vfs_find.argtypes = _vp, [ctypes.c_char_p]
        lib.sqlite3_vfs_register.restype = ctypes.c_int
        lib.sqlite3_vfs_register.argtypes = [_vp, ctypes.c_int]
        base = lib.sqlite3_vfs_find(None)
        if not base:
            raise QueryTraceError("SQLite has no default VFS")
        self.base = ctypes.cast(base, ctypes.POINTER(_Vfs)).contents
        self.base_ptr = base
        self.pages: Set[int] = set()
        self.active = False
        self._methods: dict = {}  # real io_methods address -> (patched copy buffer, real xRead)
        # A byte copy of the default VFS (all of its methods), then our name and xOpen.
        size = 168  # sizeof(sqlite3_vfs) at iVersion 3, the largest layout
        self._buf = ctypes.create_string_buffer(ctypes.string_at(base, size), size)
        vfs = ctypes.cast(self._buf, ctypes.POINTER(_Vfs)).contents
        self._name = ctypes.create_string_buffer(VFS_NAME)
        vfs.zName = ctypes.cast(self._name, ctypes.c_char_p)
        vfs.pNext = None
        self._base_open = ctypes.cast(self.base.xOpen, _XOPEN)
        self._xopen = _XOPEN(self._open)
        self._xread = _XREAD(self._read)
        vfs.xOpen = ctypes.cast(self._xopen, _vp)
        self._real_read = {}
        rc = lib.sqlite3_vfs_register(ctypes.addressof(self._buf), 0)
        if rc != 0:
            raise QueryTraceError(f"sqlite3_vfs_register failed ({rc})")

    def _open(self, _vfs, name, file, flags, out_flags) -> int:
        rc = self._base_open(self.base_ptr, name, file, flags, out_flags)
        if rc == 0 and flags & _OPEN_MAIN_DB:
            methods_ptr = ctypes.cast(file, ctypes.POINTER(_vp))  # first field: pMethods
            real = methods_ptr[0]
            if real:
                if real not in self._methods:
                    copy = ctypes.create_string_buffer(ctypes.string_at(real, 8 * 19), 8 * 19)
                    io = ctypes.cast(copy, ctypes.POINTER(_IoMethods)).contents
                    self._real_read[ctypes.addressof(copy)] = ctypes.cast(io.xRead, _XREAD)
                    io.xRead = ctypes.cast(self._xread, _vp)
                    self._methods[real] = copy
                methods_ptr[0] = ctypes.addressof(self._methods[real])
        return rc

    def _read(self, file, buf, amount, offset) -> int:
        if self.active:
            first, last = offset // PAGE_SIZE, (offset + max(amount, 1) - 1) // PAGE_SIZE
            self.pages.update(range(first, last + 1))
        methods = ctypes.cast(file, ctypes.POINTER(_vp))[0]
        return self._real_read[methods](file, buf, amount, offset)


_tracer: Optional[_Tracer] = None
_tracer_lock = threading.Lock()


def _get_tracer() -> _Tracer:
    global _tracer
    if _tracer is None:
        _tracer = _Tracer()
    return _tracer


class QueryPages:
    """``pages(sql, rev)``: sorted page ids (0-based) the query reads at revision ``rev``."""

    def __init__(self, log: PageLog) -> None:
        self.log = log
        self._dir = tempfile.TemporaryDirectory(prefix="tdb-query-pages-")
        self._copy: Optional[Tuple[int, str]] = None  # (revision, path)

    def _materialize(self, rev: int) -> str:
        if self._copy is not None and self._copy[0] == rev:
            return self._copy[1]
        path = os.path.join(self._dir.name, f"rev{rev}.db")
        size = self.log.db_size_at(rev)
        _, plan = self.log.plan(0, rev, [(0, size)])
        with open(path, "wb") as f:
            for _, page in self.log.read(plan):
                f.write(page)
        with open(path, "r+b") as f:  # rollback-journal mode: every read is of the main file
            f.seek(18)
            f.write(b"\x01\x01")
        if self._copy is not None:
            os.remove(self._copy[1])
        self._copy = (rev, path)
        return path

    def pages(self, sql: str, rev: int) -> List[int]:
        with _tracer_lock:
            tracer = _get_tracer()
            path = self._materialize(rev)
            uri = f"file:{path}?mode=ro&vfs={VFS_NAME.decode()}"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA mmap_size=0")
                conn.execute("PRAGMA query_only=1")
                tracer.pages = set()
                tracer.active = True
                try:
                    cur = conn.execute(sql)
                    while cur.fetchmany(256):
                        pass
                except sqlite3.Error as exc:
                    raise QueryTraceError(f"the bootstrap query failed: {exc}") from None
                finally:
                    tracer.active = False
            finally:
                conn.close()
            size = self.log.db_size_at(rev)
            return sorted(p for p in tracer.pages | {0} if p < size) if size else []

    def close(self) -> None:
        self._dir.cleanup()


def as_ranges(pages: List[int]) -> List[Tuple[int, int]]:
    """Sorted page ids as half-open ranges (a page selector)."""
    out: List[Tuple[int, int]] = []
    for p in pages:
        if out and out[-1][1] == p:
            out[-1] = (out[-1][0], p + 1)
        else:
            out.append((p, p + 1))
    return out
