"""The shared "an apply may be half done" flag of a replica, and the recovery it triggers.

The flag is a word in the page store's sidecar header (``<replica>-tdbmap``, offset 64,
pagestore.c rule (13)), mapped by every process that opens the replica. A puller sets it
(under SQLite's EXCLUSIVE lock) before it switches the synced layer and clears it when the
switch is complete. The VFS reads it when a connection takes its SHARED lock, i.e. at the
start of every read transaction, in C (vfs.c rule (13)): no Python call per statement.
Only when it is set does C call ``tdb_py_applying`` (defined here), which runs the
recovery registered for that replica (``register_recovery``; Turso replicas register
``turso_replica.recover_dead_apply``): finish a dead puller's apply, or answer "busy" while
a live puller still holds the pull lock (SQLite's busy handler then retries).

The flag is a hint for speed: the authority is ``pending_pull`` in the sync metadata.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Dict, Iterator

from . import pagestore

# tdb_py_applying answers (pagestore.h); BUSY = 0 is also what C gets with no Python here.
BUSY = 0
RECOVERED = 1
PROCEED = 2
FAILED = 3

Recovery = Callable[[pagestore.PageStore, int], int]
_recoveries: Dict[str, Recovery] = {}
_tls = threading.local()


def register_recovery(path: str, recovery: Recovery) -> None:
    """``recovery(store, conn_id)`` finishes a dead puller's apply on the replica ``path``."""
    _recoveries[os.path.realpath(path)] = recovery


@contextlib.contextmanager
def applying() -> Iterator[None]:
    """This thread is the one applying: its own connections take their locks even though
    the flag is set (they are the apply's internal connection)."""
    outer = getattr(_tls, "applying", False)
    _tls.applying = True
    try:
        yield
    finally:
        _tls.applying = outer


def _store_of(replica: str) -> pagestore.PageStore:
    path = os.path.realpath(replica)
    with pagestore._stores_lock:
        store = pagestore._stores.get(path)
    if store is None or store.closed:
        raise RuntimeError(f"no page store is open for {replica}")  # an apply always has one
    return store


class ApplyFlag:
    """The flag of the replica ``replica`` (its store must be open in this process)."""

    def __init__(self, replica: str):
        self._store = _store_of(replica)

    def is_set(self) -> bool:
        from .._native import lib

        return bool(lib.tdb_store_applying(self._store._p))

    def _write(self, on: bool) -> None:
        from .._native import lib

        if lib.tdb_store_set_applying(self._store._p, int(on)) != 0:
            raise OSError(f"msync of the apply flag of {self._store.path} failed")

    def set(self) -> None:
        self._write(True)

    def clear(self) -> None:
        self._write(False)

    def close(self) -> None:
        self._store = None  # type: ignore[assignment]


def _install_callback() -> None:
    ffi, lib = pagestore._lib()

    @ffi.def_extern()
    def tdb_py_applying(py_handle, conn_id):  # noqa: ANN001 - cffi signature
        try:
            if getattr(_tls, "applying", False):
                return PROCEED
            store = ffi.from_handle(py_handle)
            recovery = _recoveries.get(store.path)
            if recovery is None:
                return BUSY  # no recovery known here: wait (never read a half-applied state)
            return recovery(store, int(conn_id))
        except BaseException as exc:  # never let an exception cross into C
            pagestore._keep_error(exc)
            return FAILED


_install_callback()
