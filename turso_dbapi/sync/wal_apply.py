"""Applying a pulled revision to a replica in WAL mode (``PRAGMA journal_mode=WAL``).

In WAL mode SQLite keeps every connection of every process coherent through the WAL and the
wal-index, so the apply commits the way SQLite's own writer does, and never touches the
database file (whose pages old snapshots may still read):

1. (network done) the received pages sit in ``<replica>-tdbpull`` (``sync.stage``);
2. the internal connection takes ``BEGIN IMMEDIATE``: the WAL write lock. Readers are not
   waited for and keep reading their snapshot; other writers wait (busy handler);
3. the local changes go to the replay file (extracted just before the lock, used if nothing
   committed since, else extracted again: ``rebase.prepare``) and metadata records
   ``pending_pull`` (as in rollback mode: from here a crash redoes 4-7, idempotently);
4. the apply flag is set: from now on a NEW read transaction of another connection is
   refused at its read-mark lock (vfs.c rule (19): SQLITE_BUSY, SQLite's WAL retry loop
   waits) until step 7, so nobody sees the revision without the replayed changes; open
   read transactions are untouched;
5. ONE commit is planned against the wal-index state read under the lock
   (``storage.wal_writer``): every pulled page (page 1 patched: WAL bytes 18/19 = 2, the
   in-header size, a schema cookie past every value a connection may have cached), plus
   every page the replica changed locally since its synced state (local frames of the
   WAL, the local layer) reverted to its synced version in the new revision (the latest
   synced frame, else the synced layer, fetched when absent - unchanged by the pull, so
   the old pin serves it). Pages past the new size are left out (the commit frame's size
   cuts them). The list of synced frames (``-tdbwalsync``) is saved, then the frames are
   appended and the wal-index updated (``wal_index.c``); the write lock is released with
   a COMMIT that wrote nothing through SQLite;
6. the same connection replays the local changes in its next write transaction (its new
   snapshot reads the new revision; the flag still keeps every other connection out);
7. metadata switches (synced revision, pull_gen + 1, no pending pull), the stage and the
   replay file go, the flag clears.

Lazy fetches stay right without moving any pin: a page absent from the synced layer was
changed by no pull whose frames are still in the WAL (pulled pages enter the synced layer
only by a checkpoint, rule (18) of vfs.c), so it is the same at every synced revision
since; and the database file's size is never changed by a pull (old snapshots read it).
"""

from __future__ import annotations

import os
import sqlite3
import struct
from typing import Callable, Dict, List, Optional, Set

from ..errors import OperationalError
from ..storage import header, wal_writer
from ..storage.apply_flag import ApplyFlag
from ..storage.pagestore import PG_SYNCED, PageStore
from . import capture, internal, metadata as sync_meta, pull_end, rebase
from .stage import Staged

WAL = 2  # file format bytes 18/19 of a WAL database


def is_wal(conn: sqlite3.Connection) -> bool:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


def is_wal_replica(store: PageStore) -> bool:
    """The database file says WAL (bytes 18/19 of page 1; SQLite writes them when the mode
    is switched), or a -wal is there: without any SQLite lock, for planning the network."""
    page1 = store.read_page(1)
    return (page1 is not None and page1[header.READ_VERSION] == WAL) or os.path.exists(store.path + "-wal")


def page1_for_wal(base: bytes, visible_cookie: int, db_size: int) -> bytes:
    """The new revision's page 1 for a WAL replica: WAL format bytes, its size (valid: the
    change counter equals version-valid-for; no counter bump, WAL readers never look at it),
    a schema cookie past the visible one (every connection re-reads the schema)."""
    b = bytearray(base)
    b[header.WRITE_VERSION] = b[header.READ_VERSION] = WAL
    counter = struct.unpack_from(">I", b, header.CHANGE_COUNTER)[0]
    struct.pack_into(">I", b, header.VERSION_VALID_FOR, counter)
    struct.pack_into(">I", b, header.IN_HEADER_SIZE, db_size)
    cookie = (max(visible_cookie, struct.unpack_from(">I", b, header.SCHEMA_COOKIE)[0]) + 1) & 0xFFFFFFFF
    struct.pack_into(">I", b, header.SCHEMA_COOKIE, cookie)
    return bytes(b)


