"""``ALTER TABLE`` of a captured table: its capture triggers are dropped before the
statement and reinstalled after it, in the same transaction.

WHY. SQLite's ALTER TABLE rewrites the SQL of every trigger that names the table except
the ones named ``sqlite_*`` - ours (capture.py). ``RENAME TO`` then fails ("error in
trigger sqlite_tdb_N_i after rename: no such table"), and ``RENAME COLUMN`` of a key
column leaves our triggers reading a column that is gone (every later write fails). So
every ALTER TABLE of a captured table runs as: SAVEPOINT; drop that table's triggers;
the statement; triggers for the table as it now is, under the SAME table id (its logged
changes stay its own); a rename is noted (capture.note_rename) for push, which sends it as
``ALTER TABLE old RENAME TO new`` (changes.schema_diff); RELEASE. A failing statement rolls
all of it back. The savepoint starts a transaction when none is open (autocommit) and
nests inside the caller's otherwise.

WHERE. Every replica connection of the user is of a class made by ``connection_class``
(sync/replica.py) with cursors of ``CaptureCursor``: their ``execute`` (replica/base.py)
tests the statement's first character, and only one that may start an ALTER TABLE (a
letter A, a blank, a comment) goes on to the anchored regex ``is_alter`` and from there
here - no extra Python frame for any other statement. A script holding an ALTER TABLE
runs statement by statement (``run_script``, with executescript's transaction rules).
The rebase replays its DDL through ``execute`` below.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, Callable, List, Optional, Tuple

from ..replica.base import RemoteCursor
from . import capture, tail

_ALTER = re.compile(r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*ALTER\s+TABLE\s", re.I | re.S)
_ALTER_ANYWHERE = re.compile(r"\bALTER\s+TABLE\b", re.I)
_IDENT = r'"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|\'(?:[^\']|\'\')*\'|[^\s.("`\[\']+'
_TARGET = re.compile(rf"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*ALTER\s+TABLE\s+(?:({_IDENT})\s*\.\s*)?({_IDENT})",
                     re.I | re.S)
_SAVEPOINT = "sqlite_tdb_alter"

Execute = Callable[[str, Any], Any]
# First characters of a statement that may be an ALTER TABLE (the rest skip the regex).
_MAYBE = frozenset("Aa-/ \t\r\n\f\v")


def is_alter(sql: Any) -> bool:
    return isinstance(sql, str) and sql[:1] in _MAYBE and _ALTER.match(sql) is not None


def _unquote(tok: str) -> str:
    if tok[:1] in "\"`'" and len(tok) >= 2:
        return tok[1:-1].replace(tok[0] * 2, tok[0])
    if tok[:1] == "[":
        return tok[1:-1]
    return tok


def _target(sql: str) -> Tuple[Optional[str], Optional[str]]:
    m = _TARGET.match(sql)
    if m is None:
        return None, None
    return (_unquote(m.group(1)) if m.group(1) else None), _unquote(m.group(2))


def _base(conn: sqlite3.Connection) -> Callable[..., Any]:
    """The stdlib's execute of this connection (never our override: no recursion)."""
    return lambda sql, args=(): sqlite3.Connection.execute(conn, sql, args)


def _captured(run: Callable[..., Any], name: str) -> Optional[int]:
    """The capture's id of table ``name`` (case-insensitive, as SQLite names match)."""
    try:
        row = run(f"SELECT id FROM {capture.TABLES} WHERE name = ? COLLATE NOCASE", (name,)).fetchone()
    except sqlite3.OperationalError:  # no capture on this database
        return None
    return None if row is None else int(row[0])


