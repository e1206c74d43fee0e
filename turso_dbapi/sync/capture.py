"""Change capture of a Turso replica: triggers that log every changed key, in the same
local transaction as the change.

WHY TRIGGERS (measured, benchmarks/bench_sync.py; DESIGN §2.5 lists the two mechanisms).
A trigger that appends ``(table id, key)`` to a rowid table costs ~1.5x on a 100k-row bulk
insert (the log row is one more B-tree append per row; full before/after row images as
pyturso's CDC keeps them cost ~2.8x) and nothing measurable on autocommit updates (the
fsyncs of the commit dominate). Inserts above a table's frontier therefore log nothing
(tail.py: the WHEN clause compares the rowid with a constant, ~1.14x, as an empty trigger;
1.14x rollback / 1.16x WAL measured on a replica), and push logs them in bulk when it
starts (~0.16 us a row). The layer diff would cost nothing on the write path, but it
needs a read-only view of the synced layer through the VFS (C work) and a B-tree cell
parser to find candidate keys; triggers give the same net effect today, in plain SQL,
identically for every connection of every process (they live in the database file), and
they keep working in any SQLite that runs SQL triggers (no session extension, no preupdate
hooks). What is logged is the KEY only: ``push()`` and the rebase send each key's CURRENT
row (or a delete when it is gone), read in one snapshot - the net effect per row, which is
what last-writer-wins needs, at a fraction of the write cost.

OBJECTS (all named ``sqlite_tdb_*``: SQLite reserves the ``sqlite_`` prefix, so they can
only be made with ``writable_schema``, cannot be dropped by users, and every tool that
lists a schema - SQLAlchemy reflection, ``.tables``, the stdlib's ``iterdump`` for tables -
already skips them; ``iterdump`` and ``.schema`` also drop our trigger lines)::

    sqlite_tdb_log(id INTEGER PRIMARY KEY, t, k, x)        one row per changed key
    sqlite_tdb_tables(id INTEGER PRIMARY KEY, name, kind)  table id -> name, key kind
    sqlite_tdb_schema(type, name, tbl_name, sql)           the user schema as last synced
    sqlite_tdb_state(key TEXT PRIMARY KEY, value)          'gen': the local pull generation;
                                                           'f:<id>': table id's frontier (tail.py)
    sqlite_tdb_<id>_i / _u / _d                            AFTER triggers on each table (_ti / _tu /
                                                           _td: with a tail, WHEN rowid <= frontier)

TRANSACTIONS: ``x`` is the local write transaction's id on the FIRST log row of each
transaction, NULL (no bytes) on the others; push cuts batches only at those rows
(batches.py). The id comes from ``sqlite_tdb_txn``, a one-row virtual table on every
connection (_native/txn.c: the VFS gives each write transaction a fresh id when it takes
the write lock). A table, not a SQL function, and no NOT NULL on the log: any function
call or constraint that can fail inside a trigger makes SQLite open a statement journal
for every INSERT of the user (measured on a 100k-row bulk insert: a function call or a
NOT NULL cost +0.25-0.4 us a row, 1.85x instead of 1.45x; the table read +0.12 us). Rows
logged in bulk (``ensure_triggers``, a folded tail) belong to transactions nobody marked:
the first gets x = BULK and push cuts no batch before it.

Key kinds: ``alias`` (INTEGER PRIMARY KEY: the rowid is the key), ``rowid`` (no primary
key: the rowid, which pushes preserve), ``pk`` (any other primary key, WITHOUT ROWID
included: ``quote(pk1)||','||quote(pk2)...``, a SQL literal list parsed back with
``SELECT <k>``). An UPDATE logs the old key, and the new one when it differs.

Tables the triggers do not cover yet (created locally) are found by
``ensure_triggers`` at push time, which installs
their triggers and logs every row they hold in the same transaction: a row written before
its table had triggers is therefore never missed. VERSION 3 triggers of tables with a
tail have names an older version does not know: it takes such tables for uncovered ones
and logs every row, so opening a replica with an older version loses no tail. DDL itself is not logged: ``changes``
diffs the current schema against ``sqlite_tdb_schema`` (the synced schema, replaced by the
pushed one after each successful push) and sends the difference as ALTER / CREATE / DROP
statements that never drop a table to recreate it.

ALTER TABLE of a captured table goes through ddl.py (SQLite's ALTER skips triggers named
``sqlite_*``): its triggers are reinstalled under the same table id, and a rename is noted
in ``sqlite_tdb_state`` as ``rename:<new name>`` = the name it has in the synced schema, so
push sends it as a rename (changes.schema_diff) rather than a drop and a create.

The log restarts empty at each pull (it lives in the local layer the rebase sets aside);
``gen`` counts those restarts, so ``(gen, log id)`` names a change uniquely (spec §5.3).
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from typing import Dict, Iterator, List, Optional, Tuple

PREFIX = "sqlite_tdb_"
LOG = "sqlite_tdb_log"
TABLES = "sqlite_tdb_tables"
SCHEMA = "sqlite_tdb_schema"
STATE = "sqlite_tdb_state"
VERSION = 3  # of the machinery: 2 = the log has x (transaction ids) and no NOT NULL; 3 = tails
BULK = -1  # x of the first row a transaction logs in bulk: push cuts no batch before it
LOG_SQL = f"CREATE TABLE IF NOT EXISTS {LOG}(id INTEGER PRIMARY KEY, t, k, x)"
HW_TABLE = "turso_sync_last_change_id"  # the server's high-water table: never captured
_PEER_INTERNAL = ("turso_cdc", "__turso_internal")  # pyturso's own objects

WITHOUT_ROWID = re.compile(r"\)\s*WITHOUT\s+ROWID\s*(,\s*STRICT\s*)?;?\s*$", re.I)
_TRIGGER_DUMP = re.compile(r'^CREATE TRIGGER "?sqlite_tdb_', re.I)


def is_internal(name: str) -> bool:
    """Objects that are never captured, pushed or replayed."""
    low = name.lower()
    return low.startswith("sqlite_") or low == HW_TABLE or low.startswith(_PEER_INTERNAL)


def qi(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def hide_dump_line(line: str) -> bool:
    """True for lines of ``iterdump()`` that belong to the capture machinery."""
    return bool(_TRIGGER_DUMP.match(line))


# -- table shapes --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TableInfo:
    name: str
    columns: Tuple[str, ...]  # stored columns (generated ones excluded), in order
    pk: Tuple[str, ...]  # primary key columns in key order
    kind: str  # alias | rowid | pk
    rowid_name: str  # a name of the rowid not shadowed by a column
    rowid: Optional[str] = None  # SQL naming the rowid: None for WITHOUT ROWID (or every name shadowed)

    def key_expr(self, row: str) -> str:
        """SQL of this table's logged key for ``row`` (NEW or OLD) inside a trigger."""
        if self.kind == "alias":
            return f"{row}.{qi(self.pk[0])}"
        if self.kind == "rowid":
            return f"{row}.{self.rowid_name}"
        return "||','||".join(f"quote({row}.{qi(c)})" for c in self.pk)

    def key_of_rows(self) -> str:
        """SQL of the key over a plain ``SELECT ... FROM table``."""
        if self.kind == "alias":
            return qi(self.pk[0])
        if self.kind == "rowid":
            return self.rowid_name
        return "||','||".join(f"quote({qi(c)})" for c in self.pk)


