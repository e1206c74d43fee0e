"""Applying a pulled revision to a replica in WAL mode (``PRAGMA journal_mode=WAL``).

In WAL mode SQLite keeps every connection of every process coherent through the WAL and the
wal-index, so a pull commits the way SQLite's own writer does, as ONE commit holding the new
revision with the local changes replayed, and never touches the database file (whose pages
old snapshots may still read). No reader ever waits: open read transactions keep their
snapshot, new ones see the old state (with its local changes) or the new one (with them
replayed) as soon as the commit frame is in the wal-index.

1. (network done) the received pages sit in ``<replica>-tdbpull`` (``sync.stage``); no lock
   is held in 1-4, local writers and readers carry on;
2. the local changes go to a replay file (``rebase.prepare``: one read transaction of the
   internal connection; its ``PRAGMA data_version`` is kept);
3. the plan (``wal_plan.Plan``), in a read transaction (its read mark keeps the WAL from restarting
   while its frames are read): every pulled page (page 1 patched: WAL bytes 18/19 = 2, the
   in-header size, a schema cookie past every value a connection may have cached), plus
   every page the replica changed locally (local frames of the WAL, the local layer)
   reverted to its synced version (the latest synced frame, else the synced layer, else
   fetched: unchanged by the pull, so the old pin serves it), against the wal-index state
   read there. Then the replay runs OFF TO THE SIDE (``sync.side_replay``) on a scratch view
   of that new revision: the pages it writes are the local part of the commit;
4. ``pending_pull`` is saved with the capture generation the commit installs, and the
   synced frames' list (``-tdbwalsync``, storage.wal_writer) with the frame numbers they
   will get; both fsynced here, outside the lock. Local commits made since the extraction
   (``data_version`` moved) are CAUGHT UP (``_catch_up``, up to ``CATCH_UPS`` times): in
   one read transaction, their changes (logged after the last log id replayed, and the
   rows of tables' unlogged tails, tail.py) and the pages they touched; the changes are
   replayed on the same view, the pages join the commit as their synced version (what the
   view read for them) unless replayed, and the list is written again;
5. the internal connection takes ``BEGIN IMMEDIATE`` (the WAL write lock; other writers
   wait, readers do not) and checks that nothing moved since the last look: no commit
   (``data_version``; else one last catch-up, under the lock) and the wal-index at the
   planned mxFrame and salts (checked in C by the append). Then ``wal_index.c`` appends the
   planned pages (synced), then the replayed ones (local; a page may come twice: the later
   frame wins) as one commit, fsyncs the WAL, updates the wal-index; COMMIT (which wrote
   nothing through SQLite) releases the lock. What a catch-up cannot follow exactly (DDL
   since; a tail row replayed before and since deleted, which no log records; a restart of
   the WAL the append refuses) makes 2-5 run again, up to ``MOVED_RETRIES`` times, then
   once more all under the lock (the last resort: still one commit);
6. metadata switches (synced revision, pull_gen + 1, no pending pull), the stage and the
   replay file go.

Why the fsyncs of 4 and 6 may sit outside the lock: the commit frame is the one point of
no return. The list of synced frames must be durable before the frames (a pulled frame
not listed would count as local), and that only needs "before", not "under the lock": it
is written for the planned mxFrame and salts, and if the WAL moves the append refuses and
the list is written again; a listed frame never appended is harmless (a frame counts as
synced only if its page and CRC match). ``pending_pull`` must be durable before the commit
so a crash after it is noticed; after a crash ``resolve`` reads the capture generation of
the replica: the commit's (it landed: the metadata switches) or the old one (it did not:
the pull leaves no trace). So a crash anywhere leaves the old state with every local
change or the new state with them replayed, and nothing needs redoing: no apply flag is
set, no reader ever waits. (An older version's two-commit apply left a ``pending_pull``
without the generation and its apply flag set: vfs.c rule (19) still keeps new read
transactions out until that apply is redone here as one commit, from its replay file.)

Lazy fetches stay right without moving any pin: a page absent from the synced layer was
changed by no pull whose frames are still in the WAL (pulled pages enter the synced layer
only by a checkpoint, rule (18) of vfs.c), so it is the same at every synced revision
since; and the database file's size is never changed by a pull (old snapshots read it).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..errors import OperationalError
from ..storage import file_locks, header, wal_writer
from ..storage.apply_flag import ApplyFlag
from ..storage.pagestore import PG_SYNCED, PageStore
from . import capture, internal, metadata as sync_meta, pull_end, rebase, replay_file, side_replay, wal_plan
from .stage import Staged

Frames = wal_writer.Frames
MOVED_RETRIES = 3  # side builds redone when the replica moved before the lock; then under it
CATCH_UPS = 3  # local commits caught up ahead of the lock per build
ONE_COMMIT = "gen"  # pending_pull's key: the capture generation the commit installs


def is_wal(conn: sqlite3.Connection) -> bool:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


def header_says_wal(store: PageStore) -> bool:
    """Bytes 18/19 of page 1 say WAL (SQLite writes them when the mode is switched): read
    without SQLite, so without loading a schema a crash may have left torn (apply.py)."""
    page1 = store.read_page(1)
    return page1 is not None and page1[header.READ_VERSION] == header.WAL


def is_wal_replica(store: PageStore) -> bool:
    """The database file says WAL, or a -wal is there: without any SQLite lock, for
    planning the network."""
    return header_says_wal(store) or os.path.exists(store.path + "-wal")


def prefetch_pages(store: PageStore, replica: str, staged: Set[int], db_size: int,
                   synced_pages: int) -> List[int]:
    """Before the lock (engine.pull step 3): pages the plan will revert whose synced
    version the replica lacks (local frames and local pages never fetched; without
    checkpoint signals every local page: ``CKPT_SIGNALS``); fetched at the new revision
    into the stage, like rollback mode's ``replay_pages``."""
    state = wal_writer.peek_state(replica)
    try:
        local, synced = wal_writer.wal_pages(replica, state, store.page_size) if state else (set(), {})
    except (OSError, OperationalError):  # the WAL moved meanwhile: a hint only
        local, synced = set(), {}
    limit = min(db_size, synced_pages)
    layer = wal_plan.local_layer(store)
    return sorted(p for p in (local | layer) - set(synced) if p <= limit and p not in staged
                  and (not store.state(p) & PG_SYNCED or (not wal_plan.CKPT_SIGNALS and p in layer)))


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


