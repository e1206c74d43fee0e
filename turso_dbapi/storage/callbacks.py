"""The two Python functions C calls, installed explicitly when a replica's store opens.

C calls Python on two occasions only (a hit never does: STYLE habit 7):

* ``tdb_py_miss(store, conn_id, pgno, n_pages)``: SQLite read a run of absent pages; the
  store routes it to the miss handler of that connection (``PageStore.on_miss``).
* ``tdb_py_applying(store, conn_id)``: a connection taking its SHARED lock found the apply
  flag set (vfs.c rule (13)); ``apply_flag.on_flag_set`` answers.

``install()`` defines both (cffi ``def_extern``) once per process. ``PageStore`` calls it
when it opens a replica's store, before C can hold the store's handle: nothing is installed
as a side effect of importing a module.

Errors never cross into C: the exception is kept per thread (``keep_error``) and C's
failure code goes to SQLite; the execute family of a remote connection takes the kept
exception (``take_error``) to raise the real cause instead of "disk I/O error".
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from . import apply_flag

_tls = threading.local()
_installed = False
_install_lock = threading.Lock()


def take_error() -> Optional[BaseException]:
    """The exception of the last failed callback on this thread (and forget it)."""
    exc = getattr(_tls, "error", None)
    _tls.error = None
    return exc


def keep_error(exc: BaseException) -> None:
    """Keep ``exc`` for ``take_error`` (the callback then returns its failure code to C)."""
    _tls.error = exc


def install(ffi: Any) -> None:
    """Define the callbacks C calls (idempotent)."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return

        @ffi.def_extern()
        def tdb_py_miss(py_handle, conn_id, pgno, n_pages):  # noqa: ANN001 - cffi signature
            try:
                store = ffi.from_handle(py_handle)
                return store.on_miss(int(conn_id), int(pgno), int(n_pages))
            except BaseException as exc:  # pragma: no cover - on_miss catches its own
                keep_error(exc)
                return 1

        @ffi.def_extern()
        def tdb_py_applying(py_handle, conn_id):  # noqa: ANN001 - cffi signature
            try:
                return apply_flag.on_flag_set(ffi.from_handle(py_handle), int(conn_id))
            except BaseException as exc:  # never let an exception cross into C
                keep_error(exc)
                return apply_flag.FAILED

        _installed = True