def table_info(conn: sqlite3.Connection, name: str, sql: Optional[str] = None) -> Optional[TableInfo]:
    """The shape of a user table; None for virtual tables and tables that vanished."""
    if sql is None:
        row = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)).fetchone()
        if row is None:
            return None
        sql = row[0] or ""
    if sql.lstrip().upper().startswith("CREATE VIRTUAL"):
        return None
    cols = conn.execute(f"PRAGMA table_xinfo({qi(name)})").fetchall()
    if not cols:
        return None
    stored = tuple(c[1] for c in cols if c[6] == 0)  # hidden: 2/3 generated, 1 vtab
    pk = tuple(c[1] for c in sorted((c for c in cols if c[5]), key=lambda c: c[5]))
    without_rowid = bool(WITHOUT_ROWID.search(sql))
    names = {c.lower() for c in stored}
    rowid_name = next((n for n in ("rowid", "_rowid_", "oid") if n not in names), "rowid")
    rowid = None if without_rowid or rowid_name in {c[1].lower() for c in cols} else rowid_name
    if not pk:
        kind = "rowid"
    elif without_rowid:
        kind = "pk"
    elif len(pk) == 1 and _is_alias(conn, name, pk[0], cols):
        kind = "alias"
    else:
        kind = "pk"
    if kind == "alias":
        rowid = qi(pk[0])
    return TableInfo(name, stored, pk, kind, rowid_name, rowid)


