"""The sync engine: the one place that sequences lock -> network -> stage -> apply.

``pull(replica)`` (``conn.pull()``):

1. the pull lock (``bootstrap.pull_lock``: one pull of a replica at a time, across
   processes); an apply a crash left half done (``pending_pull``) is finished first;
2. a replica in WAL mode is pulled like any other; its apply commits into the WAL
   (``sync.wal_apply``);
3. network, with no SQLite lock held: ``/pull-updates`` since the synced revision, its pages
   streamed to the stage file (``stage.StageWriter``) as they arrive, then - still without
   a lock - the pages the apply and the replay will read that the synced layer lacks, at
   the new revision (``replay_pages``: page 1, and the synced version of every page the
   local layer changed: the replay rewrites the same rows);
4. nothing changed: the metadata moves to the new revision (the same pages at both);
   otherwise the stage is published and applied with the local changes replayed on top
   (``apply.apply_staged`` and ``rebase``: BEGIN EXCLUSIVE, replay file, pending_pull,
   pages, local layer set aside, replay, metadata switch; see their module docstrings);
5. the B-tree hints of the replica are learnt again (the B-trees changed).

Lazy fetches of every connection follow the new revision by themselves: their source's pin
reads the synced revision from the metadata (``sync.replica``).

``recover_dead_apply`` is what C's apply-flag callback runs for a Turso replica (vfs.c
rule (13)): the apply of a puller that died mid-switch is finished before anyone reads.
``push()`` runs beside it, not under the pull lock (``sync.push``): its network never
holds a local lock, and a pull racing it is safe by §6.6 (the replay floor comes from the
applied snapshot).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, List, Optional

from ..errors import OperationalError
from ..fetch.btree_readahead import hints_for
from ..protocol.revision import same_history
from ..sources.turso import history_reset
from ..storage import apply_flag
from ..storage.pagestore import PG_SYNCED, PageStore
from ..url import redact
from . import apply as pull_apply
from . import metadata as sync_meta
from . import rebase, wal_apply
from .bootstrap import pull_lock
from .stage import StageWriter


def load_meta(path: str) -> sync_meta.SyncMeta:
    meta = sync_meta.load(path)
    if meta is None:
        raise OperationalError(f"the sync metadata of {path} is missing")
    return meta


@dataclasses.dataclass
class Pulled:
    changed: bool  # pages changed (conn.pull()'s answer)
    apply_misses: int = 0  # page misses inside the apply's lock (fetched there: partial mode)


def replay_pages(store: PageStore, staged: Any, db_size: int) -> List[int]:
    """(3) Pages to fetch before the lock: page 1 when the synced layer lacks it, and the
    synced version of every page the local layer changed (the replay rewrites the same
    rows, so it walks those B-tree pages again). Pages it reaches that no local change
    touched are fetched inside the lock (``Pulled.apply_misses`` counts them)."""
    # A page past the old synced size did not exist before: if the new revision has it, it
    # changed, so it is staged already; only pages inside both sizes can be missing.
    limit = min(db_size, store.remote_pages)

    def wanted(p: int) -> bool:
        return p <= limit and p not in staged and not store.state(p) & PG_SYNCED

    out = [1] if wanted(1) else []
    p = store.first_local(2)
    while p:
        if wanted(p):
            out.append(p)
        p = store.first_local(p + 1)
    return out


def pull(store: PageStore, source: Any, path: str, conn_id: int,
         on_conflict: Optional[rebase.OnConflict] = None, lock_timeout: Optional[float] = None) -> Pulled:
    """Network first (no lock), then a coherent apply with the local changes replayed.
    The caller checked that its connection is outside a transaction. ``lock_timeout``: how
    long the apply waits for other connections' locks (None: apply.LOCK_TIMEOUT)."""
    url = source.display_url
    with pull_lock(path):  # (1) one pull per replica at a time
        meta = load_meta(path)
        if meta.pending_pull is not None:  # an apply was interrupted: finish it first
            with apply_flag.applying():
                pull_apply.apply_staged(store, path, conn_id, url)
            meta = load_meta(path)
        stage = StageWriter(path)  # (3) pages go to disk as they arrive
        try:
            reply = source.changes_since(meta.synced_revision or "", on_page=stage.add,
                                         on_pages=stage.add_run, on_reset=stage.reset)
            if not same_history(meta.synced_revision, reply.revision):  # never mix histories
                raise history_reset(url, "pull", f"this replica is at revision "
                                    f"{meta.synced_revision!r}, the server at {reply.revision!r}")
            if stage.count:  # still no lock held
                needed = replay_pages(store, stage.pgnos, reply.db_size)
                if wal_apply.is_wal_replica(store):  # its local frames too, and old versions
                    needed = sorted(set(needed) | set(wal_apply.prefetch_pages(
                        store, path, stage.pgnos, reply.db_size, meta.db_size_pages)))
                    old = wal_apply.old_versions_needed(store, path, stage.pgnos)
                    if old:  # kept for readers of older snapshots (wal_apply.old_versions_needed)
                        for p, data in source.fetch_at(old, meta.synced_revision or "").pages.items():
                            store.put_synced(p, data)
                if needed:
                    for p, data in source.fetch_at(needed, reply.revision).pages.items():
                        stage.add(p, data)
        except BaseException:
            stage.discard()
            raise
        if not stage.count:  # (4) nothing changed
            stage.discard()
            meta = load_meta(path)
            meta.synced_revision = reply.revision
            meta.last_pull_unix_time = int(time.time())
            sync_meta.save(path, meta)
            return Pulled(False)
        staged = stage.finish(reply.revision, reply.db_size)
        misses = store.counters()["misses"]
        with apply_flag.applying():
            applied = pull_apply.apply_staged(store, path, conn_id, url, on_conflict=on_conflict, staged=staged,
                                              timeout=lock_timeout)
        misses = store.counters()["misses"] - misses
    # §6.6: the pull state comes from local metadata after applying, never the remote.
    if applied is not None:
        hints_for(store, reset=True)  # (5) the B-trees changed: learn them again
    return Pulled(applied is not None, misses)


