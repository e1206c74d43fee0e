"""Applying a pulled revision to a Turso replica: staging file and coherent apply.

DESIGN §2.5. The replica runs in rollback-journal mode, where every connection (of every
process) compares the file change counter (header offset 24) at the start of each read
transaction and drops its page cache when it moved. So the apply:

1. (network already done) the received pages sit durably in ``<replica>-tdbpull``
   (``sync.stage``);
2. an internal SQLite connection on the replica takes ``BEGIN EXCLUSIVE`` (waits out
   readers and writers in every process; on timeout nothing is changed);
3. metadata records ``pending_pull`` (a crash from here on redoes steps 4-6 at the next
   open, from the staging file: the apply is idempotent);
4. every staged page is stored over the synced layer; page 1 gets rollback-journal bytes
   18/19 = 1, change counter (24) and version-valid-for (92) = max(old, new) + 1, and the
   in-header size (28) = db_size; the remote size becomes db_size pages and synced pages
   past it are dropped; the store is fsynced;
5. metadata switches (synced revision, pull_gen + 1, last pull time, no pending pull);
6. the staging file is removed and the transaction is rolled back: it wrote nothing
   through SQLite, so that only releases the lock.

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
import time
from typing import Optional

from ..errors import OperationalError, ProtocolError
from ..protocol.sync_wire import MAX_DB_PAGES, PAGE_SIZE
from ..storage import files, header
from ..storage.apply_flag import ApplyFlag
from ..storage.header import rollback_journal
from ..storage.pagestore import PageStore
from ..storage.vfs import replica_uri
from . import metadata as sync_meta
from .stage import Staged, remove_stage, stage_path, write_stage  # noqa: F401 (re-exported)
LOCK_TIMEOUT = 5.0  # seconds BEGIN EXCLUSIVE waits for other transactions


def local_pages(store: PageStore, limit: int = 3) -> list:
    """Up to ``limit`` page numbers changed locally. Local entries that change nothing are
    cleared on the way (a rolled-back transaction that spilled pages to the file wrote
    the old bytes back: not a change, and must not block ``pull()`` forever)."""
    found: list = []
    p = store.first_local(1)
    while p and len(found) < limit:
        if not store.forget_unchanged_local(p):
            found.append(p)
        p = store.first_local(p + 1)
    return found


def refuse_local_changes(store: PageStore, display_url: str) -> None:
    pages = local_pages(store)
    if pages:
        raise OperationalError(
            f"pull from {display_url}: the replica {store.path} has local changes (pages "
            f"{', '.join(map(str, pages))}...) and push is not implemented yet, so pulling would "
            "lose them; nothing was changed. Copy the data you need elsewhere, or open a fresh "
            "replica (another local_path) to read the server's new state")


def _drop_unreferenced_local_bytes(replica: str) -> None:
    """No page is local (just checked, under the EXCLUSIVE lock): whatever ``-tdblocal``
    still holds (pages of rolled-back transactions) is unreferenced. Emptying it keeps
    "has local data" (storage/claim.py) meaning "has local changes"."""
    try:
        if os.path.getsize(replica + files.LOCAL):
            os.truncate(replica + files.LOCAL, 0)
    except FileNotFoundError:
        pass


def patch_page1(new: bytes, old: Optional[bytes], db_size: int) -> bytes:
    """Page 1 for the replica: rollback journal, a change counter that moved, the size."""
    b = bytearray(rollback_journal(new))
    old_counter = struct.unpack_from(">I", old, header.CHANGE_COUNTER)[0] if old else 0
    counter = (max(old_counter, struct.unpack_from(">I", new, header.CHANGE_COUNTER)[0]) + 1) & 0xFFFFFFFF
    struct.pack_into(">I", b, header.CHANGE_COUNTER, counter)
    struct.pack_into(">I", b, header.IN_HEADER_SIZE, db_size)
    struct.pack_into(">I", b, header.VERSION_VALID_FOR, counter)
    return bytes(b)


def store_revision(store: PageStore, staged: Staged) -> None:
    """Step 4 of the module docstring (caller holds SQLite's EXCLUSIVE lock)."""
    db_size = staged.db_size
    old1 = store.read_page(1)
    if db_size and not staged.has_page1 and old1 is None:
        raise OperationalError(f"pull: page 1 of {store.path} is neither stored nor in the pull")
    old_pages = store.remote_pages
    store.set_remote_size(db_size * PAGE_SIZE)
    for p in range(db_size + 1, old_pages + 1):
        store.drop_synced(p)
    page1 = old1
    for p, data in staged.pages():
        if p == 1:
            page1 = data
        elif p <= db_size:
            store.put_synced(p, data, overwrite=True)
    if page1 is not None and db_size:
        store.put_synced(1, patch_page1(page1, old1, db_size), overwrite=True)  # last: the switch
    store.sync()


def _unusable(store: PageStore, staged: Staged) -> Optional[str]:
    """Why this stage cannot be applied whole, checked before anything is recorded: a
    stage that would fail half-way must never get as far as ``pending_pull``."""
    if staged.db_size > MAX_DB_PAGES:
        return f"db_size {staged.db_size} pages is more than SQLite allows"
    if staged.max_pgno > store.max_pages:
        return (f"page {staged.max_pgno} is past the {store.max_pages} pages this replica can "
                "hold; connect with a fresh local_path to bootstrap the grown database")
    if staged.db_size and not staged.has_page1 and store.read_page(1) is None:
        return "page 1 is neither stored nor in the pull"
    return None


def apply_staged(store: PageStore, replica: str, conn_id: int, display_url: str,
                 timeout: Optional[float] = None) -> Optional[sync_meta.SyncMeta]:
    """Apply ``<replica>-tdbpull`` under an EXCLUSIVE lock; the new metadata, or None when
    there was nothing (valid) staged. Raises OperationalError, changing nothing, when the
    lock cannot be had or local changes appeared."""
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
    problem = _unusable(store, staged) if pending is None or pending.pending_pull is None else None
    if problem is not None:
        remove_stage(replica)
        raise ProtocolError(f"pull from {display_url}: {problem}; nothing was changed",
                            url=display_url)
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    started = False
    ic = sqlite3.connect(replica_uri(replica, conn_id), uri=True,
                         timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        # No journal file for this connection: its transaction must never leave one that a
        # later open could take for a hot journal (journal_mode is per connection here).
        ic.execute("PRAGMA journal_mode=MEMORY")
        try:
            ic.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            raise OperationalError(
                f"pull from {display_url}: could not lock the replica {replica} within {timeout:g} s "
                f"({exc}): another connection is inside a transaction. Nothing was changed; "
                "finish that transaction and pull again") from None
        try:
            meta = sync_meta.load(replica)
            if meta is None:
                raise OperationalError(f"pull: the sync metadata of {replica} disappeared")
            if meta.pending_pull is None:
                refuse_local_changes(store, display_url)  # a writer may have won the race
                _drop_unreferenced_local_bytes(replica)
                meta.pending_pull = {"revision": revision, "db_size": db_size}
                sync_meta.save(replica, meta)
            started = True  # from here a failure leaves the stage for a redo
            flag = ApplyFlag(store)
            flag.set()  # statements of other connections now look for a dead puller
            store_revision(store, staged)
            meta.synced_revision = revision
            meta.db_size_pages = db_size
            meta.pull_gen += 1
            meta.last_pull_unix_time = int(time.time())
            meta.pending_pull = None
            sync_meta.save(replica, meta)
            remove_stage(replica)
            flag.clear()
            flag.close()
        finally:
            # ROLLBACK only unlocks: nothing is written through SQLite. (COMMIT would write
            # the fresh page 1 SQLite prepares when a write transaction starts on an EMPTY
            # database into the local layer, hiding the pulled page 1.)
            ic.execute("ROLLBACK")
        return meta
    except BaseException:
        if not started:
            remove_stage(replica)  # the apply never began: the pull leaves no trace
        raise
    finally:
        ic.close()