def _is_alias(conn: sqlite3.Connection, table: str, col: str, cols: list) -> bool:
    decl = next(c[2] for c in cols if c[1] == col)
    if (decl or "").strip().upper() != "INTEGER":
        return False
    # "INTEGER PRIMARY KEY DESC" is no alias: it has an automatic index of origin "pk".
    return not any(ix[3] == "pk" for ix in conn.execute(f"PRAGMA index_list({qi(table)})"))


def user_tables(conn: sqlite3.Connection) -> Iterator[Tuple[str, str]]:
    """(name, sql) of the user's tables (shadow tables of virtual tables excluded)."""
    shadow = set()
    try:
        shadow = {r[1] for r in conn.execute("PRAGMA main.table_list") if r[2] == "shadow"}
    except sqlite3.OperationalError:  # SQLite < 3.37
        pass
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table' ORDER BY name"):
        if not is_internal(name) and name not in shadow:
            yield name, sql or ""


def user_schema(conn: sqlite3.Connection, source: str = "sqlite_schema") -> Dict[Tuple[str, str], Tuple[str, str]]:
    """{(type, name): (tbl_name, sql)} of the user's objects (automatic indexes excluded)."""
    out = {}
    for typ, name, tbl, sql in conn.execute(f"SELECT type, name, tbl_name, sql FROM {source}"):
        if sql is None or is_internal(name) or is_internal(tbl):
            continue
        out[(typ, name)] = (tbl, sql)
    return out


# -- the machinery -------------------------------------------------------------------------


def installed(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (LOG,)).fetchone() is not None


@dataclasses.dataclass
class Writable:
    """``PRAGMA writable_schema`` on for the block (our objects have reserved names)."""

    conn: sqlite3.Connection

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("PRAGMA writable_schema = ON")
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("PRAGMA writable_schema = OFF")


def install(conn: sqlite3.Connection, *, gen: int, log_rows: bool = False, tails: bool = False,
            tails_enabled: bool = True) -> None:
    """Create the machinery over the current (synced) state, inside the caller's write
    transaction: empty log, the current schema as the synced one, triggers on every table
    without logging their rows (they are the server's) - unless ``log_rows``: a replica
    that already holds uncaptured local changes logs every row, so none is lost. With
    ``tails`` (every page is local, so reading each table's largest rowid fetches nothing)
    tables get their tails now; otherwise every change is logged until the first push
    starts them (tail.fold)."""
    with Writable(conn):
        conn.execute(LOG_SQL)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLES}(id INTEGER PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}(type TEXT, name TEXT, tbl_name TEXT, sql TEXT)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {STATE}(key TEXT PRIMARY KEY, value) WITHOUT ROWID")
    snapshot_schema(conn)
    conn.execute(f"INSERT OR REPLACE INTO {STATE}(key, value) VALUES ('gen', ?)", (gen,))
    conn.execute(f"INSERT OR REPLACE INTO {STATE}(key, value) VALUES ('version', ?)", (VERSION,))
    if not tails_enabled:
        set_tails_enabled(conn, False)
    ensure_triggers(conn, log_rows=log_rows, tails=tails or log_rows)