def _refuse_uncaptured_frames(ic: sqlite3.Connection, replica: str, store: PageStore, display_url: str,
                              state: wal_writer.WalState) -> None:
    """rebase.extract refuses local pages nothing captured; in WAL mode they may also be
    frames of the WAL (not checkpointed yet)."""
    if capture.installed(ic):
        return
    local = wal_writer.wal_pages(replica, state, store.page_size)[0]
    if local:
        raise OperationalError(
            f"pull from {display_url}: the replica {replica} has local changes (pages "
            f"{', '.join(map(str, sorted(local)[:3]))}...) made without change capture, so pulling "
            "would lose them; nothing was changed. Open it with turso_dbapi.connect() (which "
            "installs capture and logs every row) and pull again")


@dataclasses.dataclass
class Built:
    """Steps 2-3: what the lock's check and the append need."""

    state: wal_writer.WalState  # the wal-index the plan was made on
    plan: wal_plan.Plan
    view: side_replay.SideView  # open: a catch-up replays more on it
    version: Optional[int]  # PRAGMA data_version of the extraction (None: nothing to check)
    prepared: Optional[rebase.Prepared]  # its replay file (never published: not needed after)
    more: Set[int] = dataclasses.field(default_factory=set)  # pages local commits changed since
    last: int = 0  # the newest log id replayed (catch-ups replay what is logged after it)
    tails: Dict[str, Tuple[int, Set[Tuple]]] = dataclasses.field(default_factory=dict)  # replayed tail rows
    salts: Tuple[int, int] = (0, 0)  # of the commit's frames at ``state`` (once: a fresh WAL's are random)

    def __post_init__(self) -> None:
        self.salts = wal_writer.salts_for(self.state)

    def frames(self) -> Tuple[wal_writer.FileFrames, Frames, int]:
        """(synced frames: the planned pages, listed in -tdbwalsync; local frames: the
        replayed pages, after them in the same commit; the size after the commit). Pages
        local commits changed since the plan (``more``, caught up): the view read them as
        their synced version, so that is what they get unless replayed. Pulled pages stay
        in the stage file (``FileFrames``: offsets), the rest is a small set in memory."""
        res = self.view.result()
        plan = self.plan
        size, extra = res.size, {}
        planned = plan.planned()
        for p in sorted(self.more):
            if p <= size and p not in planned and p not in res.written:
                extra[p] = plan.synced_version(p)
        synced = wal_writer.FileFrames(plan.fd, plan.store.page_size)
        for p in sorted(planned | set(extra)):
            if p > size:
                continue
            if p in extra:
                synced.add(p, extra[p])
            else:
                plan.frame(synced, p)
        local = [(p, d) for p, d in sorted(res.written.items())
                 if p <= size and (p not in planned or d != plan.page_of(p))]
        return synced, local, size

    def close(self) -> None:
        self.view.close()
        self.plan.close()
        if self.prepared is not None:
            self.prepared.discard()