def _tables(run: Callable[..., Any]) -> List[str]:
    return [n for (n,) in run("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()]


def _fold_table(conn: sqlite3.Connection, i: int, name: str) -> Optional[int]:
    """Before an ALTER of table id ``i``: its tail (tail.py) into the log, and the frontier
    its new triggers get. Folded first because the ALTER may leave it no rowid name a
    column does not shadow (then it has no tail, and its tail rows must be logged)."""
    f = capture.frontier(conn, i)
    row = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ? COLLATE NOCASE",
                       (name,)).fetchone()
    info = None if row is None else capture.table_info(conn, row[0])
    if f is None or info is None or info.rowid is None:
        return f
    first = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {capture.LOG}").fetchone()[0]
    rows, f = tail.log_rows(conn, i, info, f)
    if rows:
        capture.mark_bulk(conn, first)
    return f


def run_alter(conn: sqlite3.Connection, sql: str, execute: Execute, parameters: Any = ()) -> Any:
    """Run the ALTER TABLE ``sql`` with ``execute`` (the caller's: its cursor is returned),
    keeping the capture of its table (module docstring)."""
    schema, name = _target(sql)
    run = _base(conn)
    i = None if name is None or (schema or "main").lower() != "main" else _captured(run, name)
    if i is None:
        return execute(sql, parameters)
    run(f"SAVEPOINT {_SAVEPOINT}")
    try:
        before = _tables(run)
        f = _fold_table(conn, i, name)
        with capture.Writable(conn):
            capture.drop_triggers(conn, i)
        cur = execute(sql, parameters)
        after = _tables(run)
        now = next((n for n in after if n.lower() == name.lower()), None)
        if now is None:  # renamed: the one table that was not there before
            now = next(n for n in after if n not in before)
            old = next(n for n in before if n.lower() == name.lower())
            capture.note_rename(conn, old, now)
        info = capture.table_info(conn, now)
        if info is not None:
            run(f"UPDATE {capture.TABLES} SET name = ?, kind = ? WHERE id = ?", (info.name, info.kind, i))
            with capture.Writable(conn):
                capture.create_triggers(conn, i, info, f)
    except BaseException:
        run(f"ROLLBACK TO {_SAVEPOINT}")
        run(f"RELEASE {_SAVEPOINT}")
        raise
    run(f"RELEASE {_SAVEPOINT}")
    return cur


def execute(conn: sqlite3.Connection, sql: str, parameters: Any = ()) -> Any:
    """``conn.execute`` that keeps the capture through ALTER TABLE (for our own connections)."""
    if is_alter(sql):
        return run_alter(conn, sql, _base(conn), parameters)
    return conn.execute(sql, parameters)


def statements(script: str) -> List[str]:
    """The complete SQL statements of a script, in order (SQLite's own completeness test)."""
    out, start = [], 0
    for m in re.finditer(";", script):
        chunk = script[start:m.end()]
        if sqlite3.complete_statement(chunk):
            out.append(chunk)
            start = m.end()
    if script[start:].strip():
        out.append(script[start:])
    return out


def run_script(conn: sqlite3.Connection, script: str, cursor: Any, plain: Callable[[str], Any]) -> Any:
    """``executescript`` of ``script`` on ``cursor``: ``plain`` (the stdlib's) unless the
    script holds an ALTER TABLE; then statement by statement with executescript's rules:
    a pending transaction is committed first (legacy transaction control), and no
    statement opens one implicitly."""
    if not isinstance(script, str) or not _ALTER_ANYWHERE.search(script):
        return plain(script)
    legacy = getattr(conn, "autocommit", -1) == getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)
    if legacy and conn.in_transaction:
        conn.commit()
    level = conn.isolation_level
    conn.isolation_level = None
    try:
        for stmt in statements(script):
            cursor.execute(stmt)  # an ALTER TABLE takes the cursor's path
    finally:
        conn.isolation_level = level
    return cursor


def _plain(cursor: Any) -> Execute:
    """The cursor's execute without the ALTER TABLE path (no recursion)."""
    return lambda s, p: sqlite3.Cursor.execute(cursor, s, p)


class CaptureCursor(RemoteCursor):
    """The cursor of a replica connection: ALTER TABLE keeps the capture (module docstring;
    RemoteCursor.execute tests the first character, then ``_alter_check``)."""

    __slots__ = ()
    _alter_check = staticmethod(is_alter)

    def _alter_execute(self, sql: str, parameters: Any = ()) -> Any:
        try:
            return run_alter(self.connection, sql, _plain(self), parameters)
        except sqlite3.Error as exc:  # a failed page fetch surfaces as its real cause
            real = self._fail(exc)
            if real is exc:
                raise
            raise real from exc

    def executescript(self, sql_script: str):  # type: ignore[override]
        return run_script(self.connection, sql_script, self, lambda s: RemoteCursor.executescript(self, s))


def connection_methods(base: type) -> dict:
    """What a replica connection class derived from ``base`` (a ``remote_class``) adds:
    the ALTER TABLE path of its ``execute`` (``_RemoteMixin.execute`` tests the first
    character, then ``_alter_check``: no extra Python frame for other statements) and of
    its ``executescript``."""

    def alter_execute(self: sqlite3.Connection, sql: str, parameters: Any = ()) -> Any:
        return self.cursor().execute(sql, parameters)  # CaptureCursor's path

    def executescript(self: sqlite3.Connection, script: str) -> Any:
        if not isinstance(script, str) or not _ALTER_ANYWHERE.search(script):
            return base.executescript(self, script)
        return self.cursor().executescript(script)

    return {"_alter_check": staticmethod(is_alter), "_alter_execute": alter_execute, "executescript": executescript}