def outdated(conn: sqlite3.Connection) -> bool:
    """Machinery made by an older version (no transaction ids in its log, or no tails)."""
    row = conn.execute(f"SELECT value FROM {STATE} WHERE key = 'version'").fetchone()
    return (int(row[0]) if row else 1) < VERSION


def upgrade(conn: sqlite3.Connection, *, tails: bool = False) -> None:
    """Bring older machinery to VERSION inside the caller's write transaction, keeping the
    log's rows and table ids: the log gets its x column (its old rows: one transaction) and
    loses its NOT NULL, every table its current triggers - with ``tails``, a tail whose
    frontier is the table's largest rowid (the older triggers logged every change, so no
    row above it is unlogged; without, the first push starts it). SQLite refuses ALTER and DROP
    of ``sqlite_*`` tables, so the log's declaration is rewritten in the schema - a change
    the file format allows for appending a column and removing a NOT NULL (SQLite's
    "other kinds of table schema changes"), with the schema cookie bumped so every
    connection reloads it."""
    with Writable(conn):
        for name in our_triggers(conn):
            conn.execute(f"DROP TRIGGER IF EXISTS {qi(name)}")
        cookie = conn.execute("PRAGMA schema_version").fetchone()[0]
        conn.execute("UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = ?",
                     (LOG_SQL.replace(" IF NOT EXISTS", ""), LOG))
        conn.execute(f"PRAGMA schema_version = {int(cookie) + 1}")
    with Writable(conn):
        latest = {name: (i, kind) for i, name, kind in conn.execute(f"SELECT id, name, kind FROM {TABLES} ORDER BY id")}
        for name, (i, kind) in latest.items():  # (a table recreated under its name has a newer id)
            info = table_info(conn, name)
            if info is not None and info.kind == kind:
                create_triggers(conn, i, info, top_rowid(conn, info) if tails else None)
    conn.execute(f"INSERT OR REPLACE INTO {STATE}(key, value) VALUES ('version', ?)", (VERSION,))


def snapshot_schema(conn: sqlite3.Connection, schema: Optional[Dict[Tuple[str, str], Tuple[str, str]]] = None) -> None:
    """The schema baseline DDL is diffed against: the synced one (install), or the one a
    push just sent (``schema``: so a pushed schema change is never sent again)."""
    conn.execute(f"DELETE FROM {SCHEMA}")
    conn.executemany(f"INSERT INTO {SCHEMA}(type, name, tbl_name, sql) VALUES (?, ?, ?, ?)",
                     [(t, n, tbl, sql) for (t, n), (tbl, sql) in
                      (user_schema(conn) if schema is None else schema).items()])


def generation(conn: sqlite3.Connection) -> int:
    row = conn.execute(f"SELECT value FROM {STATE} WHERE key = 'gen'").fetchone()
    return int(row[0]) if row else 0


def our_triggers(conn: sqlite3.Connection) -> Dict[str, str]:
    """{trigger name: table} of our triggers."""
    return {n: t for n, t in conn.execute(
        "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE 'sqlite\\_tdb\\_%' ESCAPE '\\'")}


# -- tails: frontiers ----------------------------------------------------------------------

_FRONTIER = "f:"  # sqlite_tdb_state key of table id i's frontier: 'f:<i>'
_TAILS = "tails"  # sqlite_tdb_state key: 0 while the replica keeps no tails (tail.set_enabled)


def tails_enabled(conn: sqlite3.Connection) -> bool:
    """Whether tables may keep a tail (the default); off, every change is logged with its
    transaction's mark, so push_operations_threshold can cut between them (tail.py)."""
    row = conn.execute(f"SELECT value FROM {STATE} WHERE key = ?", (_TAILS,)).fetchone()
    return row is None or int(row[0]) != 0


def set_tails_enabled(conn: sqlite3.Connection, on: bool) -> None:
    conn.execute(f"INSERT OR REPLACE INTO {STATE}(key, value) VALUES (?, ?)", (_TAILS, 1 if on else 0))


