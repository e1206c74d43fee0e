"""The database a reference server serves: one SQLite connection plus its page-version log.

Writes arrive through `/v2/pipeline` on the single shared connection (serialised by
``lock``). The database runs in WAL mode with auto-checkpoint off, so after each request
the WAL holds exactly the frames that request committed: their page numbers are read
from the frame headers, the WAL is checkpointed (TRUNCATE) into the file, and the new
images of those pages are read back from the file and appended to the log as one
revision. On start the file is compared with the log, so changes made while the server
was down (or a crash between checkpoint and log append) become a revision too.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from typing import Any, Dict, Optional, Set

from .hrana import Pipeline
from .page_log import PAGE_SIZE, PageLog, default_log_path
from .sql_series import has_native_series, rewrite

_WAL_HEADER = 32
_FRAME_HEADER = 24
_WAL_MAGICS = (0x377F0682, 0x377F0683)

# PRAGMAs a client must not run on the served connection: they would stop the WAL from
# recording every change (the log would silently miss revisions).
_FORBIDDEN_PRAGMAS = {"journal_mode", "wal_autocheckpoint", "locking_mode", "wal_checkpoint"}


class ServedDatabase:
    def __init__(self, db_path: str, log_path: Optional[str] = None) -> None:
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
        native = has_native_series(self.conn)
        self.pipeline = Pipeline(self.conn, rewrite_sql=None if native else rewrite)
        self._file = open(self.db_path, "rb")  # noqa: SIM115 - kept for pread until close()
        # One authorizer for the connection's lifetime (set_authorizer(None) is 3.11+); our
        # own maintenance statements run with ``_internal`` set.
        self._internal = False
        self.conn.set_authorizer(self._authorize)
        with self.lock:
            self._enable_wal()
            self._reconcile()

    # ------------------------------------------------------------------ public

    @property
    def revision(self) -> int:
        return self.log.latest

    def run_pipeline(self, body: Any) -> Dict[str, Any]:
        with self.lock:
            try:
                return self.pipeline.run(body)
            finally:
                self._capture()

    def read_file(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the current database file (call with ``lock`` held)."""
        return self._pread(end - start, start) if end > start else b""

    def file_size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def close(self) -> None:
        with self.lock:
            try:
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

    def _enable_wal(self) -> None:
        mode = self._internal_sql("PRAGMA journal_mode=WAL")[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"could not switch {self.db_path} to WAL mode (got {mode})")
        self._internal_sql("PRAGMA wal_autocheckpoint=0")
        self._checkpoint()

    def _checkpoint(self) -> None:
        busy, _, _ = self._internal_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        if busy:
            raise RuntimeError("WAL checkpoint was blocked; is another process using the database?")

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

    def _db_size(self) -> int:
        return self.conn.execute("PRAGMA page_count").fetchone()[0]

    def _is_blank(self) -> bool:
        user_version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        objects = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        return not objects and not user_version

    def _read_page(self, pgno: int) -> bytes:
        page = self._pread(PAGE_SIZE, (pgno - 1) * PAGE_SIZE)
        return page.ljust(PAGE_SIZE, b"\0")

    def _committed_wal_pages(self) -> Set[int]:
        """Page numbers written by committed frames of the current WAL."""
        try:
            f = open(self.wal_path, "rb")
        except FileNotFoundError:
            return set()
        with f:
            header = f.read(_WAL_HEADER)
            if len(header) < _WAL_HEADER:
                return set()
            magic, _, page_size, _, salt1, salt2 = struct.unpack(">6I", header[:24])
            if magic not in _WAL_MAGICS or page_size != PAGE_SIZE:
                raise RuntimeError(f"unexpected WAL header in {self.wal_path}")
            committed: Set[int] = set()
            pending: Set[int] = set()
            offset = _WAL_HEADER
            while True:
                f.seek(offset)
                fh = f.read(_FRAME_HEADER)
                if len(fh) < _FRAME_HEADER:
                    break
                pgno, commit_size, s1, s2 = struct.unpack(">4I", fh[:16])
                if (s1, s2) != (salt1, salt2):
                    break  # stale frame from an earlier WAL generation
                pending.add(pgno)
                if commit_size:
                    committed |= pending
                    pending = set()
                offset += _FRAME_HEADER + PAGE_SIZE
            # Frames after the last commit frame are a rolled-back spill: not committed.
            return committed

    def _capture(self) -> None:
        """Turn whatever the last request committed into a new log revision."""
        if self.conn.in_transaction:
            self.conn.rollback()
        changed = self._committed_wal_pages()
        self._checkpoint()
        db_size = self._db_size()
        old_size = self.log.latest_db_size
        if not changed and (db_size == old_size or old_size == 0):
            return  # (switching an empty file to WAL writes page 1: not a change)
        if old_size == 0:
            changed = set(range(1, db_size + 1))
        else:
            changed |= set(range(old_size + 1, db_size + 1))  # growth is always logged
        pages = {p: self._read_page(p) for p in changed if p <= db_size}
        self.log.append(pages, db_size)
        with self._changed:
            self._changed.notify_all()

    def _reconcile(self) -> None:
        """Log the difference between the file and the log's latest revision, if any."""
        db_size = self._db_size()
        if self.log.latest == 0 and self._is_blank():
            return  # an empty database stays revision 0 with db_size 0
        if self.log.latest == 0:
            changed = {p: self._read_page(p) for p in range(1, db_size + 1)}
        else:
            changed = {}
            for p in range(1, db_size + 1):
                page = self._read_page(p)
                if self.log.latest_page(p) != page:
                    changed[p] = page
        if changed or db_size != self.log.latest_db_size:
            self.log.append(changed, db_size)


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
