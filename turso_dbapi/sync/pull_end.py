"""How an apply ends, the same for both journal modes (``apply.py``, ``wal_apply.py``).

``replay``: inside the caller's write transaction on the new revision, the local changes
set aside are replayed (rebase.py step 4); with no replay file (an interrupted apply of an
older version, which kept no local changes) capture is installed afresh.
``finish``: the replay committed, so the metadata switches to the new revision (one atomic
save: the point after which a crash no longer redoes the apply), then the stage and the
replay file go and the apply flag is cleared. ``abandon``: a failure before the apply began
(``started`` False) leaves no trace of the pull; after it began, the stage stays for a redo.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import Callable, Optional

from ..storage.apply_flag import ApplyFlag
from . import capture, metadata as sync_meta, rebase, tail
from .stage import Staged, remove_stage

log = logging.getLogger("turso_dbapi")


def replay(conn: sqlite3.Connection, replica: str, client_id: str, staged: Staged,
           read_page: Callable[[int], Optional[bytes]], on_conflict: Optional[rebase.OnConflict],
           path: Optional[str] = None, install: bool = True) -> None:
    """(``path``: the replay file, when not the replica's published one; ``install``:
    see ``rebase.replay``.)"""
    # on_conflict's "did the server change this row" reads the new revision's pages
    server = rebase.ServerChanges(conn, read_page, staged.pgnos) if on_conflict else None
    path = path or rebase.replay_path(replica)
    if os.path.exists(path):
        rebase.replay(conn, replica, client_id, server=server, on_conflict=on_conflict, path=path,
                      install=install)
    else:
        capture.install(conn, gen=0)


def start_tails(conn: sqlite3.Connection) -> None:
    """After the replay committed (outside any transaction; every page of the new revision
    local, so this fetches nothing): each table's tail starts above its rows (tail.start),
    in a transaction of its own - best effort: a table the server sent damaged fails only
    this, and the tails then start at the next push."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            tail.start(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        log.info("pull: tails not started (%s); the next push starts them", exc)


def finish(replica: str, meta: sync_meta.SyncMeta, staged: Staged, flag: Optional[ApplyFlag]) -> sync_meta.SyncMeta:
    return switch(replica, meta, staged.revision, staged.db_size, flag)


def switch(replica: str, meta: sync_meta.SyncMeta, revision: str, db_size: int,
           flag: Optional[ApplyFlag]) -> sync_meta.SyncMeta:
    """``finish`` from what ``pending_pull`` records (a WAL apply resolved after a crash)."""
    meta.synced_revision = revision
    meta.db_size_pages = db_size
    meta.pull_gen += 1
    meta.last_pull_unix_time = int(time.time())
    meta.pending_pull = None
    sync_meta.save(replica, meta)
    remove_stage(replica)
    rebase.remove_replay(replica)
    if flag is not None:
        flag.clear()
        flag.close()
    return meta


def abandon(replica: str, prepared: Optional[rebase.Prepared], started: bool) -> None:
    if prepared is not None:
        prepared.discard()
    if not started:
        remove_stage(replica)  # the apply never began: the pull leaves no trace
        rebase.remove_replay(replica)