def frontiers(conn: sqlite3.Connection) -> Dict[int, int]:
    """{table id: frontier} of the tables with a tail."""
    n = len(_FRONTIER)
    return {int(k[n:]): int(v) for k, v in conn.execute(
        f"SELECT key, value FROM {STATE} WHERE key >= ? AND key < ?", (_FRONTIER, _FRONTIER[:-1] + ";"))}


def frontier(conn: sqlite3.Connection, i: int) -> Optional[int]:
    row = conn.execute(f"SELECT value FROM {STATE} WHERE key = ?", (f"{_FRONTIER}{i}",)).fetchone()
    return None if row is None else int(row[0])


def top_rowid(conn: sqlite3.Connection, info: TableInfo, *, safe: bool = True) -> Optional[int]:
    """The frontier a table's tail starts from when every row it holds is synced or
    logged: its largest rowid (0 when empty); None when it has no rowid to tell by - or,
    ``safe``, when the table cannot be read (a server's damaged pages: no tail then, every
    change logged)."""
    if info.rowid is None:
        return None
    try:
        top = conn.execute(f"SELECT MAX({info.rowid}) FROM {qi(info.name)}").fetchone()[0]
    except sqlite3.DatabaseError:
        if not safe:
            raise
        return None
    return 0 if top is None else int(top)


def trigger_names(i: int, tail: bool) -> Tuple[str, str, str]:
    """The insert, delete and update triggers of table id ``i``. With a tail they have
    names an older version does not know: it then takes the table for one without
    triggers and logs every row it holds before a push or a pull (nothing is lost)."""
    return tuple(f"{PREFIX}{i}_{'t' if tail else ''}{op}" for op in "idu")  # type: ignore[return-value]


def untracked(conn: sqlite3.Connection) -> List[TableInfo]:
    """User tables whose changes the triggers do not log (yet)."""
    trig = our_triggers(conn)
    mapping = {name: (i, kind) for i, name, kind in conn.execute(f"SELECT id, name, kind FROM {TABLES}")}
    tails = frontiers(conn)
    out = []
    for name, sql in user_tables(conn):
        info = table_info(conn, name, sql)
        if info is None:
            continue
        i, kind = mapping.get(name, (None, None))
        ok = i is not None and kind == info.kind and all(
            trig.get(t) == name for t in trigger_names(i, i in tails and info.rowid is not None))
        if not ok:
            out.append(info)
    return out


def ensure_triggers(conn: sqlite3.Connection, *, log_rows: bool = True, tails: bool = True) -> int:
    """Give every untracked table fresh triggers (inside the caller's write transaction);
    with ``log_rows`` also log every row it holds. With ``tails`` its tail starts above the
    rows it holds (reading its largest rowid). Returns the number of tables fixed."""
    todo = untracked(conn)
    if not todo:
        return 0
    trig = our_triggers(conn)
    first = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {LOG}").fetchone()[0]
    with Writable(conn):
        for info in todo:
            for tname, tbl in trig.items():  # stale triggers of this table (a rename)
                if tbl == info.name:
                    conn.execute(f"DROP TRIGGER IF EXISTS {qi(tname)}")
            cur = conn.execute(f"INSERT INTO {TABLES}(name, kind) VALUES (?, ?)", (info.name, info.kind))
            i = cur.lastrowid
            if log_rows:
                conn.execute(f"INSERT INTO {LOG}(t, k) SELECT {i}, {info.key_of_rows()} FROM {qi(info.name)}")
            create_triggers(conn, i, info, top_rowid(conn, info) if tails else None)
    if log_rows:
        mark_bulk(conn, first)
    return len(todo)


def mark_bulk(conn: sqlite3.Connection, after: int) -> None:
    """The rows just logged in bulk after log id ``after`` belong to transactions nobody
    recorded: their first row gets x = BULK, before which push cuts no batch (batches.py)."""
    conn.execute(f"UPDATE {LOG} SET x = {BULK} WHERE id = (SELECT MIN(id) FROM {LOG} WHERE id > ?)", (after,))


