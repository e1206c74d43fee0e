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
  a changed table becomes ALTER TABLE statements (``alter_steps``): RENAME
  COLUMN, DROP COLUMN, ADD COLUMN, each tolerating the error its second run gives. A table
  is NEVER dropped and recreated on the server (that deleted rows other clients wrote
  meanwhile); a change those forms cannot reproduce is refused with NotSupportedError.
  DDL is sent until a push succeeds: push() then records the pushed schema as the
  baseline (capture.SCHEMA), so it is never resent.
An UPDATE is sent as the upsert of the row's current values: the same statement inserts a
row another client deleted meanwhile (last writer wins, as pyturso's upsert does).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sqlite3
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import capture, tail as tails
from ..errors import NotSupportedError
from .capture import TableInfo, qi

Args = Tuple[Any, ...]


@dataclasses.dataclass
class Change:
    """One changed row. ``row`` is None when it was deleted; ``key`` is its identity
    (``(rowid,)`` or the primary key values)."""

    table: str
    key: Tuple[Any, ...]
    row: Optional[Dict[str, Any]]
    change_id: int  # the newest log id of the key
    first_id: int = 0  # its oldest log id collected (0: same as change_id)

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
    schema: Dict[Tuple[str, str], Tuple[str, str]] = dataclasses.field(default_factory=dict)  # as collected
    by_rowid: Dict[str, int] = dataclasses.field(default_factory=dict)  # collect(rowid_rows=False)
    starts: List[int] = dataclasses.field(default_factory=list)  # log ids that begin a local transaction
    renames: Dict[str, str] = dataclasses.field(default_factory=dict)  # tables renamed, {new: synced name}
    barrier: int = 0  # no batch is cut at a start at or before this log id (batches.py)
    tails: Dict[str, int] = dataclasses.field(default_factory=dict)  # table -> frontier (non-empty tails)
    tail_id: int = 0  # the change id of tail rows: above every log id (tail.py)

    def row_statements(self, transform: Optional[Callable[[Change], Optional[Change]]] = None) -> List[Stmt]:
        return [s for group in self.row_groups(transform) for s in group]

    def row_groups(self, transform: Optional[Callable[[Change], Optional[Change]]] = None) -> List[List[Stmt]]:
        """The statements of each row of ``rows`` (same order; empty when ``transform``
        dropped it)."""
        out: List[List[Stmt]] = []
        for ch in self.rows:
            if transform is not None:
                ch = transform(ch)
            info = None if ch is None else self.infos.get(ch.table)
            out.append([] if info is None else statements(info, ch))  # type: ignore[arg-type]
        return out

    @property
    def empty(self) -> bool:
        return not (self.before or self.rows or self.after)


_CREATE = re.compile(r"^\s*CREATE\s+(UNIQUE\s+|VIRTUAL\s+)?(TABLE|INDEX|VIEW|TRIGGER)\s+(?!IF\s+NOT\s+EXISTS\b)", re.I)


def if_not_exists(sql: str) -> str:
    """CREATE ... rewritten to CREATE ... IF NOT EXISTS (§6.7, HEAD)."""
    return _CREATE.sub(lambda m: m.group(0) + "IF NOT EXISTS ", sql, count=1)


@functools.lru_cache(maxsize=1024)
def _sql(info: TableInfo, op: str, cols: Tuple[str, ...], rows: Optional[str] = None) -> str:
    """The SQL text of one shape of change (cached: a push sends thousands of one shape).
    ``rows``: for an upsert or replace, a SELECT giving the rows in place of ``VALUES``."""
    t = qi(info.name)
    if info.kind == "pk":
        where = " AND ".join(f"{qi(c)} IS ?" for c in info.pk)
    else:
        where = f"{qi(info.pk[0]) if info.kind == 'alias' else info.rowid_name} = ?"
    if op == "delete":
        return f"DELETE FROM {t} WHERE {where}"
    if op == "replace":  # no primary key: the rowid is the key
        names = ", ".join([info.rowid_name] + [qi(c) for c in cols])
        return f"INSERT OR REPLACE INTO {t}({names}) {rows or 'VALUES (' + ', '.join('?' * (len(cols) + 1)) + ')'}"
    sets = ", ".join(f"{qi(c)} = excluded.{qi(c)}" for c in cols if c not in info.pk)
    action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
    names = ", ".join(qi(c) for c in cols)
    conflict = ", ".join(qi(c) for c in info.pk)
    values = rows or f"VALUES ({', '.join('?' * len(cols))})"
    return f"INSERT INTO {t}({names}) {values} ON CONFLICT({conflict}) {action}"


def upsert_from(info: TableInfo, rows: str) -> str:
    """The upsert (or, without a primary key, replace) of every row ``rows`` selects, in one
    statement: the rebase's set-based replay. ``rows`` has a WHERE clause (SQLite needs one
    before ON CONFLICT) and gives the columns in order, the rowid first when it is the key."""
    return _sql(info, "replace" if info.kind == "rowid" else "upsert", info.columns, rows)


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


def rowid_changes_sql(info: TableInfo, first: bool = False, tail: bool = False) -> str:
    """The changed rows of a table keyed by its rowid, in ONE query (a join of the log's
    keys with the table) instead of one per key; parameters (table id, after). Each row:
    newest log id, 1 when the row exists (0: deleted), key, the row's columns (and with
    ``first`` the oldest log id of the key). With ``tail`` also the tail's rows (tail.py),
    with parameters (table id, after, frontier, tail id): a key logged and now in the
    tail comes once, as a tail row (its newest state is pending whatever was pushed)."""
    cols = ", ".join(f"r.{qi(c)}" for c in info.columns)
    key = qi(info.pk[0]) if info.kind == "alias" else info.rowid_name
    oldest = (", l.f", ", MIN(id) AS f") if first else ("", "")
    sql = (f"SELECT l.m, r.{key} IS NOT NULL, l.k, {cols}{oldest[0]} FROM "
           f"(SELECT k, MAX(id) AS m{oldest[1]} FROM {capture.LOG} WHERE t = ?1 AND id > ?2 GROUP BY k) AS l "
           f"LEFT JOIN {qi(info.name)} AS r ON r.{key} = l.k")
    if tail:
        sql += (f" WHERE r.{key} IS NULL OR r.{key} <= ?3 UNION ALL SELECT ?4, 1, r.{key}, {cols}"
                f"{', ?4' if first else ''} FROM {qi(info.name)} AS r WHERE r.{key} > ?3")
    return sql


def _rowid_changes(conn: sqlite3.Connection, t: int, info: TableInfo, after: int,
                   tail: Optional[Tuple[int, int]]) -> List[Change]:
    out = []
    n = len(info.columns)
    sql = rowid_changes_sql(info, first=True, tail=tail is not None)
    for row in conn.execute(sql, (t, after) + (tail or ())):
        values = dict(zip(info.columns, row[3:3 + n])) if row[1] else None
        out.append(Change(info.name, (row[2],), values, row[0], row[3 + n]))
    return out


def collect(conn: sqlite3.Connection, after: int, *, untracked_rows: bool = False,
            rowid_rows: bool = True) -> Changes:
    """The changes after log id ``after`` (see the module docstring). With
    ``untracked_rows`` every row of a table the triggers do not cover yet is included (the
    rebase cannot install triggers first: it must not write before setting the layer aside).
    Without ``rowid_rows`` the logged changes of tables keyed by their rowid are left out of
    ``rows`` and named in ``Changes.by_rowid`` (table -> log table id): the caller reads
    them with ``rowid_changes_sql`` (the rebase copies them in SQL, with no Python per row).
    Every table's tail (tail.py) is included, as changes with id ``last + 1``: they are
    pending however far the log was pushed."""
    infos: Dict[str, TableInfo] = {}
    for name, sql in capture.user_tables(conn):
        info = capture.table_info(conn, name, sql)
        if info is not None:
            infos[name] = info
    before, after_ddl, full, renames = schema_diff(conn, infos)
    if untracked_rows:
        full.update(i.name for i in capture.untracked(conn))
    mapping = {i: (name, kind) for i, name, kind in conn.execute(f"SELECT id, name, kind FROM {capture.TABLES}")}
    last = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {capture.LOG}").fetchone()[0]
    tail_id = last + 1
    tail_of = {i: (info.name, f) for i, info, f in tails.tables(conn, infos)
               if info.name not in full and tails.nonempty(conn, info, f)}
    rows: List[Change] = []
    by_rowid: Dict[str, int] = {}
    logged = [t for (t,) in conn.execute(f"SELECT DISTINCT t FROM {capture.LOG} WHERE id > ?", (after,))]
    for t in logged + sorted(set(tail_of) - set(logged)):
        name, kind = mapping.get(t, (None, None))
        info = infos.get(name) if name is not None else None
        if info is None or info.kind != kind:
            continue  # the table is gone (or was recreated): the DDL diff covers it
        tail = (tail_of[t][1], tail_id) if t in tail_of else None
        if kind != "pk":
            if not rowid_rows and name not in full:
                by_rowid[name] = t
            else:
                rows.extend(_rowid_changes(conn, t, info, after, tail))
            continue
        mine: Dict[Tuple[Any, ...], Change] = {}
        for k, newest, first in conn.execute(
                f"SELECT k, MAX(id), MIN(id) FROM {capture.LOG} WHERE t = ? AND id > ? GROUP BY k",
                (t, after)).fetchall():
            key = _key_values(conn, kind, k)
            if key is not None:
                mine[key] = Change(name, key, current_row(conn, info, key), newest, first)
        if tail is not None:  # key and row in one query (no statement per row)
            nk = len(info.pk)
            what = ", ".join(qi(c) for c in info.pk + info.columns)
            for r in conn.execute(tails.rows_sql(info, what), (tail[0],)):
                key = tuple(r[:nk])
                if key in mine:  # (logged before too: its newest state is pending)
                    mine[key].change_id = tail_id
                else:
                    mine[key] = Change(name, key, dict(zip(info.columns, r[nk:])), tail_id, tail_id)
        rows.extend(mine.values())
    # Rows nothing logged were never pushed. The rebase replays only changes above the
    # floor (the log id the server has), which can equal ``last``: such rows get an id
    # above every logged one, or a pull would drop them with the local layer. A push sends
    # them in its last batch and records ``last`` as its high-water mark either way.
    unlogged = tail_id if untracked_rows else last
    index = {(c.table, c.key): c for c in rows}
    for name in sorted(full):
        info = infos[name]
        key_sql = info.key_of_rows()
        for (k,) in conn.execute(f"SELECT {key_sql} FROM {qi(name)}").fetchall():
            key = _key_values(conn, info.kind, k)
            if key is None:
                continue
            if (name, key) in index:  # logged before, changed since with no trigger: pending
                index[(name, key)].change_id = max(index[(name, key)].change_id, unlogged)
            else:
                index[(name, key)] = ch = Change(name, key, current_row(conn, info, key), unlogged)
                rows.append(ch)
    rows.sort(key=lambda c: c.change_id)
    starts = [i for (i,) in conn.execute(f"SELECT id FROM {capture.LOG} WHERE id > ? AND x > 0 "
                                         "ORDER BY id", (after,))]
    barrier = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {capture.LOG} WHERE id > ? AND x < 0",
                           (after,)).fetchone()[0]
    if tail_of:
        barrier = tail_id  # tail rows of transactions unknown: no cut at all
    return Changes(before, rows, after_ddl, last, infos, capture.user_schema(conn), by_rowid, starts, renames,
                   barrier, {name: f for name, f in tail_of.values()}, tail_id)