def _local_layer(store: PageStore) -> set:
    out = set()
    p = store.first_local(1)
    while p:
        out.add(p)
        p = store.first_local(p + 1)
    return out


def plan(store: PageStore, replica: str, conn_id: int, staged: Staged, state: wal_writer.WalState,
         visible_cookie: int, synced_pages: int) -> Dict[int, bytes]:
    """Step 5's pages: pulled pages and reverted local pages, in the new revision
    (``synced_pages``: the size of the revision the replica is at)."""
    db_size = staged.db_size
    local_frames, synced_frames = wal_writer.wal_pages(replica, state, store.page_size)
    pages: Dict[int, bytes] = {p: data for p, data in staged.pages() if p <= db_size}

    def synced_version(p: int) -> bytes:
        if p in synced_frames:
            return synced_frames[p]
        data = store.read_synced(p)
        if data is None:
            if p <= synced_pages:  # a page of the synced revision no checkpoint brought yet
                store.raise_remote_size(synced_pages * store.page_size)
            store.on_miss(conn_id, p, 1)  # unchanged by the pull: the old pin serves it
            data = store.read_synced(p)
        if data is None:
            raise OperationalError(f"pull: the synced version of page {p} of {replica} could not be "
                                   "fetched (a local write raced the pull); nothing was changed: pull again")
        return data

    for p in sorted(pages):  # old_versions_needed, under the lock: the old pin serves them
        if p <= store.remote_pages and p not in synced_frames and not store.is_present(p):
            store.on_miss(conn_id, p, 1)
            if not store.is_present(p):
                raise OperationalError(f"pull: page {p} of {replica} could not be fetched at the "
                                       "replica's revision; nothing was changed: pull again")
    for p in sorted(local_frames | _local_layer(store)):
        if p <= db_size and p not in pages:
            pages[p] = synced_version(p)
    base1 = pages.get(1) or synced_version(1)
    pages[1] = page1_for_wal(base1, visible_cookie, db_size)
    return pages


def prefetch_pages(store: PageStore, replica: str, staged: Set[int], db_size: int,
                   synced_pages: int) -> List[int]:
    """Before the lock (engine.pull step 3): pages the plan will revert whose synced
    version the replica lacks (local frames and local pages never fetched); fetched at
    the new revision into the stage, like rollback mode's ``replay_pages``."""
    state = wal_writer.peek_state(replica)
    try:
        local, synced = wal_writer.wal_pages(replica, state, store.page_size) if state else (set(), {})
    except (OSError, OperationalError):  # the WAL moved meanwhile: a hint only
        local, synced = set(), {}
    limit = min(db_size, synced_pages)
    return sorted(p for p in (local | _local_layer(store)) - set(synced)
                  if p <= limit and p not in staged and not store.state(p) & PG_SYNCED)


def old_versions_needed(store: PageStore, replica: str, staged: Set[int]) -> List[int]:
    """Pulled pages the synced layer lacks (partial replicas): their OLD version must be
    stored before the frames are appended (engine.pull fetches it at the synced revision,
    before the lock; ``plan`` makes sure under it). Then no page absent from the synced
    layer was changed by a pull whose frames are still in the WAL, and a reader whose
    snapshot predates the pull, reading such a page from the database file, gets the
    bytes of its snapshot whatever revision the fetch is pinned to."""
    state = wal_writer.peek_state(replica)
    try:
        synced = wal_writer.wal_pages(replica, state, store.page_size)[1] if state else {}
    except (OSError, OperationalError):
        synced = {}
    limit = store.remote_pages
    return sorted(p for p in staged if p <= limit and p not in synced and not store.is_present(p))


