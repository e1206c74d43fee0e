"""Statement metadata the stdlib ``sqlite3`` module does not expose: declared column types
(Hrana's ``decltype``) and the ``describe`` request (parameters, columns, read-only, EXPLAIN).

The facts come from ``sqlite3_prepare_v2`` on a connection of our own, opened with ctypes
in the very SQLite library the stdlib ``_sqlite3`` module links (``dlsym`` on its handle
searches its dependencies). The connection is read-only and only prepares statements, never
steps them, so it takes no locks. It sees committed schema only: a table created inside a
still-open transaction of a stream is unknown to it, and its columns get ``decltype`` null.

Without a usable library (a Python whose ``_sqlite3`` has SQLite built in and unexported),
``Describer.available`` is False: ``decltype`` is null and ``describe`` answers with an
error that says so.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import List, Optional, Tuple

_SQLITE_OK = 0
_OPEN_READONLY = 0x00000001
_OPEN_URI = 0x00000040
_OPEN_FULLMUTEX = 0x00010000


@dataclass
class Description:
    params: List[Optional[str]]  # None for an anonymous "?" parameter
    cols: List[Tuple[str, Optional[str]]]  # (name, decltype)
    is_explain: bool
    is_readonly: bool


class DescribeError(Exception):
    """SQLite could not prepare the statement (the message is SQLite's own)."""


def load_sqlite_library() -> Optional[ctypes.CDLL]:
    try:
        import _sqlite3
    except ImportError:
        return None
    path = getattr(_sqlite3, "__file__", None)
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY) if path else ctypes.CDLL(None)
        lib.sqlite3_prepare_v2  # noqa: B018 - probe: raises AttributeError when not exported
    except (OSError, AttributeError):
        return None
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    sigs = {
        "sqlite3_open_v2": (i, [cp, ctypes.POINTER(vp), i, cp]),
        "sqlite3_close_v2": (i, [vp]),
        "sqlite3_prepare_v2": (i, [vp, cp, i, ctypes.POINTER(vp), ctypes.POINTER(cp)]),
        "sqlite3_finalize": (i, [vp]),
        "sqlite3_errmsg": (cp, [vp]),
        "sqlite3_exec": (i, [vp, cp, vp, vp, vp]),
        "sqlite3_column_count": (i, [vp]),
        "sqlite3_column_name": (cp, [vp, i]),
        "sqlite3_column_decltype": (cp, [vp, i]),
        "sqlite3_bind_parameter_count": (i, [vp]),
        "sqlite3_bind_parameter_name": (cp, [vp, i]),
        "sqlite3_stmt_readonly": (i, [vp]),
        "sqlite3_stmt_isexplain": (i, [vp]),
    }
    try:
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
    except AttributeError:
        return None
    return lib


def _text(raw: Optional[bytes]) -> Optional[str]:
    return raw.decode("utf-8", "replace") if raw is not None else None


class Describer:
    """Prepares statements on a private read-only connection to the served database."""

    def __init__(self, db_path: str) -> None:
        self._lock = threading.Lock()
        self._db = ctypes.c_void_p()
        self._lib = load_sqlite_library()
        if self._lib is not None:
            rc = self._lib.sqlite3_open_v2(
                os.fsencode(db_path), ctypes.byref(self._db), _OPEN_READONLY | _OPEN_FULLMUTEX, None
            )
            if rc != _SQLITE_OK:
                self._lib.sqlite3_close_v2(self._db)
                self._lib = None

    @property
    def available(self) -> bool:
        return self._lib is not None

    def describe(self, sql: str) -> Description:
        if self._lib is None:
            raise DescribeError("describe is unavailable: this Python's SQLite library is not reachable")
        with self._lock:
            try:
                return self._describe(sql)
            except DescribeError:
                # The cached schema may predate a change by another connection: stepping any
                # statement re-checks the schema cookie, then one retry.
                self._lib.sqlite3_exec(self._db, b"SELECT 1 FROM sqlite_master LIMIT 0", None, None, None)
                return self._describe(sql)

    def decltypes(self, sql: str, ncols: int) -> List[Optional[str]]:
        """Declared types of the result columns, or all None when unknown."""
        if self._lib is None or ncols == 0:
            return [None] * ncols
        try:
            cols = self.describe(sql).cols
        except DescribeError:
            return [None] * ncols
        if len(cols) != ncols:
            return [None] * ncols
        return [decl for _, decl in cols]

    def _describe(self, sql: str) -> Description:
        lib = self._lib
        assert lib is not None
        stmt = ctypes.c_void_p()
        data = sql.encode("utf-8")
        rc = lib.sqlite3_prepare_v2(self._db, data, len(data), ctypes.byref(stmt), None)
        if rc != _SQLITE_OK:
            msg = _text(lib.sqlite3_errmsg(self._db)) or f"SQLite error {rc}"
            lib.sqlite3_finalize(stmt)
            raise DescribeError(msg)
        if not stmt.value:
            raise DescribeError("SQL string does not contain any statement")
        try:
            params = [
                _text(lib.sqlite3_bind_parameter_name(stmt, i))
                for i in range(1, lib.sqlite3_bind_parameter_count(stmt) + 1)
            ]
            cols = [
                (
                    _text(lib.sqlite3_column_name(stmt, i)) or "",
                    _text(lib.sqlite3_column_decltype(stmt, i)),
                )
                for i in range(lib.sqlite3_column_count(stmt))
            ]
            return Description(
                params=params,
                cols=cols,
                is_explain=bool(lib.sqlite3_stmt_isexplain(stmt)),
                is_readonly=bool(lib.sqlite3_stmt_readonly(stmt)),
            )
        finally:
            lib.sqlite3_finalize(stmt)

    def close(self) -> None:
        with self._lock:
            if self._lib is not None:
                self._lib.sqlite3_close_v2(self._db)
                self._lib = None