# -- the schema diff -------------------------------------------------------------------------


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


def _xinfo_of(sql: str) -> Optional[List[tuple]]:
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute(sql)
        name = mem.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
        return _xinfo(mem, name)
    except sqlite3.Error:
        return None
    finally:
        mem.close()


def _align(name: str, was: List[tuple], now: List[tuple], define: Callable[[str], str]) -> List[Tuple[str, str]]:
    """ALTER steps (sql, error a rerun gives) from the synced columns to the current ones:
    SQLite's ALTER keeps a renamed column in place, removes a dropped one and appends an
    added one, so walk both lists; a column name gone with one of the same declared type in
    its place is a rename, otherwise a drop. alter_steps checks the result."""
    t = qi(name)
    names = {c[0] for c in now}
    steps: List[Tuple[str, str]] = []
    i = j = 0
    while j < len(now):
        c = now[j][0]
        if i < len(was) and was[i][0] == c:
            i, j = i + 1, j + 1
        elif i < len(was) and (was[i][0] in names or was[i][1] != now[j][1] or c in {w[0] for w in was}):
            if was[i][0] in names:  # a column that moved: no ALTER does that
                return steps
            steps.append((f"ALTER TABLE {t} DROP COLUMN {qi(was[i][0])}", "no such column"))
            i += 1
        elif i < len(was):
            steps.append((f"ALTER TABLE {t} RENAME COLUMN {qi(was[i][0])} TO {qi(c)}", "no such column"))
            i, j = i + 1, j + 1
        else:
            steps.append((f"ALTER TABLE {t} ADD COLUMN {define(c)}", "duplicate column"))
            j += 1
    steps += [(f"ALTER TABLE {t} DROP COLUMN {qi(w[0])}", "no such column") for w in was[i:]]
    return steps


