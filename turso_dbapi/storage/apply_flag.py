"""The shared "an apply may be half done" flag of a replica, and the recovery it triggers.

The flag is a word in the page store's sidecar header (``<replica>-tdbmap``, offset 64,
pagestore.c rule (13)), mapped by every process that opens the replica. A puller sets it
(under SQLite's EXCLUSIVE lock) before it switches the synced layer and clears it when the
switch is complete. The VFS reads it when a connection takes its SHARED lock, i.e. at the
start of every read transaction, in C (vfs.c rule (13)): no Python call per statement.
Only when it is set does C call ``tdb_py_applying`` (``storage.callbacks``), which runs
``on_flag_set``: the recovery registered for that replica (``register_recovery``, done by
a Turso replica when it opens: ``sync.replica.recover_dead_apply``) finishes a dead puller's
apply, or answers "busy" while a live puller still holds the pull lock (SQLite's busy
handler then retries).

The flag is a hint for speed: the authority is ``pending_pull`` in the sync metadata.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Callable, Dict, Iterator

# tdb_py_applying answers (pagestore.h); BUSY = 0 is also what C gets with no Python here.
BUSY = 0
RECOVERED = 1
PROCEED = 2
FAILED = 3

Recovery = Callable[[Any, int], int]  # (store, conn_id) -> one of the answers above
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


def on_flag_set(store: Any, conn_id: int) -> int:
    """What C's ``tdb_py_applying`` answers for a connection of ``store``."""
    if getattr(_tls, "applying", False):
        return PROCEED
    recovery = _recoveries.get(store.path)
    if recovery is None:
        return BUSY  # no recovery known here: wait (never read a half-applied state)
    return recovery(store, conn_id)


class ApplyFlag:
    """The flag of the replica whose open ``PageStore`` is ``store``."""

    def __init__(self, store: Any):
        self._store = store

    def is_set(self) -> bool:
        return self._store.apply_flag()

    def set(self) -> None:
        self._store.set_apply_flag(True)

    def clear(self) -> None:
        self._store.set_apply_flag(False)

    def close(self) -> None:
        self._store = None