def _build(ic: sqlite3.Connection, store: PageStore, replica: str, conn_id: int, display_url: str,
           staged: Staged, meta: sync_meta.SyncMeta, on_conflict: Optional[rebase.OnConflict],
           redo: bool, locked: bool) -> Built:
    """Steps 2-3, ahead of the lock unless ``locked`` (the last resort); ``redo``: an
    older version's interrupted apply, whose published replay file is replayed again."""
    prepared, version, replay = None, None, rebase.replay_path(replica)
    if not redo:
        if not locked:
            prepared = rebase.prepare(ic, replica, durable=False)  # never read after a crash
        if prepared is not None:
            version, replay = prepared.version, prepared.out.tmp
        else:  # no capture yet, or under the lock: one transaction of ic, published file
            if not locked:
                ic.execute("BEGIN")
            try:
                version = None if locked else ic.execute("PRAGMA data_version").fetchone()[0]
                rebase.extract(ic, replica, store, display_url)
            finally:
                if not locked:
                    ic.execute("COMMIT")
    plan: Optional[wal_plan.Plan] = None
    try:
        if not locked:
            ic.execute("BEGIN")  # a read mark: no restart of the WAL while its frames are read
        try:
            cookie = int(ic.execute("PRAGMA schema_version").fetchone()[0])
            state = wal_writer.read_state(ic)
            if not redo:
                _refuse_uncaptured_frames(ic, replica, store, display_url, state)
            plan = wal_plan.Plan(store, replica, conn_id, staged, state, cookie, meta.db_size_pages)
        finally:
            if not locked:
                ic.execute("COMMIT")
        view = side_replay.run(replica, store.page_size, staged.db_size, plan.page_of,
                               client_id=meta.client_unique_id, staged=staged, on_conflict=on_conflict,
                               replay_path=replay, local=store.first_absent(1) == 0)
    except BaseException:
        if plan is not None:
            plan.close()
        if prepared is not None:
            prepared.discard()
        raise
    return Built(state, plan, view, version, prepared,
                 last=int(prepared.doc.get("last", 0)) if prepared is not None else 0,
                 tails=_tail_keys(prepared.doc, prepared.out.tmp) if prepared is not None else {})


def _tail_keys(doc: Dict, path: str) -> Dict[str, Tuple[int, Set[Tuple]]]:
    """{table: (frontier, keys)} of the tail rows (tail.py) in a replay file."""
    if not doc.get("tails"):
        return {}
    src = replay_file.Reader(path)
    try:
        return {t: (int(f), src.keys_with(t, int(doc["tail_id"]))) for t, f in doc["tails"].items()}
    finally:
        src.close()