def _xinfo(conn: sqlite3.Connection, table: str) -> List[tuple]:
    """(name, type, notnull, default, pk) of every column: what an ALTER must reproduce."""
    return [tuple(c[1:6]) for c in conn.execute(f"PRAGMA table_xinfo({qi(table)})")]


def alter_steps(conn: sqlite3.Connection, name: str, old_sql: str) -> List[Stmt]:
    """The ALTER TABLE statements that turn the synced table (``old_sql``)
    into the current one: RENAME COLUMN, DROP COLUMN,
    ADD COLUMN - statements that never drop rows on the server, each tolerating the error a
    second run gives (so a resend after a crash is harmless). They are checked by running
    them on a scratch copy of the old table: a change they cannot reproduce (the table was
    rebuilt with other columns) is refused rather than pushed as drop-and-recreate, which
    would delete the rows other clients wrote."""
    now = _xinfo(conn, name)
    was = _xinfo_of(old_sql)
    if was is None:
        return []
    steps = _align(name, was, now, lambda c: _column_def(conn, name, c))
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute(old_sql)
        for sql, _ in steps:
            mem.execute(sql)
        ok = _xinfo(mem, name) == now
    except sqlite3.Error:
        ok = False
    finally:
        mem.close()
    if not ok:
        raise NotSupportedError(
            f"push: the schema change of table {name!r} cannot be sent as ALTER TABLE statements "
            f"(RENAME COLUMN / DROP COLUMN / ADD COLUMN); sending it as drop-and-recreate "
            "would delete rows other clients wrote on the server, so nothing was pushed. Make the "
            "change with those ALTER TABLE forms (or on the server) and pull")
    return [Stmt(sql, (), name, tolerate=tol) for sql, tol in steps]


