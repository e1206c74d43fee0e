"""The sync engine: the one place that sequences lock -> network -> stage -> apply.

``pull(replica)`` (``conn.pull()``):

1. the pull lock (``bootstrap.pull_lock``: one pull of a replica at a time, across
   processes); an apply a crash left half done (``pending_pull``) is finished first;
2. local changes refuse the pull (push is not implemented: pulling would lose them);
3. network, with no SQLite lock held: ``/pull-updates`` since the synced revision, its pages
   streamed to the stage file (``stage.StageWriter``) as they arrive (page 1 too, fetched
   at the new revision when the pull brought pages but not page 1 and the replica lacks it);
4. nothing changed: the metadata moves to the new revision (the same pages at both);
   otherwise the stage is published and applied (``apply.apply_staged``: BEGIN EXCLUSIVE,
   pending_pull, pages, metadata switch; see its module docstring);
5. the B-tree hints of the replica are learnt again (the B-trees changed).

Lazy fetches of every connection follow the new revision by themselves: their source's pin
reads the synced revision from the metadata (``sync.replica``).

``recover_dead_apply`` is what C's apply-flag callback runs for a Turso replica (vfs.c
rule (13)): the apply of a puller that died mid-switch is finished before anyone reads.
Push (capturing local changes, sending them, rebasing on the pulled revision) is not
implemented; when it is, this is where it is sequenced with the pull.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from ..errors import OperationalError
from ..fetch.btree_readahead import hints_for
from ..storage import apply_flag
from ..storage.pagestore import PageStore
from ..url import redact
from . import apply as pull_apply
from . import metadata as sync_meta
from .bootstrap import pull_lock
from .stage import StageWriter


def load_meta(path: str) -> sync_meta.SyncMeta:
    meta = sync_meta.load(path)
    if meta is None:
        raise OperationalError(f"the sync metadata of {path} is missing")
    return meta


def pull(store: PageStore, source: Any, path: str, conn_id: int) -> bool:
    """Network first (no lock), then a coherent apply; True when pages changed. The caller
    checked that its connection is outside a transaction."""
    url = source.display_url
    with pull_lock(path):  # (1) one pull per replica at a time
        meta = load_meta(path)
        if meta.pending_pull is not None:  # an apply was interrupted: finish it first
            with apply_flag.applying():
                pull_apply.apply_staged(store, path, conn_id, url)
            meta = load_meta(path)
        pull_apply.refuse_local_changes(store, url)  # (2)
        stage = StageWriter(path)  # (3) pages go to disk as they arrive
        try:
            reply = source.changes_since(meta.synced_revision or "", on_page=stage.add,
                                         on_reset=stage.reset)
            if stage.count and 1 not in stage.pgnos and not store.is_present(1):
                for p, data in source.fetch_at([1], reply.revision).pages.items():
                    stage.add(p, data)  # still no lock held
        except BaseException:
            stage.discard()
            raise
        if not stage.count:  # (4) nothing changed
            stage.discard()
            meta = load_meta(path)
            meta.synced_revision = reply.revision
            meta.last_pull_unix_time = int(time.time())
            sync_meta.save(path, meta)
            return False
        stage.finish(reply.revision, reply.db_size)
        with apply_flag.applying():
            applied = pull_apply.apply_staged(store, path, conn_id, url)
    # §6.6: the pull state comes from local metadata after applying, never the remote.
    if applied is not None:
        hints_for(store, reset=True)  # (5) the B-trees changed: learn them again
    return applied is not None


def finish_interrupted(store: PageStore, path: str, conn_id: int, display_url: str,
                       meta: sync_meta.SyncMeta) -> None:
    """At open: redo a pull's apply that a crash interrupted, or drop a stage that a pull
    left without starting its apply, before any read."""
    if meta.pending_pull is not None:
        with pull_lock(path), apply_flag.applying():
            if (sync_meta.load(path) or meta).pending_pull is not None:
                pull_apply.apply_staged(store, path, conn_id, display_url)
    elif os.path.exists(pull_apply.stage_path(path)):
        with pull_lock(path):
            current = sync_meta.load(path)
            if (current is not None and current.pending_pull is None
                    and os.path.exists(pull_apply.stage_path(path))):
                pull_apply.remove_stage(path)  # staged by a pull that never started applying


def recover_dead_apply(store: PageStore, conn_id: int) -> int:
    """C found the apply flag set while a connection took its SHARED lock (vfs.c rule
    (13)): finish the apply of a puller that died mid-switch, so no connection of any
    process ever reads a mix of two revisions. Returns an ``apply_flag`` answer."""
    path = store.path
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
