"""The unpushed changes of a replica as idempotent SQL (spec §6.7), for push and replay.

``collect(conn, after)`` reads, in the caller's read transaction (one snapshot): the keys
logged after log id ``after`` (capture.py), each key's current row, and the schema diff
against the synced schema. It returns ``Changes``: DDL to run before the rows (drops,
CREATE ... IF NOT EXISTS of tables, ADD COLUMN), one ``Change`` per key in log order (the
newest log id of the key), and DDL to run after them (indexes, views, triggers).

SQL per change (identifiers double-quoted, values bound as arguments):
  upsert, table with a primary key:  INSERT INTO "t"(cols) VALUES (?...)
                                     ON CONFLICT(pk) DO UPDATE SET "c" = excluded."c", ...
      (a NULL in a non-rowid key never conflicts, so a NULL-safe DELETE ... IS goes first)
  upsert, table without one:         INSERT OR REPLACE INTO "t"(rowid, cols) VALUES (...)
      (the rowid is the key: it is preserved, so later updates and deletes find the row)
  delete:                            DELETE FROM "t" WHERE "pk1" IS ? AND ...  / rowid = ?
  DDL: CREATE TABLE/INDEX/VIEW/TRIGGER rewritten to IF NOT EXISTS; DROP ... IF EXISTS;
  columns added by ALTER TABLE become ADD COLUMN (an error "duplicate column" is tolerated);
  any other table change (dropped or renamed columns, a recreated table) drops and
  recreates it on the server and sends all its rows.
An UPDATE is sent as the upsert of the row's current values: the same statement inserts a
row another client deleted meanwhile (last writer wins, as pyturso's upsert does).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sqlite3
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import capture
from .capture import TableInfo, qi

Args = Tuple[Any, ...]


@dataclasses.dataclass
class Change:
    """One changed row. ``row`` is None when it was deleted; ``key`` is its identity
    (``(rowid,)`` or the primary key values)."""

    table: str
    key: Tuple[Any, ...]
    row: Optional[Dict[str, Any]]
    change_id: int

    @property
    def op(self) -> str:
        return "delete" if self.row is None else "upsert"


@dataclasses.dataclass
class Stmt:
    sql: str
    args: Args
    table: str
    change_id: int = 0  # 0: DDL (replayed always: it is idempotent)
    tolerate: Optional[str] = None  # an error message fragment that is not a failure

    def nbytes(self) -> int:
        return len(self.sql) + sum(len(a) if isinstance(a, (str, bytes)) else 8 for a in self.args)


@dataclasses.dataclass
class Changes:
    before: List[Stmt]
    rows: List[Change]
    after: List[Stmt]
    last_id: int  # the newest log id seen (0: empty log)
    infos: Dict[str, TableInfo]

    def row_statements(self, transform: Optional[Callable[[Change], Optional[Change]]] = None) -> List[Stmt]:
        out: List[Stmt] = []
        for ch in self.rows:
            if transform is not None:
                ch = transform(ch)
                if ch is None:
                    continue
            info = self.infos.get(ch.table)
            if info is not None:
                out.extend(statements(info, ch))
        return out

    @property
    def empty(self) -> bool:
        return not (self.before or self.rows or self.after)


_CREATE = re.compile(r"^\s*CREATE\s+(UNIQUE\s+|VIRTUAL\s+)?(TABLE|INDEX|VIEW|TRIGGER)\s+(?!IF\s+NOT\s+EXISTS\b)", re.I)


def if_not_exists(sql: str) -> str:
    """CREATE ... rewritten to CREATE ... IF NOT EXISTS (§6.7, HEAD)."""
    return _CREATE.sub(lambda m: m.group(0) + "IF NOT EXISTS ", sql, count=1)


@functools.lru_cache(maxsize=1024)
def _sql(info: TableInfo, op: str, cols: Tuple[str, ...]) -> str:
    """The SQL text of one shape of change (cached: a push sends thousands of one shape)."""
    t = qi(info.name)
    if info.kind == "pk":
        where = " AND ".join(f"{qi(c)} IS ?" for c in info.pk)
    else:
        where = f"{qi(info.pk[0]) if info.kind == 'alias' else info.rowid_name} = ?"
    if op == "delete":
        return f"DELETE FROM {t} WHERE {where}"
    if op == "replace":  # no primary key: the rowid is the key
        names = ", ".join([info.rowid_name] + [qi(c) for c in cols])
        return f"INSERT OR REPLACE INTO {t}({names}) VALUES ({', '.join('?' * (len(cols) + 1))})"
    sets = ", ".join(f"{qi(c)} = excluded.{qi(c)}" for c in cols if c not in info.pk)
    action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
    names = ", ".join(qi(c) for c in cols)
    conflict = ", ".join(qi(c) for c in info.pk)
    return f"INSERT INTO {t}({names}) VALUES ({', '.join('?' * len(cols))}) ON CONFLICT({conflict}) {action}"


def statements(info: TableInfo, ch: Change) -> List[Stmt]:
    if ch.row is None:
        return [Stmt(_sql(info, "delete", ()), tuple(ch.key), info.name, ch.change_id)]
    row = ch.row
    cols = info.columns if len(row) == len(info.columns) else tuple(c for c in info.columns if c in row)
    vals = tuple(row[c] for c in cols)
    if info.kind == "rowid":
        return [Stmt(_sql(info, "replace", cols), tuple(ch.key) + vals, info.name, ch.change_id)]
    out: List[Stmt] = []
    if info.kind == "pk" and any(row.get(c) is None for c in info.pk):
        out.append(Stmt(_sql(info, "delete", ()), tuple(row.get(c) for c in info.pk), info.name, ch.change_id))
    out.append(Stmt(_sql(info, "upsert", cols), vals, info.name, ch.change_id))
    return out


# -- collecting ------------------------------------------------------------------------------


def _key_values(conn: sqlite3.Connection, kind: str, k: Any) -> Optional[Tuple[Any, ...]]:
    if kind != "pk":
        return (k,)
    try:
        row = conn.execute(f"SELECT {k}").fetchone()  # k is quote() output: SQL literals only
    except sqlite3.Error:
        return None
    return tuple(row)


@functools.lru_cache(maxsize=256)
def _select(info: TableInfo) -> str:
    cols = ", ".join(qi(c) for c in info.columns)
    if info.kind == "pk":
        where = " AND ".join(f"{qi(c)} IS ?" for c in info.pk)
    else:
        where = f"{qi(info.pk[0]) if info.kind == 'alias' else info.rowid_name} = ?"
    return f"SELECT {cols} FROM {qi(info.name)} WHERE {where}"


def current_row(conn: sqlite3.Connection, info: TableInfo, key: Sequence[Any]) -> Optional[Dict[str, Any]]:
    row = conn.execute(_select(info), tuple(key)).fetchone()
    return None if row is None else dict(zip(info.columns, row))


def _rowid_changes(conn: sqlite3.Connection, t: int, info: TableInfo, after: int) -> List[Change]:
    """The changed rows of a table keyed by its rowid, in ONE query (a join of the log's
    keys with the table) instead of one per key."""
    cols = ", ".join(f"r.{qi(c)}" for c in info.columns)
    key = qi(info.pk[0]) if info.kind == "alias" else info.rowid_name
    out = []
    n = len(info.columns)
    for row in conn.execute(
            f"SELECT l.k, l.m, r.{key} IS NOT NULL, {cols} FROM "
            f"(SELECT k, MAX(id) AS m FROM {capture.LOG} WHERE t = ? AND id > ? GROUP BY k) AS l "
            f"LEFT JOIN {qi(info.name)} AS r ON r.{key} = l.k", (t, after)):
        values = dict(zip(info.columns, row[3:3 + n])) if row[2] else None
        out.append(Change(info.name, (row[0],), values, row[1]))
    return out


def collect(conn: sqlite3.Connection, after: int, *, untracked_rows: bool = False) -> Changes:
    """The changes after log id ``after`` (see the module docstring). With
    ``untracked_rows`` every row of a table the triggers do not cover yet is included (the
    rebase cannot install triggers first: it must not write before setting the layer aside)."""
    infos: Dict[str, TableInfo] = {}
    for name, sql in capture.user_tables(conn):
        info = capture.table_info(conn, name, sql)
        if info is not None:
            infos[name] = info
    mapping = {i: (name, kind) for i, name, kind in conn.execute(f"SELECT id, name, kind FROM {capture.TABLES}")}
    last = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {capture.LOG}").fetchone()[0]
    rows: List[Change] = []
    for (t,) in conn.execute(f"SELECT DISTINCT t FROM {capture.LOG} WHERE id > ?", (after,)).fetchall():
        name, kind = mapping.get(t, (None, None))
        info = infos.get(name) if name is not None else None
        if info is None or info.kind != kind:
            continue  # the table is gone (or was recreated): the DDL diff covers it
        if kind != "pk":
            rows.extend(_rowid_changes(conn, t, info, after))
            continue
        for k, newest in conn.execute(
                f"SELECT k, MAX(id) FROM {capture.LOG} WHERE t = ? AND id > ? GROUP BY k", (t, after)).fetchall():
            key = _key_values(conn, kind, k)
            if key is not None:
                rows.append(Change(name, key, current_row(conn, info, key), newest))
    rows.sort(key=lambda c: c.change_id)
    seen = {(c.table, c.key) for c in rows}
    before, after_ddl, full = schema_diff(conn, infos)
    if untracked_rows:
        full.update(i.name for i in capture.untracked(conn))
    for name in sorted(full):
        info = infos[name]
        key_sql = info.key_of_rows()
        for (k,) in conn.execute(f"SELECT {key_sql} FROM {qi(name)}").fetchall():
            key = _key_values(conn, info.kind, k)
            if key is not None and (name, key) not in seen:
                seen.add((name, key))
                rows.append(Change(name, key, current_row(conn, info, key), last))
    return Changes(before, rows, after_ddl, last, infos)


# -- the schema diff -------------------------------------------------------------------------


def _columns_of(sql: str) -> Optional[List[str]]:
    """Column names of a CREATE TABLE statement (parsed by SQLite itself)."""
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute(sql)
        name = mem.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
        return [c[1] for c in mem.execute(f"PRAGMA table_xinfo({qi(name)})")]
    except sqlite3.Error:
        return None
    finally:
        mem.close()


def _column_def(conn: sqlite3.Connection, table: str, col: str) -> str:
    for c in conn.execute(f"PRAGMA table_xinfo({qi(table)})"):
        if c[1] == col:
            d = qi(col) + (f" {c[2]}" if c[2] else "")
            if c[3]:
                d += " NOT NULL"
            if c[4] is not None:
                d += f" DEFAULT {c[4]}"
            return d
    raise KeyError(col)


_ORDER = {"trigger": 0, "view": 1, "index": 2, "table": 3}


def schema_diff(conn: sqlite3.Connection, infos: Dict[str, TableInfo]) -> Tuple[List[Stmt], List[Stmt], set]:
    """(DDL before the rows, DDL after them, tables whose every row must be sent)."""
    base = capture.user_schema(conn, capture.SCHEMA)
    cur = capture.user_schema(conn)
    before: List[Stmt] = []
    after: List[Stmt] = []
    full: set = set()
    drops = []
    for (typ, name), (tbl, sql) in base.items():
        if (typ, name) not in cur:
            drops.append((typ, name, tbl))
        elif cur[(typ, name)][1] != sql and typ != "table":
            drops.append((typ, name, tbl))  # changed index/view/trigger: drop, create anew
    for typ, name, tbl in sorted(drops, key=lambda d: _ORDER.get(d[0], 9)):
        before.append(Stmt(f"DROP {typ.upper()} IF EXISTS {qi(name)}", (), tbl))
    for (typ, name), (tbl, sql) in sorted(cur.items(), key=lambda kv: (_ORDER.get(kv[0][0], 9), kv[0][1])):
        old = base.get((typ, name))
        if old is not None and old[1] == sql:
            continue
        if typ != "table":
            after.append(Stmt(if_not_exists(sql), (), tbl))
            continue
        if old is None:  # created here: ensure_triggers logged its rows
            before.append(Stmt(if_not_exists(sql), (), name))
            continue
        was, now = _columns_of(old[1]), [c[1] for c in conn.execute(f"PRAGMA table_xinfo({qi(name)})")]
        if was is not None and now[:len(was)] == was:
            for col in now[len(was):]:
                before.append(Stmt(f"ALTER TABLE {qi(name)} ADD COLUMN {_column_def(conn, name, col)}", (), name,
                                   tolerate="duplicate column"))
            continue
        before.append(Stmt(f"DROP TABLE IF EXISTS {qi(name)}", (), name))
        before.append(Stmt(if_not_exists(sql), (), name))
        if name in infos:
            full.add(name)
    return before, after, full
