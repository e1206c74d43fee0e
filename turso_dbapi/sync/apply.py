"""Applying a pulled revision to a Turso replica: staging file and coherent apply.

(A replica switched to WAL mode is applied by ``sync.wal_apply`` instead: one commit into
the WAL under the WAL write lock; ``apply_staged`` hands it over.)

DESIGN §2.5. In a rollback-journal replica (``journal_mode="delete"``, or one an older
version made) every connection (of every process) compares the file change counter (header
offset 24) at the start of each read transaction and drops its page cache when it moved.
So the apply:

1. (network already done) the received pages sit durably in ``<replica>-tdbpull``
   (``sync.stage``);
2. an internal SQLite connection on the replica takes ``BEGIN EXCLUSIVE`` (waits out
   readers and writers in every process; on timeout nothing is changed);
3. the local changes go to the replay file (rebase.py step 1: extracted just before the
   lock, used if nothing committed since, else extracted again) and metadata records
   ``pending_pull`` (a crash from here on redoes steps 4-6 at the next open, from the
   staging and replay files: the apply is idempotent);
4. the apply flag is set; every staged page is stored over the synced layer; the local
   layer is dropped; page 1 gets rollback-journal bytes 18/19 = 1, change counter (24) and
   version-valid-for (92) = max(old, new) + 1 (old: the page 1 readers saw, local
   included), and the in-header size (28) = db_size; the remote size (and the logical
   size) becomes db_size pages and synced pages past it are dropped; the store is fsynced;
   the transaction is rolled back: it wrote nothing through SQLite, so that only unlocks;
5. a fresh internal connection replays the local changes and commits (rebase.py step 4)
   while the flag keeps other connections out;
6. metadata switches (synced revision, pull_gen + 1, last pull time, no pending pull),
   the staging and replay files are removed, the flag clears.

After a crash in steps 3-6 the stage stays published with ``pending_pull`` set and the pull
lock free: the next open or pull, or the next read transaction of any connection of this
driver's VFS on the replica (vfs.c rule (13): the sidecar's apply flag, checked in C at the
SHARED lock, then ``sync.replica.recover_dead_apply``), redoes the apply before reading.
A transaction that already held its SHARED lock read nothing the crash switched.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from typing import Optional

from ..errors import OperationalError, ProtocolError
from ..protocol.sync_wire import MAX_DB_PAGES, PAGE_SIZE
from ..storage import files, header
from ..storage.apply_flag import ApplyFlag
from ..storage.header import rollback_journal
from ..storage.pagestore import PageStore
from . import internal, metadata as sync_meta, pull_end, rebase, wal_apply
from .stage import Staged, remove_stage, stage_path, write_stage  # noqa: F401 (re-exported)
LOCK_TIMEOUT = 5.0  # seconds BEGIN EXCLUSIVE waits for other transactions


def _drop_unreferenced_local_bytes(replica: str) -> None:
    """No page is local (the layer was just set aside, under the EXCLUSIVE lock): whatever
    ``-tdblocal`` still holds is unreferenced. Emptying it keeps
    "has local data" (storage/claim.py) meaning "has local changes"."""
    try:
        if os.path.getsize(replica + files.LOCAL):
            os.truncate(replica + files.LOCAL, 0)
    except FileNotFoundError:
        pass


def patch_page1(new: bytes, old: Optional[bytes], db_size: int) -> bytes:
    """Page 1 for the replica: rollback journal, a change counter and a schema cookie
    that moved, the size."""
    b = bytearray(rollback_journal(new))
    old_counter = struct.unpack_from(">I", old, header.CHANGE_COUNTER)[0] if old else 0
    counter = (max(old_counter, struct.unpack_from(">I", new, header.CHANGE_COUNTER)[0]) + 1) & 0xFFFFFFFF
    struct.pack_into(">I", b, header.CHANGE_COUNTER, counter)
    struct.pack_into(">I", b, header.IN_HEADER_SIZE, db_size)
    struct.pack_into(">I", b, header.VERSION_VALID_FOR, counter)
    # The schema cookie moves past every value a connection may have cached (the local
    # schema included: the replay recreates objects at other root pages), so each one
    # re-reads the schema (spec §6.5 step 7).
    old_cookie = struct.unpack_from(">I", old, header.SCHEMA_COOKIE)[0] if old else 0
    cookie = (max(old_cookie, struct.unpack_from(">I", new, header.SCHEMA_COOKIE)[0]) + 1) & 0xFFFFFFFF
    struct.pack_into(">I", b, header.SCHEMA_COOKIE, cookie)
    return bytes(b)


def store_revision(store: PageStore, staged: Staged) -> None:
    """Step 4 of the module docstring (caller holds SQLite's EXCLUSIVE lock); the local
    layer is set aside (rebase.py step 2: it is replayed from the replay file)."""
    db_size = staged.db_size
    old1 = store.read_page(1)  # local over synced: its change counter must be passed
    store.drop_local()
    _drop_unreferenced_local_bytes(store.path)  # the replay file holds the changes now
    base1 = store.read_page(1)  # the synced page 1 (the pull may not carry one)
    if db_size and not staged.has_page1 and base1 is None:
        raise OperationalError(f"pull: page 1 of {store.path} is neither stored nor in the pull")
    # Page 1's in-header size never passes the file's end at any point a crash may stop
    # this (SQLite calls that corrupt): the size grows before the pages, shrinks after page
    # 1, and the pages past a smaller end go before it shrinks (a redo drops them again).
    old_pages = store.remote_pages
    if db_size > old_pages:
        store.set_remote_size(db_size * PAGE_SIZE)
    page1 = base1
    for buf, pgnos, offsets in staged.runs():  # one store call per batch of pages
        keep = [i for i, p in enumerate(pgnos) if 1 < p <= db_size]
        if len(keep) < len(pgnos):
            if 1 in pgnos:
                off = offsets[pgnos.index(1)]
                page1 = buf[off:off + PAGE_SIZE]
            pgnos, offsets = [pgnos[i] for i in keep], [offsets[i] for i in keep]
        store.put_synced_many(buf, pgnos, offsets, overwrite=True)
    if page1 is not None and db_size:
        store.put_synced(1, patch_page1(page1, old1, db_size), overwrite=True)  # last: the switch
    if db_size < old_pages:
        for p in range(db_size + 1, old_pages + 1):
            store.drop_synced(p)
        store.set_remote_size(db_size * PAGE_SIZE)
    store.sync()


def _unusable(store: PageStore, staged: Staged, meta: Optional[sync_meta.SyncMeta]) -> Optional[str]:
    """Why this stage cannot be applied whole, checked before anything is recorded: a
    stage that would fail half-way must never get as far as ``pending_pull``."""
    if staged.db_size > MAX_DB_PAGES:
        return f"db_size {staged.db_size} pages is more than SQLite allows"
    if staged.max_pgno > store.max_pages:
        return (f"page {staged.max_pgno} is past the {store.max_pages} pages this replica can "
                "hold; connect with a fresh local_path to bootstrap the grown database")
    if staged.db_size and not staged.has_page1 and store.read_page(1) is None:
        return "page 1 is neither stored nor in the pull"
    if not staged.has_page1 and meta is not None and staged.db_size != meta.db_size_pages:
        # Page 1 holds the database size: a pull that changes the size changes page 1.
        return (f"db_size {staged.db_size} pages differs from the replica's {meta.db_size_pages} "
                "although page 1 (which records the size) did not change")
    return None


def apply_staged(store: PageStore, replica: str, conn_id: int, display_url: str,
                 timeout: Optional[float] = None, on_conflict: Optional[rebase.OnConflict] = None,
                 staged: Optional[Staged] = None) -> Optional[sync_meta.SyncMeta]:
    """Apply ``<replica>-tdbpull`` and replay the local changes on top (rebase.py, steps
    1-5); the new metadata, or None when there was nothing (valid) staged. Raises
    OperationalError, changing nothing, when the lock cannot be had. ``staged``: the stage
    as its writer just published it (else it is read back and checked)."""
    interrupted = sync_meta.load(replica)
    if wal_apply.one_commit(interrupted):  # a WAL apply: its one commit landed or not
        return wal_apply.resolve(replica, conn_id, interrupted)
    if staged is None:
        staged = Staged.open(replica)
    if staged is None:
        remove_stage(replica)
        meta = sync_meta.load(replica)
        if meta is not None and meta.pending_pull is not None:
            # The stage is fsynced before pending_pull is recorded, so this is damage, not
            # a crash: the synced layer may be half-applied and cannot be finished.
            raise OperationalError(
                f"the replica {replica} was interrupted while applying revision "
                f"{meta.pending_pull.get('revision')!r} and its staged pages are missing or "
                "damaged; delete the replica files and connect again to bootstrap afresh")
        return None
    revision, db_size = staged.revision, staged.db_size
    pending = sync_meta.load(replica)
    redo = pending is not None and pending.pending_pull is not None  # an apply that died midway
    problem = None if redo else _unusable(store, staged, pending)
    if problem is not None:
        remove_stage(replica)
        raise ProtocolError(f"pull from {display_url}: {problem}; nothing was changed",
                            url=display_url)
    timeout = LOCK_TIMEOUT if timeout is None else timeout

    def lock_error(exc: Exception) -> Exception:
        return OperationalError(
            f"pull from {display_url}: could not lock the replica {replica} within {timeout:g} s "
            f"({exc}): another connection is inside a transaction. Nothing was changed; "
            "finish that transaction and pull again")

    started = False
    if wal_apply.is_wal_replica(store):
        try:
            wal_apply.refuse_exclusive(store, replica, display_url)  # a clear error, not a timeout
        except OperationalError:
            if not redo:
                remove_stage(replica)  # the apply never began: the pull leaves no trace
            raise
    # A redo (a rollback-mode apply that died after recording pending_pull) must not let
    # SQLite interpret the replica before store_revision set the local layer aside: the dead
    # replay's commit may have been cut with page 1 written and the pages it names not,
    # nor the file grown to its in-header size ("database disk image is malformed" at
    # every open). So no statement that loads the schema, and the lock is taken with
    # writable_schema on: BEGIN EXCLUSIVE then lets an in-header size past the file's end be.
    ic = internal.connect(replica, conn_id, timeout)
    wal = wal_apply.header_says_wal(store) if redo else wal_apply.is_wal(ic)
    if wal:  # a WAL replica: the pull is one commit into the WAL
        ic.close()
        return wal_apply.apply_wal(store, replica, conn_id, display_url, staged, timeout, on_conflict,
                                   lock_error)
    flag: Optional[ApplyFlag] = None
    prepared: Optional[rebase.Prepared] = None
    try:
        if redo:
            ic.execute("PRAGMA writable_schema=ON")  # reads nothing; this connection writes nothing
        else:
            # No journal file for this connection: its transaction must never leave one that
            # a later open could take for a hot journal (journal_mode is per connection
            # here). A redo writes nothing through SQLite, so it opens no journal either.
            ic.execute("PRAGMA journal_mode=MEMORY")
            prepared = rebase.prepare(ic, replica)  # (1) ahead of the lock, checked under it
        try:
            ic.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            raise lock_error(exc) from None
        try:
            meta = sync_meta.load(replica)
            if meta is None:
                raise OperationalError(f"pull: the sync metadata of {replica} disappeared")
            if meta.pending_pull is None:
                used, prepared = prepared is not None and prepared.use(ic), None
                if not used:  # (1) the local changes, durable
                    rebase.extract(ic, replica, store, display_url)
                meta.pending_pull = {"revision": revision, "db_size": db_size, "rebase": True}
                sync_meta.save(replica, meta)
            elif prepared is not None:
                prepared.discard()
                prepared = None
            started = True  # from here a failure leaves the stage for a redo
            flag = ApplyFlag(store)
            flag.set()  # (2) statements of other connections now wait (or finish a dead puller)
            store_revision(store, staged)
        finally:
            # ROLLBACK only unlocks: nothing is written through this connection; the flag
            # keeps every other connection out until the replay committed (3).
            ic.execute("ROLLBACK")
        ic.close()
        _replay(store, replica, conn_id, meta.client_unique_id, staged, timeout, on_conflict)  # (4)
        return pull_end.finish(replica, meta, staged, flag)  # (5)
    except BaseException:
        pull_end.abandon(replica, prepared, started)
        raise
    finally:
        ic.close()


def _replay(store: PageStore, replica: str, conn_id: int, client_id: str, staged: Staged,
            timeout: float, on_conflict: Optional[rebase.OnConflict]) -> None:
    rc = internal.connect(replica, conn_id, timeout)
    try:
        # Nothing of this transaction needs a journal: until metadata says the apply is
        # done, a crash redoes the whole apply (the local layer is dropped again).
        rc.execute("PRAGMA journal_mode=MEMORY")
        rebase.attach(rc, replica)  # before the transaction: the replay reads it in SQL
        rc.execute("BEGIN EXCLUSIVE")
        try:
            pull_end.replay(rc, replica, client_id, staged, store.read_page, on_conflict)
            rc.execute("COMMIT")
        except BaseException:
            rc.execute("ROLLBACK")
            raise
        if store.first_absent(1) == 0:  # reading each table's largest rowid fetches nothing
            pull_end.start_tails(rc)
    finally:
        rc.close()
