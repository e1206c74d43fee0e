"""``pull()`` and ``follow`` for HTTP-range caches: a live database followed coherently.

The network half is ``LiveSource.observe`` (sources/live.py: what changed, with the
proof of why the new state is one the writer committed). This module applies it with the
old-or-new switch Turso replicas use (sync/apply.py): the replica is in rollback-journal
mode (page 1 is served with bytes 18/19 = 1), so every connection compares the change
counter (offset 24) at the start of each read transaction and drops its page cache when
it moved. The apply:

1. no lock held while the network is used (``observe``);
2. an internal connection takes ``BEGIN EXCLUSIVE`` through SQLite (waits for the
   connection's own statements to end; on timeout nothing changes);
3. the source switches to the observed state, and the store follows: the pages of new WAL
   frames are overwritten with their images ("grew"), or every cached page is dropped
   and the trusted leading pages are stored ("new": another WAL generation or another
   version of the file); the size becomes the new one; page 1 is stored last with a
   change counter one higher;
4. ROLLBACK releases the lock (nothing was written through SQLite).

A live cache belongs to one connection (an exclusive lock file, ``-tdblive``; another
connection of any process on the same path gets a private cache that is removed when it
closes): pages are never switched under a second connection whose source still follows
the old state. After a pull the cache's metadata no longer names the version it was
created for, so a later connect starts a fresh cache (the old one cannot prove which
state its pages belong to). A process that dies in step 3 leaves the same mark first.

``follow=<ms>``: at the start of each read transaction (a statement outside a
transaction) the connection pulls when the last check is older than that; ``stale`` (a
change was seen in the middle of a transaction) pulls at the next one regardless. Either
way a busy lock skips the pull: the next statement tries again.

(X) The connection keeps its lock between transactions (``PRAGMA locking_mode=EXCLUSIVE``,
``hold_lock``): the cache belongs to it alone (``claim_live``), and only ``apply`` changes
its pages, so SQLite's per-transaction work in rollback-journal mode (SHARED lock and
unlock, hot-journal check, change-counter read: a warm point select cost 1.58x sqlite3 on
a WAL copy) is not needed between pulls. ``apply`` lets go first (NORMAL, then a statement
that reads page 1's header ends the lock) and takes it back after the switch; the next
read transaction then reads the new change counter and drops SQLite's page cache. It runs
on the connection, so a connection made with ``check_same_thread=True`` pulls in its own
thread (as ``follow`` does): from another one, ``pull()`` says so.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import sqlite3
import threading
import time
import weakref
from typing import Any, Callable, Dict, Optional

from .._util.atomic import read_json, write_json_atomic
from ..errors import OperationalError
from ..sources.live import LiveSource, Observation
from ..storage import files, pagestore
from ..storage.vfs import replica_uri
from .base import RemoteCursor, remote_class

LIVE_LOCK = "-tdblive"  # flock held by the one connection following a cache
LOCK_TIMEOUT = 5.0  # seconds pull() waits for the connection's own statements
_private = itertools.count(1)


def claim_live(path: str) -> tuple:
    """(path, lock fd, private?): the cache at ``path`` if no other connection follows
    it, else a private one beside it (removed at close)."""
    fd = os.open(path + LIVE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return path, fd, False
    except OSError:
        os.close(fd)
    private = f"{path}-p{os.getpid()}-{next(_private)}"
    fd = os.open(private + LIVE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return private, fd, True


def mark_pulled(store: pagestore.PageStore) -> None:
    """The cache no longer holds the version its metadata names: a later open starts over."""
    path = store.path + files.CACHE_META
    meta = read_json(path) or {}
    meta["identity"] = "pulled"
    write_json_atomic(path, meta)


def hold_lock(conn: sqlite3.Connection) -> None:
    """(X) The connection keeps its lock from its next statement on."""
    sqlite3.Connection.execute(conn, "PRAGMA locking_mode=EXCLUSIVE").fetchall()


def _let_go(conn: sqlite3.Connection, url: str) -> None:
    """(X) End the lock ``conn`` keeps (unless a transaction or statement of it runs: then
    the apply's lock waits, as before)."""
    try:
        sqlite3.Connection.execute(conn, "PRAGMA locking_mode=NORMAL").fetchall()
        sqlite3.Connection.execute(conn, "PRAGMA schema_version").fetchall()  # page 1: unlocks after
    except sqlite3.ProgrammingError as exc:  # another thread (check_same_thread), or closed
        raise OperationalError(
            f"pull from {url}: the connection keeps the cache's lock between statements and "
            f"only its own thread can release it ({exc}); pull in that thread, or connect with "
            "check_same_thread=False. Nothing was changed") from None


def apply(replica: Any, obs: Observation, timeout: float) -> bool:
    """Steps 2-4 of the module docstring; True when the state changed."""
    if not obs.changed:
        with replica.source._lock:
            replica.source.stale = False
        return False
    conn = replica.holder()
    if conn is None:
        return _apply(replica, obs, timeout)
    _let_go(conn, replica.source.display_url)  # (X)
    try:
        return _apply(replica, obs, timeout)
    finally:
        hold_lock(conn)


def _apply(replica: Any, obs: Observation, timeout: float) -> bool:
    store: pagestore.PageStore = replica.store
    source: LiveSource = replica.source
    if obs.db_state is not None and obs.db_state[2] != store.page_size:
        raise OperationalError(
            f"pull from {source.display_url}: the page size changed ({store.page_size} -> "
            f"{obs.db_state[2]}); connect again to read the new database")
    ic = sqlite3.connect(replica_uri(store.path, replica.conn_id), uri=True, timeout=timeout,
                         isolation_level=None, check_same_thread=False)
    try:
        ic.execute("PRAGMA journal_mode=MEMORY")  # never a journal file a later open takes for hot
        try:
            ic.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            raise OperationalError(
                f"pull from {source.display_url}: could not lock the replica within {timeout:g} s "
                f"({exc}): a statement of this connection is still running (an unfinished "
                "cursor?). Nothing was changed; finish it and pull again") from None
        try:
            local = store.first_local(1)
            if local:
                raise OperationalError(
                    f"pull from {source.display_url}: the cache {store.path} has local changes "
                    f"(page {local}...), which a new remote state would overwrite; nothing was changed")
            mark_pulled(store)
            _switch(store, source, obs)
        finally:
            ic.execute("ROLLBACK")
    finally:
        ic.close()
    return True


def _switch(store: pagestore.PageStore, source: LiveSource, obs: Observation) -> None:
    old_pages = store.remote_pages
    changed = source.install(obs)
    new_pages = source.n_pages
    if obs.kind == "new":  # P2: what the old frames prove stays, the rest is dropped
        stale = obs.stale_pages if obs.stale_pages is not None else range(2, old_pages + 1)
        for p in stale:
            if 1 < p <= old_pages:
                store.drop_synced(p)
        for p in range(new_pages + 1, old_pages + 1):
            store.drop_synced(p)
    else:
        for p in range(new_pages + 1, old_pages + 1):
            store.drop_synced(p)
    store.set_remote_size(source.size)
    page1: Optional[bytes] = None
    if obs.kind == "new":
        lead = source.leading_pages(obs)
        ps = store.page_size
        for i in range(1, min(len(lead) // ps, new_pages)):
            store.put_synced(i + 1, lead[i * ps:(i + 1) * ps], overwrite=True)
        page1 = lead[:ps] if len(lead) >= ps else None
        if page1 is None:
            store.drop_synced(1)  # fetched again (patched with the new counter) on first use
    else:
        wal = source.wal
        assert wal is not None
        for p in changed:
            if p != 1 and p <= new_pages:
                store.put_synced(p, wal.page(p) or b"", overwrite=True)
        image = wal.page(1) if 1 in changed else store.read_page(1)
        page1 = source.patch_page1(image) if image is not None else None
    if page1 is not None:
        store.put_synced(1, page1, overwrite=True)  # last: the switch readers look at
    store.sync()


class LiveReplica:
    """Mixin for ``range_cache.Replica``: pull(), follow and the stale switch."""

    source: LiveSource
    store: pagestore.PageStore

    def _live_init(self, follow_ms: Optional[int], lock_fd: int, private: bool) -> None:
        self.follow_ms = follow_ms
        self._lock_fd = lock_fd
        self._private = private
        self._last_check = time.monotonic()
        self._pull_lock = threading.Lock()
        self._holder: Optional[Callable[[], Optional[sqlite3.Connection]]] = None
        self._clear_mark: Callable[[], Any] = lambda: None

    def keep_lock(self, conn: sqlite3.Connection) -> None:
        """(X) ``conn`` (this cache's one connection) keeps its lock between statements:
        only a connection of the live class, whose statements call ``before_read`` (that
        clears the "Python failed" mark SQLite's per-transaction xLock no longer clears:
        vfs.c rule (14))."""
        if not isinstance(conn, _LiveMixin):
            return
        from .._native import lib

        try:
            hold_lock(conn)
        except sqlite3.ProgrammingError:
            return  # a factory whose __init__ skipped the base: no statement runs on it
        self._clear_mark = lib.tdb_take_py_failure
        self._holder = weakref.ref(conn)

    def holder(self) -> Optional[sqlite3.Connection]:
        return self._holder() if self._holder is not None else None

    def pull(self, timeout: float = LOCK_TIMEOUT) -> bool:
        """Bring the cache to the remote's current state; True when something changed."""
        with self._pull_lock:
            obs = self.source.observe()
            self._last_check = time.monotonic()
            return apply(self, obs, timeout)

    def before_read(self) -> None:
        """Called before a statement outside a transaction (follow, stale)."""
        if self._holder is not None:
            self._clear_mark()  # (X) what xLock(SHARED) did at each read transaction (vfs.c (14))
        due = self.source.stale
        if not due and self.follow_ms is not None:
            due = (time.monotonic() - self._last_check) * 1000 >= self.follow_ms
        if not due:
            return
        try:
            self.pull(timeout=0.0)
        except OperationalError:
            self._last_check = time.monotonic()  # busy or unreachable: the statement reads what it has

    def _live_close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self._private and self.store.closed:
            files.remove_store_files(self.store.path)
            try:
                os.remove(self.store.path + LIVE_LOCK)
            except FileNotFoundError:
                pass


class LiveCursor(RemoteCursor):
    """Cursors of live connections: a statement outside a transaction may pull first."""

    __slots__ = ()

    def execute(self, sql: str, parameters: Any = ()):  # type: ignore[override]
        conn = self.connection
        if not conn.in_transaction:
            conn._replica.before_read()
        return RemoteCursor.execute(self, sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any):  # type: ignore[override]
        conn = self.connection
        if not conn.in_transaction:
            conn._replica.before_read()
        return RemoteCursor.executemany(self, sql, seq_of_parameters)

    def executescript(self, sql_script: str):  # type: ignore[override]
        conn = self.connection
        if not conn.in_transaction:
            conn._replica.before_read()
        return RemoteCursor.executescript(self, sql_script)


class _LiveMixin:
    def execute(self, sql: str, parameters: Any = ()):  # type: ignore[override]
        if not self.in_transaction:  # type: ignore[attr-defined]
            self._replica.before_read()  # type: ignore[attr-defined]
        return super().execute(sql, parameters)  # type: ignore[misc]


_classes: Dict[type, type] = {}
_classes_lock = threading.Lock()


def live_class(factory: type) -> type:
    """The remote class of ``factory`` with the live statement hook (cursors too); cached."""
    base = remote_class(factory, LiveCursor, "Live")
    with _classes_lock:
        cls = _classes.get(base)
        if cls is None:
            cls = _classes[base] = type(base.__name__, (_LiveMixin, base), {})
        return cls