def _catch_up(ic: sqlite3.Connection, store: PageStore, replica: str, built: Built, staged: Staged,
              client_id: str, on_conflict: Optional[rebase.OnConflict], locked: bool) -> bool:
    """Local transactions committed since the extraction (or the last catch-up): their
    changes, logged after ``built.last`` (the same DDL: not run again), are replayed on the
    view too, and the pages they changed join the commit (``Built.more``), which goes in at
    the state read here. In a read transaction of ``ic`` ahead of the lock (then
    ``built.version`` moves on: the lock checks again), or under it. False when that
    cannot be exact (DDL since, whole-table rows, or a tail row replayed before that is no
    longer in its table's unlogged tail, tail.py: deleted or re-keyed, and no log says so;
    or the tail's frontier moved): the caller builds again. Tail rows are replayed again
    whole (upserts: their current state)."""
    first = built.prepared.doc if built.prepared is not None else {}
    if not first or first.get("whole", True):
        return False
    if not locked:
        ic.execute("BEGIN")  # one snapshot for the changes, the version and the frames
    try:
        version = None if locked else ic.execute("PRAGMA data_version").fetchone()[0]
        out, doc = rebase.extract_since(ic, replica, built.last)
        now = wal_writer.read_state(ic)
        more = wal_writer.pages_since(replica, built.state, now, store.page_size) | wal_plan.local_layer(store)
    finally:
        if not locked:
            ic.execute("COMMIT")
    try:
        if doc["whole"] or (doc["gen"], doc["before"], doc["after"]) != (first.get("gen"), first.get("before"),
                                                                          first.get("after")):
            return False
        tails = _tail_keys(doc, out.tmp)
        for table, (frontier, keys) in built.tails.items():
            now_f, now_keys = tails.get(table, (None, set()))
            if now_f != frontier or not keys <= now_keys:
                return False
        built.view.replay(client_id=client_id, staged=staged, on_conflict=on_conflict,
                          replay_path=out.tmp, install=False)
    finally:
        out.discard()
    if now != built.state:
        built.state, built.salts = now, wal_writer.salts_for(now)
    built.version, built.last = version, int(doc["last"])
    built.tails.update(tails)
    built.more |= more
    return True


def _moved(ic: sqlite3.Connection, built: Built) -> bool:
    return built.version is not None and ic.execute("PRAGMA data_version").fetchone()[0] != built.version


def _commit(ic: sqlite3.Connection, store: PageStore, replica: str, built: Built, staged: Staged,
            client_id: str, on_conflict: Optional[rebase.OnConflict], locked: bool,
            lock_error: Callable[[Exception], Exception]) -> bool:
    """Step 4's list and step 5 for a build; False when the replica moved in a way a
    catch-up cannot follow (build again). Local commits met before the lock are caught up
    there (a few times), so the lock finds the state the list was written for: it then
    covers only the check and the append."""
    synced, local, size = built.frames()  # computed here, not under the lock
    wal_writer.record(replica, built.state, built.salts, synced)  # (4)
    for _ in range(CATCH_UPS if not locked else 0):
        if not _moved(ic, built):
            break
        if not _catch_up(ic, store, replica, built, staged, client_id, on_conflict, locked=False):
            return False
        synced, local, size = built.frames()  # the frames and their list follow every catch-up
        wal_writer.record(replica, built.state, built.salts, synced)
    if not locked:
        _begin(ic, lock_error)  # (5)
    landed = False
    try:
        if _moved(ic, built):  # moved again since the last look: caught up under the lock
            if not _catch_up(ic, store, replica, built, staged, client_id, on_conflict, locked=True):
                return False
            synced, local, size = built.frames()
            wal_writer.record(replica, built.state, built.salts, synced)
        synced.extend(local)  # one commit: the replayed pages after the planned ones
        wal_writer.append(ic, replica, built.state, built.salts, synced, size, store.page_size)
        landed = True
    except wal_writer.WalMoved:  # a restart since the plan, or a commit the version missed
        if locked:
            raise
    finally:
        ic.execute("COMMIT" if landed else "ROLLBACK")  # only releases the write lock
    return landed


def _begin(ic: sqlite3.Connection, lock_error: Callable[[Exception], Exception]) -> None:
    try:
        ic.execute("BEGIN IMMEDIATE")  # the WAL write lock; readers carry on
    except sqlite3.OperationalError as exc:
        raise lock_error(exc) from None


def once_per_conflict(hook: Optional[rebase.OnConflict]) -> Optional[rebase.OnConflict]:
    """``hook`` asked once per distinct conflict of a pull: a WAL pull that builds its
    replay again meets the same conflicts again and reuses the decisions."""
    if hook is None:
        return None
    decided: Dict[str, Any] = {}

    def ask(c: rebase.Conflict) -> Any:
        k = repr((c.table, c.key, c.local, c.server, c.error))
        if k not in decided:
            decided[k] = hook(c)
        return decided[k]

    return ask


