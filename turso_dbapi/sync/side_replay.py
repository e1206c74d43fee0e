"""A WAL pull's replay run off to the side: the new revision with the local changes
replayed, built BEFORE the WAL write lock, so the pull appends it as ONE commit
(``sync.wal_apply``) and the lock covers only the append.

The scratch view is a page store of its own, ``<replica>-tdbside`` (``files.SIDE``), that
our VFS serves like any replica: SQLite's first read of a page misses and is served by
``page_of`` - the planned pages (pulled ones, local ones reverted to synced), else the
synced version of the page (``wal_plan.Plan.page_of``) - and SQLite's writes go to the
view's local layer. A connection on it runs the replay exactly as the replica's own
connection would (``pull_end.replay``: the replay file, ``on_conflict``, capture installed
afresh with the next generation), so the log it leaves is the replay's.

The view runs in rollback-journal mode: page 1's file format bytes (18/19) read 1 there (a
scratch file has no -wal) and go back to 2 in the result. Its journal is in memory (the
replay's statement rollbacks still work) and it never syncs: nothing in it is durable until
the pull appends the result, and files a crash leaves are removed by the next pull.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import struct
from typing import Callable, Dict, Optional

from ..errors import OperationalError
from ..storage import callbacks, files, header
from ..storage.pagestore import PageStore
from ..storage.vfs import replica_uri
from . import capture, pull_end, rebase
from .stage import Staged


@dataclasses.dataclass
class SideResult:
    written: Dict[int, bytes]  # page -> its replayed image (page 1 with WAL bytes again)
    size: int  # pages of the database after the replay
    gen: int  # the capture generation the replay installed: what a crash recovery looks for


def remove(replica: str) -> None:
    for suffix in files.STORE_SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(replica + files.SIDE + suffix)


class _Serve:
    """The view's miss handler (``PageStore.attach``): each absent page once, from ``page_of``."""

    def __init__(self, side: PageStore, page_of: Callable[[int], bytes]):
        self.side, self.page_of = side, page_of
        self.failure: Optional[BaseException] = None

    def handle_miss(self, pgno: int, n_pages: int) -> int:
        try:
            for p in range(pgno, pgno + n_pages):
                if not self.side.is_present(p):
                    data = self.page_of(p)
                    self.side.put_synced(p, header.rollback_journal(data) if p == 1 else data)
            return 0
        except BaseException as exc:  # kept: the replay's error handling must not hide it
            self.failure = self.failure or exc
            callbacks.keep_error(exc)
            return 1


class SideView:
    """The scratch view of the new revision (``db_size`` pages) and a connection on it;
    ``replay`` (once, or again with more changes: a catch-up), ``result``, ``close``."""

    def __init__(self, replica: str, page_size: int, db_size: int, page_of: Callable[[int], bytes]):
        self.replica, self.page_size, self.db_size, self.page_of = replica, page_size, db_size, page_of
        path = replica + files.SIDE
        remove(replica)
        self.side = PageStore(path, page_size, db_size * page_size, os.urandom(32))
        self._serve = _Serve(self.side, page_of)
        self.gen = 0
        self.sc: Optional[sqlite3.Connection] = None
        try:
            self.sc = sqlite3.connect(replica_uri(path, self.side.attach(self._serve)), uri=True,
                                      isolation_level=None, check_same_thread=False)
            self.sc.execute("PRAGMA journal_mode=MEMORY")
            self.sc.execute("PRAGMA synchronous=OFF")
            self.sc.execute("PRAGMA recursive_triggers = ON")  # as every replica connection
        except BaseException:
            self.close()
            raise

    def replay(self, *, client_id: str, staged: Staged, on_conflict: Optional[rebase.OnConflict],
               replay_path: str, install: bool = True, local: bool = False) -> None:
        """One write transaction of the view: ``pull_end.replay`` of ``replay_path``. Raises
        (changing nothing on the replica) when a page could not be served: a replay that
        silently skipped rows would lose them."""
        sc = self.sc
        assert sc is not None
        attached = rebase.attach(sc, self.replica, replay_path)
        try:
            sc.execute("BEGIN IMMEDIATE")
            try:
                pull_end.replay(sc, self.replica, client_id, staged, self.page_of, on_conflict,
                                path=replay_path, install=install)
                if self._serve.failure is None:
                    sc.execute("COMMIT")
            finally:
                if sc.in_transaction:
                    sc.execute("ROLLBACK")
        finally:
            if attached:
                sc.execute("DETACH DATABASE tdb_replay")
        if install and local and self._serve.failure is None:  # as rollback mode's apply does
            pull_end.start_tails(sc)  # (in the view: part of the same one commit)
        failure = self._serve.failure
        if failure is not None:
            raise OperationalError(f"pull: the new revision of {self.replica} could not be read for the "
                                   f"replay ({failure}); nothing was changed: pull again") from failure
        self.gen = capture.generation(sc)

    def result(self) -> SideResult:
        """The pages the replays changed (an unchanged page is no change) and the size."""
        side, ps = self.side, self.page_size
        written: Dict[int, bytes] = {}
        p = side.first_local(1)
        while p:
            data = side.read_page(p)
            if data is not None and data != side.read_synced(p):
                written[p] = header.wal(data) if p == 1 else data
            p = side.first_local(p + 1)
        page1 = written.get(1)
        size = struct.unpack_from(">I", page1, header.IN_HEADER_SIZE)[0] if page1 else self.db_size
        for p in range(self.db_size + 1, size + 1):  # grown: every page of the new size is in the result
            if p not in written:
                written[p] = side.read_page(p) or bytes(ps)
        return SideResult(written, size, self.gen)

    def close(self) -> None:
        if self.sc is not None:
            self.sc.close()
            self.sc = None
        self.side.close()
        remove(self.replica)


def run(replica: str, page_size: int, db_size: int, page_of: Callable[[int], bytes], *,
        client_id: str, staged: Staged, on_conflict: Optional[rebase.OnConflict],
        replay_path: str, local: bool = False) -> SideView:
    """A view with ``replay_path`` replayed on it (the caller closes it); ``local``: every
    page of the replica is stored (tables' tails start at once: pull_end.replay)."""
    view = SideView(replica, page_size, db_size, page_of)
    try:
        view.replay(client_id=client_id, staged=staged, on_conflict=on_conflict, replay_path=replay_path,
                    local=local)
    except BaseException:
        view.close()
        raise
    return view
