"""Every file of a replica, by suffix: the one place that names them.

A replica at path ``P`` (the file SQLite opens) is:

=====================  =========================================================  ============
suffix                 what                                                        kind
=====================  =========================================================  ============
``""``                 synced layer: pages as the remote has them (sparse)         every replica
``-tdblocal``          local layer: pages written locally                          every replica
``-tdbmap``            sidecar: presence bits, CRCs, apply flag (pagestore.c)      every replica
``-tdbmeta.json``      what the cache holds: URL, version, page size, identity     every replica
``-tdbwalsync``        a WAL replica's pulled frames (``storage.wal_writer``)      Turso, WAL
``-tdbsync.json``      sync metadata of a Turso replica (``sync.metadata``)        Turso
``-tdbsync.lock``      bootstrap/open lock (flock)                                 Turso
``-pull-tdbsync.lock`` pull lock (flock; the lock of the path ``P-pull``)          Turso
``-tdbpull``           a pull's staged pages (``sync.stage``; ``.tmp`` while written)  Turso
``-tdbreplay``         a pull's local changes to replay (``sync.rebase``)          Turso
``-tdbside`` ...       a WAL pull's scratch view (a store: ``-tdbside-tdbmap``...)  Turso, WAL
``-tdbpush.json``      push statistics (``sync.push``)                             Turso
``-push-tdbsync.lock`` push lock (flock; one push of a replica at a time)          Turso
``-journal`` ...       SQLite's own (``-journal``, ``-wal``, ``-shm``)             any
=====================  =========================================================  ============

The C side uses three of these literally (``pagestore.c`` derives ``-tdblocal`` and
``-tdbmap``; ``vfs.c`` looks for ``-tdbmap``, rule (12); ``wal_index.c`` reads
``-tdbwalsync``); ``tests/storage/test_files.py``
checks that every ``-tdb...`` literal in the C sources is one of the names here.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

LOCAL = "-tdblocal"
SIDECAR = "-tdbmap"
CACHE_META = "-tdbmeta.json"
WAL_SYNCED = "-tdbwalsync"
SYNC_META = "-tdbsync.json"
LOCK = "-tdbsync.lock"
PULL_LOCK = "-pull" + LOCK
STAGE = "-tdbpull"
REPLAY = "-tdbreplay"
SIDE = "-tdbside"  # a store of its own (sync.side_replay): SIDE + each of STORE_SUFFIXES
PUSH_STATE = "-tdbpush.json"
PUSH_LOCK = "-push" + LOCK
SQLITE_SUFFIXES = ("-journal", "-wal", "-shm")

# What a replica's store consists of; a fresh cache (or a bootstrap) starts without them.
STORE_SUFFIXES = ("", LOCAL, SIDECAR, CACHE_META) + SQLITE_SUFFIXES + (WAL_SYNCED,)
SIDE_SUFFIXES = tuple(SIDE + s for s in STORE_SUFFIXES)
ALL_SUFFIXES = STORE_SUFFIXES + (SYNC_META, LOCK, PULL_LOCK, STAGE, STAGE + ".tmp", REPLAY, PUSH_STATE,
                                 PUSH_LOCK) + SIDE_SUFFIXES


def remove_store_files(path: str) -> None:
    """Remove the files of a replica's store and of a pull's scratch view (not its sync
    metadata, locks or stage)."""
    for suffix in STORE_SUFFIXES + SIDE_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def replica_kind(database: Any) -> str | None:
    """What a local path is, when it is a replica this driver made: "turso" (sync metadata
    beside it, or a Turso store without it) or "range" (an HTTP-range cache: its file is
    sparse). None otherwise."""
    if database in (None, "", ":memory:") or not isinstance(database, (str, bytes, os.PathLike)):
        return None
    try:
        base = os.fsdecode(database)
        if os.path.exists(base + SYNC_META):
            return "turso"
        if os.path.exists(base + SIDECAR) or os.path.exists(base + CACHE_META):
            # A Turso replica that lost its sync metadata still reopens as one (which
            # reports the loss), never as a range cache.
            return "turso" if store_version(base).startswith("turso-sync:") else "range"
    except (TypeError, ValueError):
        pass
    return None


def store_version(base: str) -> str:
    """The version a replica's store records in ``-tdbmeta.json`` ("" when unknown); a
    Turso replica's starts with "turso-sync:"."""
    try:
        with open(base + CACHE_META, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return ""
    return str(data.get("version", "")) if isinstance(data, dict) else ""