def finish_interrupted(store: PageStore, path: str, conn_id: int, display_url: str,
                       meta: sync_meta.SyncMeta) -> None:
    """At open: redo a pull's apply that a crash interrupted, or drop a stage that a pull
    left without starting its apply, before any read."""
    if meta.pending_pull is not None:
        # A live puller's one-commit WAL apply (pending only around its commit) finishes
        # itself, and the replica is whole meanwhile (old or new state): no wait for it.
        with pull_lock(path, wait=not wal_apply.one_commit(meta)) as held, apply_flag.applying():
            if held and (sync_meta.load(path) or meta).pending_pull is not None:
                pull_apply.apply_staged(store, path, conn_id, display_url)
    elif os.path.exists(pull_apply.stage_path(path)):
        with pull_lock(path):
            current = sync_meta.load(path)
            if (current is not None and current.pending_pull is None
                    and os.path.exists(pull_apply.stage_path(path))):
                pull_apply.remove_stage(path)  # staged by a pull that never started applying
                rebase.remove_replay(path)


def recover_dead_apply(store: PageStore, conn_id: int) -> int:
    """C found the apply flag set while a connection took its SHARED lock (vfs.c rule
    (13)): finish the apply of a puller that died mid-switch, so no connection of any
    process ever reads a mix of two revisions. Returns an ``apply_flag`` answer."""
    path = store.path
    if store.readonly:  # finishing the apply writes the replica: the read fails with this cause
        raise OperationalError(
            f"the replica {path} is in the middle of a pull whose process died; a read-only "
            "connection cannot finish it: open the replica once without readonly")
    with pull_lock(path, wait=False) as held:
        if not held:
            return apply_flag.BUSY  # a live pull: the busy handler retries after its apply
        meta = sync_meta.load(path)
        if meta is not None and meta.pending_pull is not None:
            url = redact(meta.remote_url or path)
            with apply_flag.applying():
                pull_apply.apply_staged(store, path, conn_id, url)
            hints_for(store, reset=True)
        else:
            apply_flag.ApplyFlag(store).clear()  # the apply finished; its process died before clearing
    return apply_flag.RECOVERED


def synced_revision(path: str) -> Optional[str]:
    """The synced revision as the metadata says now (a miss runs inside a read transaction,
    so no apply is in progress and metadata and synced layer agree); None if unreadable."""
    try:
        meta = sync_meta.load(path)
    except (OSError, OperationalError):
        return None
    return meta.synced_revision if meta is not None else None