def _refuse_uncaptured_frames(ic: sqlite3.Connection, replica: str, store: PageStore,
                              display_url: str) -> None:
    """rebase.extract refuses local pages nothing captured; in WAL mode they may also be
    frames of the WAL (not checkpointed yet)."""
    if capture.installed(ic):
        return
    local = wal_writer.wal_pages(replica, wal_writer.read_state(ic), store.page_size)[0]
    if local:
        raise OperationalError(
            f"pull from {display_url}: the replica {replica} has local changes (pages "
            f"{', '.join(map(str, sorted(local)[:3]))}...) made without change capture, so pulling "
            "would lose them; nothing was changed. Open it with turso_dbapi.connect() (which "
            "installs capture and logs every row) and pull again")


def apply_wal(store: PageStore, replica: str, conn_id: int, display_url: str, staged: Staged,
              timeout: float, on_conflict: Optional[rebase.OnConflict],
              lock_error: Callable[[Exception], Exception]) -> sync_meta.SyncMeta:
    """Steps 2-7 of the module docstring; the new metadata."""
    ic = internal.connect(replica, conn_id, timeout)
    flag: Optional[ApplyFlag] = None
    prepared: Optional[rebase.Prepared] = None
    started = False
    try:
        before = sync_meta.load(replica)
        if before is None or before.pending_pull is None:
            prepared = rebase.prepare(ic, replica)  # (3) ahead of the lock, checked under it
        try:
            ic.execute("BEGIN IMMEDIATE")  # (2) the WAL write lock; readers carry on
        except sqlite3.OperationalError as exc:
            raise lock_error(exc) from None
        try:
            meta = sync_meta.load(replica)
            if meta is None:
                raise OperationalError(f"pull: the sync metadata of {replica} disappeared")
            if meta.pending_pull is None:
                _refuse_uncaptured_frames(ic, replica, store, display_url)
                used, prepared = prepared is not None and prepared.use(ic), None
                if not used:  # a commit since the extraction: again, under the lock
                    rebase.extract(ic, replica, store, display_url)  # (3)
                meta.pending_pull = {"revision": staged.revision, "db_size": staged.db_size,
                                     "rebase": True}
                sync_meta.save(replica, meta)
            elif prepared is not None:
                prepared.discard()
                prepared = None
            started = True  # from here a failure leaves the stage for a redo
            flag = ApplyFlag(store)
            flag.set()  # (4)
            state = wal_writer.read_state(ic)
            cookie = int(ic.execute("PRAGMA schema_version").fetchone()[0])
            pages = plan(store, replica, conn_id, staged, state, cookie, meta.db_size_pages)  # (5)
            salts = wal_writer.salts_for(state)
            wal_writer.record(replica, state, salts, pages)
            wal_writer.append(ic, replica, state, salts, pages, staged.db_size, store.page_size)
        except BaseException:
            ic.execute("ROLLBACK")
            raise
        ic.execute("COMMIT")  # wrote nothing through SQLite: only releases the write lock
        # on_conflict's "did the server change this row" reads the new revision's pages
        _replay(ic, lambda p: pages.get(p) or store.read_page(p), replica, meta.client_unique_id,
                staged, on_conflict)  # (6)
        return pull_end.finish(replica, meta, staged, flag)  # (7)
    except BaseException:
        pull_end.abandon(replica, prepared, started)
        raise
    finally:
        ic.close()


def _replay(ic: sqlite3.Connection, read_page: Callable[[int], Optional[bytes]], replica: str,
            client_id: str, staged: Staged, on_conflict: Optional[rebase.OnConflict]) -> None:
    rebase.attach(ic, replica)  # before the transaction: the set-based replay reads it in SQL
    ic.execute("BEGIN IMMEDIATE")
    try:
        pull_end.replay(ic, replica, client_id, staged, read_page, on_conflict)
        ic.execute("COMMIT")
    except BaseException:
        ic.execute("ROLLBACK")
        raise
