"""Append-only page-version log: every page image the server ever handed out, by revision.

The sync protocol needs time travel: a partial replica fetches missing pages at its
*bootstrap* revision forever (spec §2.5, §2.6). So each revision records the pages it
changed and the database size, in a sidecar SQLite file:

* ``revisions(rev, db_size)`` — revision numbers are 1, 2, 3, …; revision 0 is the empty
  database (db_size 0) and is implicit;
* ``versions(id, pgno, rev, data)`` with a unique index on ``(pgno, rev)``, so "newest
  version of page p as of revision r" is one index seek, never a scan of history, and an
  index on ``(rev, pgno)`` for "pages changed in (r_c, r_s]".

Rows are never updated or deleted, so readers need no lock: anything at or below a
revision they were told about is already committed. One writer (the server, under its
lock) appends; readers use pooled connections.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from bisect import bisect_right
from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..protocol.sync_wire import PAGE_SIZE

ZERO_PAGE = bytes(PAGE_SIZE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revisions(rev INTEGER PRIMARY KEY, db_size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS versions(
    id INTEGER PRIMARY KEY, pgno INTEGER NOT NULL, rev INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS versions_by_page ON versions(pgno, rev);
CREATE INDEX IF NOT EXISTS versions_by_rev ON versions(rev, pgno);
CREATE TABLE IF NOT EXISTS generations(gen INTEGER PRIMARY KEY, base_rev INTEGER NOT NULL);
INSERT OR IGNORE INTO generations VALUES (1, 0);
"""

# Newest version of one page in (r_c, r_s]: a single seek in versions_by_page.
SEEK_SQL = (
    "SELECT id FROM versions WHERE pgno = ? AND rev > ? AND rev <= ? ORDER BY rev DESC LIMIT 1"
)
# Every page changed in (r_c, r_s]: a range of versions_by_rev, proportional to the changes.
CHANGED_SQL = (
    "SELECT pgno, id, max(rev) FROM versions WHERE rev > ? AND rev <= ? GROUP BY pgno ORDER BY pgno"
)

# Above this many selected pages an incremental plan scans the revision range once
# instead of seeking per page.
_SEEK_LIMIT = 4096
_READ_CHUNK = 256

Ranges = Sequence[Tuple[int, int]]  # half-open page-id ranges, sorted, disjoint
Plan = List[Tuple[int, Optional[int]]]  # (page_id, versions.id or None for "never written")


class PageLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        row = self._writer.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
        if row is None:
            self.instance = uuid.uuid4().hex[:16]
            self._writer.execute("INSERT INTO meta VALUES ('instance', ?)", (self.instance,))
        else:
            self.instance = row[0]
        last = self._writer.execute(
            "SELECT rev, db_size FROM revisions ORDER BY rev DESC LIMIT 1"
        ).fetchone()
        self.latest, self.latest_db_size = (last[0], last[1]) if last else (0, 0)
        self._pool: List[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._pool_lock:
                self._pool.append(conn)

    def close(self) -> None:
        with self._pool_lock:
            for conn in self._pool:
                conn.close()
            self._pool.clear()
        self._writer.close()

    # ------------------------------------------------------------------ writing

    def append(self, pages: Mapping[int, bytes], db_size: int) -> int:
        """Record a new revision (pgno -> page image, 1-based) and return its number."""
        rev = self.latest + 1
        w = self._writer
        w.execute("BEGIN IMMEDIATE")
        try:
            w.execute("INSERT INTO revisions(rev, db_size) VALUES (?, ?)", (rev, db_size))
            w.executemany(
                "INSERT INTO versions(pgno, rev, data) VALUES (?, ?, ?)",
                ((pgno, rev, data) for pgno, data in sorted(pages.items())),
            )
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise
        # Publish only after the commit: readers never see a revision before its pages.
        self.latest, self.latest_db_size = rev, db_size
        return rev

    def latest_page(self, pgno: int) -> Optional[bytes]:
        row = self._writer.execute(
            "SELECT data FROM versions WHERE pgno = ? ORDER BY rev DESC LIMIT 1", (pgno,)
        ).fetchone()
        return row[0] if row else None

    def add_generation(self, base_rev: int) -> int:
        """Start a libSQL generation at ``base_rev`` (see ``libsql_sync``); its number."""
        cur = self._writer.execute(
            "INSERT INTO generations(gen, base_rev) "
            "SELECT max(gen) + 1, ? FROM generations", (base_rev,)
        )
        return cur.lastrowid

    # ------------------------------------------------------------------ reading

    def generations(self) -> List[int]:
        """Base revision of each libSQL generation: generation g starts at ``[g - 1]``."""
        with self.reader() as conn:
            return [r[0] for r in conn.execute("SELECT base_rev FROM generations ORDER BY gen")]

    def pages_per_revision(self, after: int, upto: int) -> List[Tuple[int, int]]:
        """``(rev, pages written)`` for every revision in ``(after, upto]``, in order."""
        with self.reader() as conn:
            counts = dict(conn.execute(
                "SELECT rev, count(*) FROM versions WHERE rev > ? AND rev <= ? GROUP BY rev",
                (after, upto),
            ))
        return [(r, counts.get(r, 0)) for r in range(after + 1, upto + 1)]

    def revision_pages(self, rev: int) -> List[Tuple[int, int]]:
        """``(pgno, version id)`` of the pages written by ``rev``, by page number."""
        with self.reader() as conn:
            return conn.execute(
                "SELECT pgno, id FROM versions WHERE rev = ? ORDER BY pgno", (rev,)
            ).fetchall()

    def version_at(self, pgno: int, rev: int) -> Optional[int]:
        """Version id of ``pgno`` as of ``rev`` (None: never written by then)."""
        with self.reader() as conn:
            row = conn.execute(SEEK_SQL, (pgno, 0, rev)).fetchone()
        return row[0] if row else None

    def read_versions(self, ids: Sequence[int]) -> Dict[int, bytes]:
        with self.reader() as conn:
            out: Dict[int, bytes] = {}
            for i in range(0, len(ids), _READ_CHUNK):
                chunk = list(ids[i : i + _READ_CHUNK])
                marks = ",".join("?" * len(chunk))
                out.update(conn.execute(
                    f"SELECT id, data FROM versions WHERE id IN ({marks})", chunk
                ))
            return out

    def version_count(self) -> int:
        with self.reader() as conn:
            return conn.execute("SELECT count(*) FROM versions").fetchone()[0]

    def db_size_at(self, rev: int, conn: Optional[sqlite3.Connection] = None) -> int:
        if rev <= 0:
            return 0
        c = conn or self._writer
        row = c.execute(
            "SELECT db_size FROM revisions WHERE rev <= ? ORDER BY rev DESC LIMIT 1", (rev,)
        ).fetchone()
        return row[0] if row else 0

    def plan(
        self, client_rev: int, server_rev: int, selector: Optional[Ranges]
    ) -> Tuple[int, Plan]:
        """``(db_size at server_rev, [(page_id, version id)])`` for a pull-updates answer.

        Pages changed in ``(client_rev, server_rev]`` at their newest version as of
        ``server_rev``, restricted to ``selector`` (None = all pages) and to ids below
        the database size at ``server_rev``. With ``client_rev == 0`` every page exists
        in that range, so every selected page below db_size is answered.
        """
        with self.reader() as conn:
            db_size = self.db_size_at(server_rev, conn)
            wanted = _clip(selector, db_size) if selector is not None else [(0, db_size)]
            count = sum(b - a for a, b in wanted)
            plan: Plan = []
            if client_rev <= 0 or (selector is not None and count <= _SEEK_LIMIT):
                seek = conn.execute  # one index seek per page: cost independent of history
                sql = SEEK_SQL
                for a, b in wanted:
                    for page_id in range(a, b):
                        row = seek(sql, (page_id + 1, client_rev, server_rev)).fetchone()
                        if row is not None:
                            plan.append((page_id, row[0]))
                        elif client_rev <= 0:
                            plan.append((page_id, None))  # never omit an existing page
            else:
                rows = conn.execute(CHANGED_SQL, (client_rev, server_rev)).fetchall()
                starts = [a for a, _ in wanted]
                for pgno, vid, _ in rows:
                    page_id = pgno - 1
                    i = bisect_right(starts, page_id) - 1
                    if i >= 0 and page_id < wanted[i][1]:
                        plan.append((page_id, vid))
        return db_size, plan

    def read(self, plan: Plan) -> Iterator[Tuple[int, bytes]]:
        """Yield ``(page_id, page)`` in plan order, fetching blobs in chunks."""
        with self.reader() as conn:
            for i in range(0, len(plan), _READ_CHUNK):
                chunk = plan[i : i + _READ_CHUNK]
                ids = [vid for _, vid in chunk if vid is not None]
                found: Dict[int, bytes] = {}
                if ids:
                    marks = ",".join("?" * len(ids))
                    found = dict(
                        conn.execute(f"SELECT id, data FROM versions WHERE id IN ({marks})", ids)
                    )
                for page_id, vid in chunk:
                    yield page_id, (found[vid] if vid is not None else ZERO_PAGE)


def read_bytes(log: PageLog, rev: int, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the database file as of ``rev`` (for plain range GETs)."""
    if end <= start:
        return b""
    first, last = start // PAGE_SIZE, (end + PAGE_SIZE - 1) // PAGE_SIZE
    _, plan = log.plan(0, rev, [(first, last)])
    data = b"".join(page for _, page in log.read(plan))
    return data[start - first * PAGE_SIZE : end - first * PAGE_SIZE]


def _clip(ranges: Ranges, limit: int) -> List[Tuple[int, int]]:
    return [(a, min(b, limit)) for a, b in ranges if a < limit]


def default_log_path(db_path: str) -> str:
    return os.fspath(db_path) + "-revlog"
