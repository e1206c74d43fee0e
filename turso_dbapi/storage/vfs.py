"""Register the ``turso_dbapi`` VFS into the SQLite library the stdlib ``sqlite3`` uses.

The VFS is C (``_native/vfs.c``); this module only puts it into the right library
instance (DESIGN.md 2.2, measured):

* Route A — ``dlopen(_sqlite3.__file__, RTLD_NOLOAD)`` and ``dlsym`` of
  ``sqlite3_vfs_find`` / ``sqlite3_vfs_register`` on that handle (a module handle
  searches its dependencies, so this finds the copy ``_sqlite3`` links). Works on
  Debian and pyenv builds. A built-in ``_sqlite3`` (no ``__file__``) tries the
  process's global symbols instead.
* Route B — ``load_extension()`` of our own cffi module; its exported entry point
  ``sqlite3_tdbnative_init`` registers through the ``sqlite3_api_routines`` table.
  This is what works where SQLite's symbols are hidden (python-build-standalone).

Each route is confirmed by a probe connection (``file:...?vfs=turso_dbapi``). When
neither works, ``ensure_registered()`` raises ``NotSupportedError`` naming the fix;
local databases never need the VFS.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
import threading
from typing import List, Optional
from urllib.parse import quote

from ..errors import NotSupportedError

VFS_NAME = "turso_dbapi"
# Set to "A" or "B" to force one route (tests); anything else tries A then B.
ROUTE_ENV = "TURSO_DBAPI_VFS_ROUTE"
# What txn.c needs of SQLite on route A (route B reads the same from the api routines table).
TXN_SYMBOLS = ("auto_extension", "create_module", "declare_vtab", "vtab_config", "file_control",
               "result_int64", "result_null")



def replica_uri(path: str, conn_id: int, *, nowal: bool = False, readonly: bool = False) -> str:
    """The URI SQLite opens a replica by: this VFS, and the connection whose miss handler
    fetches its absent pages (``PageStore.attach``). ``nowal``: PRAGMA journal_mode=WAL
    answers the mode in effect instead of switching (vfs.c rule (16)). ``readonly``:
    SQLite's own mode=ro, so a write fails as on any read-only database, and readonly_shm=1:
    a WAL replica's -shm is mapped read-only, never initialised by this connection (vfs.c
    rule (23): a replica keeps its -wal and -shm, so a read-only open creates nothing)."""
    return (f"file:{quote(path)}?vfs={VFS_NAME}&tdbconn={conn_id}" + ("&tdbnowal=1" if nowal else "")
            + ("&mode=ro&readonly_shm=1" if readonly else ""))


_lock = threading.Lock()
_route: Optional[str] = None
_failures: List[str] = []


def _native():
    from .._native import ffi, import_error, lib

    if lib is None:
        raise NotSupportedError(
            f"turso_dbapi's native core is not built ({import_error}); "
            "reinstall with a C compiler available: pip install --force-reinstall turso_dbapi"
        )
    return ffi, lib


def probe() -> bool:
    """True when SQLite in this process knows our VFS and every new connection has the
    capture's ``sqlite_tdb_txn`` table (opens a throwaway connection)."""
    try:
        con = sqlite3.connect(f"file:tdb-probe?mode=memory&vfs={VFS_NAME}", uri=True)
    except sqlite3.OperationalError:
        return False
    try:
        con.execute("SELECT id FROM sqlite_tdb_txn")
    except sqlite3.OperationalError:  # no such table: the auto extension is missing
        return False
    finally:
        con.close()
    return True


def _register_route_a() -> str:
    _, lib = _native()
    import _sqlite3

    path = getattr(_sqlite3, "__file__", None)
    if path:
        # RTLD_NOLOAD: only a handle to the copy already loaded, never a second copy.
        handle = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    else:
        handle = ctypes.CDLL(None)  # built-in _sqlite3: the global namespace
    try:
        find = ctypes.cast(handle.sqlite3_vfs_find, ctypes.c_void_p).value
        register = ctypes.cast(handle.sqlite3_vfs_register, ctypes.c_void_p).value
    except AttributeError as exc:
        return f"route A: SQLite symbols not visible from {path or 'the process'} ({exc})"
    rc = lib.tdb_vfs_register(ctypes_to_cffi(find), ctypes_to_cffi(register))
    if rc != lib.TDB_VFS_OK:
        return f"route A: tdb_vfs_register returned {rc}"
    try:  # the capture's transaction ids (txn.c): the sqlite_tdb_txn table on every connection
        addrs = [ctypes_to_cffi(ctypes.cast(getattr(handle, f"sqlite3_{n}"), ctypes.c_void_p).value)
                 for n in TXN_SYMBOLS]
    except AttributeError as exc:
        return f"route A: SQLite symbols not visible from {path or 'the process'} ({exc})"
    ffi, _ = _native()
    rc = lib.tdb_txn_setup(ffi.new("void *[]", addrs), len(addrs))
    if rc != lib.TDB_TXN_OK:
        return f"route A: sqlite3_auto_extension refused the capture function ({rc})"
    return ""


def ctypes_to_cffi(address: Optional[int]):
    ffi, _ = _native()
    return ffi.cast("void *", address or 0)


def native_library_path() -> str:
    """Path of the compiled module (the file route B hands to load_extension)."""
    from .._native import _tdb_native

    return _tdb_native.__file__


def _register_route_b() -> str:
    _native()
    con = sqlite3.connect(":memory:")
    try:
        if not hasattr(con, "enable_load_extension"):
            return (
                "route B: this Python's sqlite3 was built without load_extension "
                "(--enable-loadable-sqlite-extensions)"
            )
        con.enable_load_extension(True)
        try:
            con.load_extension(native_library_path())
        except sqlite3.Error as exc:
            return f"route B: load_extension failed: {exc}"
        finally:
            con.enable_load_extension(False)
    finally:
        con.close()
    return ""


def ensure_registered() -> str:
    """Register the VFS (once per process); returns the route used, "A" or "B".

    Raises NotSupportedError when no route works.
    """
    global _route
    if _route is not None:
        return _route
    with _lock:
        if _route is not None:
            return _route
        forced = os.environ.get(ROUTE_ENV, "").strip().upper()
        routes = [forced] if forced in ("A", "B") else ["A", "B"]
        _failures.clear()
        for name in routes:
            try:
                problem = (_register_route_a if name == "A" else _register_route_b)()
            except OSError as exc:  # dlopen/dlsym failures surface as OSError
                problem = f"route {name}: {exc}"
            if not problem and probe():
                _route = name
                return name
            _failures.append(problem or f"route {name}: registered, but the probe connection failed")
        raise NotSupportedError(
            "cannot register the turso_dbapi VFS into the SQLite used by Python's sqlite3 "
            f"({'; '.join(_failures)}). Remote databases need either a Python whose _sqlite3 "
            "exports SQLite's symbols (Debian, pyenv, python.org builds) or one with "
            "load_extension support; local databases work regardless."
        )


def registered_route() -> Optional[str]:
    return _route