def apply_wal(store: PageStore, replica: str, conn_id: int, display_url: str, staged: Staged,
              timeout: float, on_conflict: Optional[rebase.OnConflict],
              lock_error: Callable[[Exception], Exception]) -> sync_meta.SyncMeta:
    """Steps 2-6 of the module docstring; the new metadata."""
    on_conflict = once_per_conflict(on_conflict)  # a rebuild meets the same conflicts
    meta = sync_meta.load(replica)
    if meta is None:
        raise OperationalError(f"pull: the sync metadata of {replica} disappeared")
    redo = meta.pending_pull is not None  # an older version's two-commit apply (one_commit: resolved before)
    ic = internal.connect(replica, conn_id, timeout)
    recorded = landed = False
    try:
        for attempt in range(MOVED_RETRIES + 1):
            locked = attempt == MOVED_RETRIES  # the last resort: everything under the lock
            if locked:
                _begin(ic, lock_error)
            try:
                built = _build(ic, store, replica, conn_id, display_url, staged, meta, on_conflict, redo, locked)
            except wal_writer.WalMoved:  # restarted while its frames were read: plan again
                if locked:
                    raise
                continue
            try:
                if not redo and not recorded:  # (4) outside the lock: see the module docstring
                    meta.pending_pull = {"revision": staged.revision, "db_size": staged.db_size, "rebase": True,
                                         ONE_COMMIT: built.view.gen}
                    sync_meta.save(replica, meta)
                    recorded = True
                landed = _commit(ic, store, replica, built, staged, meta.client_unique_id, on_conflict,
                                 locked, lock_error)
            finally:
                built.close()
            if landed:
                break
        flag = ApplyFlag(store) if redo else None  # set by the older version's apply
        return pull_end.finish(replica, meta, staged, flag)  # (6)
    except BaseException:
        if not redo and not landed:  # the old state, every local change in it: no trace
            if recorded:
                meta.pending_pull = None
                sync_meta.save(replica, meta)
            pull_end.abandon(replica, None, False)
        raise  # landed: pending_pull stays, ``resolve`` finishes the switch
    finally:
        ic.close()


def refuse_exclusive(store: PageStore, replica: str, display_url: str) -> None:
    """A connection in ``locking_mode=EXCLUSIVE`` keeps the WAL replica's wal-index in its own
    heap and its file locked: a pull could only time out. Said at once (after a moment's
    grace: the last connection's close takes that lock briefly), naming the cause. A probe
    of the store's descriptor rules it out in one syscall; ``/proc/locks`` (7-15 ms to
    read) is asked only when it finds a holder, for its PID."""
    if not store.exclusive_held():
        return
    for _ in range(5):
        holders = file_locks.exclusive_holders(replica)
        if not holders:
            return
        time.sleep(0.05)
    who = "this process" if os.getpid() in holders else f"process {holders[0]}"
    raise OperationalError(
        f"pull from {display_url}: the replica {replica} is held by a connection in "
        f"PRAGMA locking_mode=EXCLUSIVE ({who}): it keeps the WAL's index in its own memory, so "
        "no other connection can read or commit. Nothing was changed; close that connection (or "
        "run PRAGMA locking_mode=NORMAL and one query on it) and pull again")


def one_commit(meta: Optional[sync_meta.SyncMeta]) -> bool:
    """``pending_pull`` of a one-commit WAL apply (``resolve`` finishes it)."""
    return meta is not None and meta.pending_pull is not None and ONE_COMMIT in meta.pending_pull


def resolve(replica: str, conn_id: int, meta: sync_meta.SyncMeta) -> Optional[sync_meta.SyncMeta]:
    """A one-commit WAL apply whose process died (or failed) between ``pending_pull`` and the
    metadata switch: its commit is there or not - the capture generation it installs tells
    (only a pull changes it, and pulls are serialised by the pull lock the caller holds).
    There: the metadata switches now; not there: the pull leaves no trace (the replica
    has its old state with every local change, made before or since)."""
    pending = meta.pending_pull or {}
    ic = internal.connect(replica, conn_id)
    try:
        landed = capture.installed(ic) and capture.generation(ic) == int(pending[ONE_COMMIT])
    finally:
        ic.close()
    side_replay.remove(replica)
    if landed:
        return pull_end.switch(replica, meta, pending["revision"], int(pending["db_size"]), None)
    meta.pending_pull = None
    sync_meta.save(replica, meta)
    pull_end.abandon(replica, None, False)
    return None
