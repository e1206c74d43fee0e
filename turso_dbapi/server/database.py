"""The database a reference server serves: SQLite connections plus its page-version log.

Clients' SQL runs on Hrana streams (``streams``), each its own connection to the file, so
one client's transaction lives between its requests while others read and write (SQLite's
locking, with a busy timeout). The database runs in WAL mode with auto-checkpoint off on
every connection, so every commit lands in the WAL. After each stream's turn (and before
each pull) the server's own connection ``capture``s: it indexes the committed WAL frames
(``wal.parse_wal``, checksums verified like SQLite's recovery) and appends the newest images
of the pages written since the last capture to the log as one revision, with the size the
WAL's last commit records. Frames up to a commit frame are a committed state however far
other writers have got, so capturing needs no write lock. Then it tries a TRUNCATE
checkpoint; if a reader blocks it, nothing is lost: the WAL is simply indexed again next
time, from where the last capture stopped.

Commits by other processes are seen through ``PRAGMA data_version``; if the database file
itself changed since our last look (another process checkpointed our WAL away, or the
server was down) every page is compared with the log instead. A crash between a commit
and its log append is repaired the same way on the next start.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from typing import Any, Dict, Optional, Tuple

from ..protocol import revision
from ..protocol.sync_wire import PAGE_SIZE
from .describe import Describer
from .page_log import PageLog, default_log_path
from .pipeline import Executor
from .streams import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STREAMS, StreamRegistry
from .sql_series import has_native_series, rewrite
from .wal import WalFormatError, WalScan, parse_wal

# PRAGMAs a client must not run on the served connection: they would stop the WAL from
# recording every change (the log would silently miss revisions).
_FORBIDDEN_PRAGMAS = {"journal_mode", "wal_autocheckpoint", "locking_mode", "wal_checkpoint"}
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a statement waits for another stream's write lock


def authorize_client(action: int, arg1: Any, arg2: Any, dbname: Any, source: Any) -> int:
    """The SQLite authorizer of every connection that runs clients' SQL."""
    if action == sqlite3.SQLITE_ATTACH and arg1 not in ("", ":memory:", None):
        # ATTACH / VACUUM INTO would read or write other files; plain VACUUM attaches a
        # nameless temporary database, which stays allowed.
        return sqlite3.SQLITE_DENY
    if action != sqlite3.SQLITE_PRAGMA or not arg1:
        return sqlite3.SQLITE_OK
    name = arg1.lower()
    if name in _FORBIDDEN_PRAGMAS and (arg2 is not None or name == "wal_checkpoint"):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class ServedDatabase:
    def __init__(
        self,
        db_path: str,
        log_path: Optional[str] = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_streams: int = DEFAULT_MAX_STREAMS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        self.db_path = os.fspath(db_path)
        self.wal_path = self.db_path + "-wal"
        self.lock = threading.RLock()
        self._changed = threading.Condition()
        _check_page_size(self.db_path)
        self.conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        self.conn.text_factory = lambda b: b.decode("utf-8", "replace")
        self.conn.execute("PRAGMA page_size=4096")  # only takes effect on a new database
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.log = PageLog(log_path or default_log_path(self.db_path))
        self._rewrite = None if has_native_series(self.conn) else rewrite
        self.busy_timeout = busy_timeout
        self._file = open(self.db_path, "rb")  # noqa: SIM115 - kept for pread until close()
        # Holds a read snapshot through each capture: see _capture.
        self._pin = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        # One authorizer for the connection's lifetime (set_authorizer(None) is 3.11+); our
        # own maintenance statements run with ``_internal`` set.
        self._internal = False
        self.conn.set_authorizer(self._authorize)
        self._harvested: Optional[Tuple[int, int]] = None  # salts of the WAL indexed so far
        self._harvested_frames = 0
        self._data_version = -1
        self._file_stat: Optional[Tuple[int, int, int]] = None
        with self.lock:
            self._enable_wal()
            self._capture(full=True)  # changes made while the server was down
        self.describer = Describer(self.db_path)
        self.streams = StreamRegistry(
            self.new_executor, self.refresh_after_write, idle_timeout, max_streams
        )

    # ------------------------------------------------------------------ public

    @property
    def revision(self) -> int:
        return self.log.latest

    @property
    def revision_text(self) -> str:
        """The latest revision as the protocol names it: unique across a reset of the page
        log (``protocol/revision.py``)."""
        return revision.mint(self.log.instance, self.log.latest)

    def new_executor(self) -> Executor:
        """A fresh connection for one Hrana stream."""
        conn = sqlite3.connect(
            self.db_path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout
        )
        try:
            conn.text_factory = lambda b: b.decode("utf-8", "replace")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # only the capture checkpoints
            conn.execute("PRAGMA journal_size_limit=4194304")  # a restarted WAL shrinks back
            conn.set_authorizer(authorize_client)
        except BaseException:
            conn.close()
            raise
        return Executor(conn, self.describer, self._rewrite)

    def run_pipeline(self, body: Any) -> Dict[str, Any]:
        """Run pipeline requests on a one-off stream (closed at the end, rolling back)."""
        stream = self.streams.acquire(None)
        try:
            results = [stream.executor.handle(r) for r in body.get("requests", [])]
        finally:
            stream.executor.closed = True
            self.streams.release(stream)
        return {"baton": None, "base_url": None, "results": results}

    def refresh_after_write(self) -> None:
        """Log what a stream may have committed (cheap when nothing changed)."""
        with self.lock:
            if self._internal_sql("PRAGMA data_version")[0] != self._data_version:
                self._capture()

    def close(self) -> None:
        self.streams.close()
        self.describer.close()
        with self.lock:
            try:
                self._pin.close()
                self.conn.close()
            finally:
                self._file.close()
                self.log.close()

    # ------------------------------------------------------------------ internals

    def _internal_sql(self, sql: str) -> Any:
        self._internal = True
        try:
            return self.conn.execute(sql).fetchone()
        finally:
            self._internal = False

    def _authorize(self, action: int, arg1: Any, arg2: Any, dbname: Any, source: Any) -> int:
        if self._internal:
            return sqlite3.SQLITE_OK
        return authorize_client(action, arg1, arg2, dbname, source)

    def _enable_wal(self) -> None:
        mode = self._internal_sql("PRAGMA journal_mode=WAL")[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"could not switch {self.db_path} to WAL mode (got {mode})")
        self._internal_sql("PRAGMA wal_autocheckpoint=0")
        self._try_checkpoint()

    def _try_checkpoint(self) -> bool:
        """TRUNCATE checkpoint; False when another connection blocked it (harmless)."""
        # TRUNCATE waits for readers through the busy handler: never stall a request on
        # someone else's long read; the next capture simply tries again.
        timeout = self._internal_sql("PRAGMA busy_timeout")[0]
        self._internal_sql("PRAGMA busy_timeout=0")
        try:
            busy, _, _ = self._internal_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._internal_sql(f"PRAGMA busy_timeout={int(timeout)}")
        if not busy:
            self._harvested = None  # the WAL is empty: the next one starts afresh
        return not busy

    def _pread(self, size: int, offset: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(self._file.fileno(), size, offset)
        self._file.seek(offset)  # Windows: callers hold ``lock``, so seek+read is safe
        return self._file.read(size)

    def wait_for_revision(self, after: int, timeout: float) -> int:
        """Block until the latest revision is newer than ``after`` (long poll) or timeout."""
        with self._changed:
            self._changed.wait_for(lambda: self.log.latest > after, timeout)
            return self.log.latest

    def refresh(self) -> None:
        """Log commits made by other processes, if any (cheap when there are none)."""
        if not self.lock.acquire(blocking=False):
            return  # a pipeline request is running; it captures everything when it ends
        try:
            if self._internal_sql("PRAGMA data_version")[0] != self._data_version:
                self._capture()
        finally:
            self.lock.release()

    def _is_blank(self) -> bool:
        user_version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        objects = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        return not objects and not user_version

    def _scan_wal(self) -> Tuple[bytes, Optional[WalScan]]:
        try:
            with open(self.wal_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return b"", None
        try:
            scan = parse_wal(data)
        except WalFormatError:
            return data, None  # empty or not yet initialised: no committed frames
        if scan.page_size != PAGE_SIZE:
            raise RuntimeError(f"unexpected page size in {self.wal_path}")
        return data, scan

    def _stat(self) -> Tuple[int, int, int]:
        st = os.stat(self.db_path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _capture(self, full: bool = False) -> None:
        """Turn whatever was committed since the last capture into a new log revision."""
        if self.conn.in_transaction:
            self.conn.rollback()
        # The pin's read snapshot P keeps every frame past P out of the database file and
        # the WAL from restarting until our passive checkpoint below is done: a checkpoint
        # backfills at most P, we harvest at least P, and a writer restarts the WAL only
        # once all of it is backfilled — so no committed frame leaves the WAL unharvested.
        pin = self._pin
        pin.execute("BEGIN")
        try:
            pin.execute("SELECT count(*) FROM sqlite_master").fetchone()
            version = self._internal_sql("PRAGMA data_version")[0]
            # Only our own checkpoints write the database file; any other change means the
            # WAL no longer tells everything: compare every page.
            full = full or self._stat() != self._file_stat
            data, scan = self._scan_wal()
            if scan is not None and scan.frames:
                db_size = scan.db_size  # the size at the WAL's last commit, like its frames
            else:
                db_size = pin.execute("PRAGMA page_count").fetchone()[0]

            def current(pgno: int) -> bytes:
                page = scan.page(data, pgno) if scan is not None else None
                if page is None:
                    page = self._pread(PAGE_SIZE, (pgno - 1) * PAGE_SIZE).ljust(PAGE_SIZE, b"\0")
                return page

            old_size = self.log.latest_db_size
            pages: Dict[int, bytes] = {}
            if self.log.latest == 0:
                if not self._is_blank():  # an empty database stays revision 0, db_size 0
                    pages = {p: current(p) for p in range(1, db_size + 1)}
            elif full:
                for p in range(1, db_size + 1):
                    page = current(p)
                    if self.log.latest_page(p) != page:
                        pages[p] = page
            else:
                first = 0
                if scan is not None and self._harvested == (scan.salt1, scan.salt2):
                    first = self._harvested_frames
                written = {pgno for pgno, _, _ in scan.frames[first:]} if scan else set()
                written |= set(range(old_size + 1, db_size + 1))  # growth is always logged
                pages = {p: current(p) for p in written if p <= db_size}
            self._data_version = version
            if scan is not None:
                self._harvested = (scan.salt1, scan.salt2)
                self._harvested_frames = len(scan.frames)
            if pages or (db_size != old_size and self.log.latest):
                self.log.append(pages, db_size)
                with self._changed:
                    self._changed.notify_all()
            self._internal_sql("PRAGMA wal_checkpoint(PASSIVE)")
            self._file_stat = self._stat()
        finally:
            pin.execute("COMMIT")
        if self._try_checkpoint():
            self._file_stat = self._stat()
            # A commit that slipped in after the harvest went into the file and its frames
            # were truncated away: only a full comparison finds its pages.
            if self._internal_sql("PRAGMA data_version")[0] != version and not full:
                self._capture(full=True)


def _check_page_size(path: str) -> None:
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return
    if len(header) < 100:
        if header:
            raise ValueError(f"{path} is not a SQLite database (truncated header)")
        return
    if not header.startswith(b"SQLite format 3\0"):
        raise ValueError(f"{path} is not a SQLite database")
    (raw,) = struct.unpack(">H", header[16:18])
    size = 65536 if raw == 1 else raw
    if size != PAGE_SIZE:
        raise ValueError(
            f"{path} uses {size}-byte pages; the Turso sync protocol needs 4096. Convert it with "
            "sqlite3: PRAGMA journal_mode=DELETE; PRAGMA page_size=4096; VACUUM;"
        )