_ORDER = {"trigger": 0, "view": 1, "index": 2, "table": 3}


def _renamed(base: Dict[Tuple[str, str], Tuple[str, str]], old: str, new: str) -> Dict[Tuple[str, str], Tuple[str, str]]:
    """The synced schema as the server has it after ``ALTER TABLE old RENAME TO new``:
    SQLite's own rename, run on a scratch copy, rewrites the table and every index,
    trigger and view naming it, as it does on the server."""
    mem = sqlite3.connect(":memory:")
    try:
        for (typ, _name), (_, sql) in sorted(base.items(), key=lambda kv: -_ORDER.get(kv[0][0], 9)):
            try:
                mem.execute(sql)
            except sqlite3.Error:
                if typ == "table":
                    raise
        mem.execute(f"ALTER TABLE {qi(old)} RENAME TO {qi(new)}")
        return capture.user_schema(mem)
    except sqlite3.Error:  # the synced schema does not load alone: rename the table only
        out = {k: v for k, v in base.items() if k != ("table", old)}
        mem.close()
        mem = sqlite3.connect(":memory:")
        mem.execute(base[("table", old)][1])
        mem.execute(f"ALTER TABLE {qi(old)} RENAME TO {qi(new)}")
        out[("table", new)] = (new, mem.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (new,)).fetchone()[0])
        return out
    finally:
        mem.close()


def schema_diff(conn: sqlite3.Connection,
                infos: Dict[str, TableInfo]) -> Tuple[List[Stmt], List[Stmt], set, Dict[str, str]]:
    """(DDL before the rows, DDL after them, tables whose every row must be sent, the
    renames sent as {new: old}). A table renamed here (capture.renames) is sent as
    ``ALTER TABLE old RENAME TO new`` (a rerun finds no table ``old``: tolerated), never as
    a drop and a create, and the rest of the diff starts from the renamed synced schema."""
    base = capture.user_schema(conn, capture.SCHEMA)
    cur = capture.user_schema(conn)
    before: List[Stmt] = []
    after: List[Stmt] = []
    full: set = set()
    sent: Dict[str, str] = {}
    for new, old in sorted(capture.renames(conn).items()):
        # (a new table may have taken the old name since: it is created after the rename)
        if ("table", old) in base and ("table", new) in cur and ("table", new) not in base:
            before.append(Stmt(f"ALTER TABLE {qi(old)} RENAME TO {qi(new)}", (), new, tolerate="no such table"))
            base = _renamed(base, old, new)
            sent[new] = old
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
        before.extend(alter_steps(conn, name, old[1]))
    return before, after, full, sent