TXN = "(SELECT id FROM sqlite_tdb_txn)"  # the transaction's id on its first log row, NULL after


def create_triggers(conn: sqlite3.Connection, i: int, info: TableInfo, tail: Optional[int]) -> None:
    """The three triggers of table id ``i`` (writable_schema on), with a tail above rowid
    ``tail`` (None: none, every change logged), recorded in the same transaction. An
    UPDATE's second row (its new key) never starts a transaction: its first row came just
    before. The subquery runs once per trigger invocation, i.e. per row."""
    t = qi(info.name)
    new, old = info.key_expr("NEW"), info.key_expr("OLD")
    if info.rowid is None or (tail is not None and not tails_enabled(conn)):
        tail = None
    w_ins = w_del = w_upd = ""
    if tail is None:
        conn.execute(f"DELETE FROM {STATE} WHERE key = ?", (f"{_FRONTIER}{i}",))
    else:
        f = int(tail)
        conn.execute(f"INSERT OR REPLACE INTO {STATE}(key, value) VALUES (?, ?)", (f"{_FRONTIER}{i}", f))
        w_ins = f" WHEN NEW.{info.rowid} <= {f}"
        w_del = f" WHEN OLD.{info.rowid} <= {f}"
        w_upd = f" WHEN OLD.{info.rowid} <= {f} OR NEW.{info.rowid} <= {f}"
    ins, dele, upd = trigger_names(i, tail is not None)
    conn.execute(f"CREATE TRIGGER {ins} AFTER INSERT ON {t}{w_ins} BEGIN "
                 f"INSERT INTO {LOG}(t, k, x) VALUES ({i}, {new}, {TXN}); END")
    conn.execute(f"CREATE TRIGGER {dele} AFTER DELETE ON {t}{w_del} BEGIN "
                 f"INSERT INTO {LOG}(t, k, x) VALUES ({i}, {old}, {TXN}); END")
    conn.execute(f"CREATE TRIGGER {upd} AFTER UPDATE ON {t}{w_upd} BEGIN "
                 f"INSERT INTO {LOG}(t, k, x) VALUES ({i}, {old}, {TXN}); "
                 f"INSERT INTO {LOG}(t, k) SELECT {i}, {new} WHERE ({new}) IS NOT ({old}); END")


def drop_triggers(conn: sqlite3.Connection, i: int, tail: Optional[bool] = None) -> None:
    """Table id ``i``'s triggers (writable_schema on): with a tail, without, or (None)
    of either naming."""
    for t in (False, True) if tail is None else (tail,):
        for name in trigger_names(i, t):
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")


_RENAME = "rename:"


def note_rename(conn: sqlite3.Connection, old: str, new: str) -> None:
    """Table ``old`` is now ``new``: remember the name it has in the synced schema."""
    row = conn.execute(f"SELECT value FROM {STATE} WHERE key = ?", (_RENAME + old,)).fetchone()
    synced = row[0] if row else old
    conn.execute(f"DELETE FROM {STATE} WHERE key = ?", (_RENAME + old,))
    if synced != new:
        conn.execute(f"INSERT OR REPLACE INTO {STATE}(key, value) VALUES (?, ?)", (_RENAME + new, synced))


def renames(conn: sqlite3.Connection) -> Dict[str, str]:
    """{current name: name in the synced schema} of the tables renamed since."""
    n = len(_RENAME)
    return {k[n:]: v for k, v in conn.execute(
        f"SELECT key, value FROM {STATE} WHERE key >= ? AND key < ?", (_RENAME, _RENAME[:-1] + ";"))}


def forget_renames(conn: sqlite3.Connection, pushed: Dict[str, str]) -> None:
    """The renames a push sent are part of the synced schema now."""
    for new, old in pushed.items():
        conn.execute(f"DELETE FROM {STATE} WHERE key = ? AND value = ?", (_RENAME + new, old))
