"""The unpushed tail of a captured table: its rows above the frontier, never logged.

WHY. A trigger that logs every inserted row costs ~1.5x on a bulk insert (one more B-tree
append per row); a trigger whose WHEN compares the rowid with a constant and is false costs
~1.14x, as much as an empty trigger (benchmarks/bench_sync.py). So each captured table
with a rowid (kinds alias and rowid, and pk tables that are not WITHOUT ROWID) has a
frontier F, a constant in its triggers (capture.create_triggers) recorded in
``sqlite_tdb_state`` in the same transaction, and this INVARIANT:

  (1) every change to a row whose rowid is <= F is logged, as without a tail (the update
      trigger fires when the old OR the new rowid is <= F, the delete trigger when the old
      one is; recursive triggers are on, so REPLACE's deletes count too);
  (2) every row whose rowid is > F is pending: an insert nothing logged, to be sent as it
      is now (a tail row updated or deleted before it is sent needs no log row: it is sent
      as it then is, or not at all). Sending one twice is harmless (upserts).

F starts at the table's largest rowid (install, upgrade: every row there is synced or
logged) when reading it costs no fetch (every page local: a full replica, a table created
here); otherwise the table logs every change until the first push starts its tail
(``fold``, which reads it before taking the write lock). WITHOUT ROWID tables (and tables whose every rowid name a column shadows) have
no tail: every change is logged.

READERS OF THE PENDING CHANGES (changes.collect) read the log AND the tail, in one
snapshot: a tail row is a change with an id above every logged one (``tail_id``).

FOLDING (``fold``) turns a tail into log rows in bulk - one INSERT ... SELECT of its keys,
no trigger per row - and raises F to the table's largest rowid, triggers rewritten in the
SAME local write transaction. push() folds at its START (push.py), before it collects:
from then on every change to those rows is logged, so a row changed while the push is on
the network is sent again by the next push (after the fold; marking the tail pushed at
the END instead would lose that change). Push never sends a tail row: one sent would stay
in the tail, so its later delete or key change would log nothing and the server would keep
it; rows inserted between the fold and the collect are folded and collected again
(push._prepare). The pull's rebase does not
fold (it must not write before setting the local layer aside): its extraction reads the
tail as changes above every log id, so they are replayed whatever the floor; on the new
revision every replayed row is logged (its floor may predate a push racing the pull, so a
replayed row may be on the server already: in a tail, its later delete would log nothing),
and the tails start above them after the replay (``start``).

TRANSACTIONS. Folded rows carry no transaction id; the first gets x = capture.BULK and
push cuts no batch before it (batches.py); a push that sends tail rows (inserted after its
fold) cuts none at all. One local transaction therefore never spans two server
transactions, though batches are coarser than the log's marks alone would allow.

EXACT BATCHES. A connection with ``push_operations_threshold`` wants its pushes cut at
local transaction boundaries, which the tail does not record. So its connect and its
pushes turn the replica's tails off (``set_enabled``; ``'tails'`` = 0 in
``sqlite_tdb_state``): the tails are folded once (those rows go as one batch, as above) and
from then on every insert is logged with its transaction's mark - the capture then costs
what it costs without tails (~1.5x on a bulk insert, bench_sync.py). A push without a
threshold turns them on again.
"""

from __future__ import annotations

import sqlite3
from typing import Dict, List, Optional, Tuple

from . import capture
from .capture import TableInfo, qi


def tables(conn: sqlite3.Connection,
           infos: Optional[Dict[str, TableInfo]] = None) -> List[Tuple[int, TableInfo, int]]:
    """(table id, shape, frontier) of every table whose triggers keep a tail (``infos``:
    the tables' shapes, when the caller has them)."""
    fronts = capture.frontiers(conn)
    if not fronts:
        return []
    trig = capture.our_triggers(conn)
    out = []
    for i, name, kind in conn.execute(f"SELECT id, name, kind FROM {capture.TABLES}").fetchall():
        f = fronts.get(i)
        if f is None or any(trig.get(t) != name for t in capture.trigger_names(i, True)):
            continue
        info = capture.table_info(conn, name) if infos is None else infos.get(name)
        if info is not None and info.kind == kind and info.rowid is not None:
            out.append((i, info, f))
    return out


def rows_sql(info: TableInfo, what: str) -> str:
    """``SELECT what FROM table WHERE rowid > ?``: the tail (parameter: the frontier)."""
    return f"SELECT {what} FROM {qi(info.name)} WHERE {info.rowid} > ?"


def nonempty(conn: sqlite3.Connection, info: TableInfo, f: int) -> bool:
    return conn.execute(rows_sql(info, "1") + " LIMIT 1", (f,)).fetchone() is not None


def count(conn: sqlite3.Connection) -> int:
    """Rows in every tail (pending, not logged)."""
    return sum(int(conn.execute(rows_sql(info, "COUNT(*)"), (f,)).fetchone()[0]) for _, info, f in tables(conn))


def log_rows(conn: sqlite3.Connection, i: int, info: TableInfo, f: int) -> Tuple[int, int]:
    """Table id ``i``'s tail into the log (inside the caller's write transaction; the
    caller raises the frontier in the same one); (rows logged, the new frontier)."""
    top = capture.top_rowid(conn, info, safe=False)
    if top is None or top <= f:
        return 0, f
    cur = conn.execute(f"INSERT INTO {capture.LOG}(t, k) {rows_sql(info, f'{i}, {info.key_of_rows()}')} "
                       f"ORDER BY {info.rowid}", (f,))
    return max(cur.rowcount, 0), top


def unstarted(conn: sqlite3.Connection) -> List[Tuple[int, TableInfo]]:
    """(table id, shape) of the tables that could keep a tail and log every change instead
    (capture installed where reading their largest rowid could have fetched pages)."""
    fronts = capture.frontiers(conn)
    trig = capture.our_triggers(conn)
    out = []
    sqls = {name: sql for name, sql in capture.user_tables(conn)}
    for i, name, kind in conn.execute(f"SELECT id, name, kind FROM {capture.TABLES}").fetchall():
        if i in fronts or name not in sqls or any(trig.get(t) != name for t in capture.trigger_names(i, False)):
            continue
        info = capture.table_info(conn, name, sqls[name])
        if info is not None and info.kind == kind and info.rowid is not None:
            out.append((i, info))
    return out


def needed(conn: sqlite3.Connection, enabled: bool = True) -> bool:
    """A fold has work: a tail holds rows, or a table's tail is to start, or the tails are
    to be switched on or off (``enabled``: set_enabled). Reads the tables' largest rowids,
    so a fold in the write transaction after finds their pages local (no fetch under the
    lock on a partial replica)."""
    todo = [info for _, info in unstarted(conn)] if enabled else []
    tailed = tables(conn)
    work = (capture.tails_enabled(conn) != enabled or bool(todo)
            or any(nonempty(conn, info, f) for _, info, f in tailed))
    if work:
        for info in todo + [info for _, info, _ in tailed]:
            capture.top_rowid(conn, info)
    return work


def fold(conn: sqlite3.Connection) -> int:
    """Every tail into the log, frontiers raised, tails started where none is (inside the
    caller's write transaction: the log rows and the new triggers commit together); the
    number of rows folded."""
    first = conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {capture.LOG}").fetchone()[0]
    n = 0
    for i, info, f in tables(conn):
        rows, top = log_rows(conn, i, info, f)
        if top == f:
            continue
        n += rows
        with capture.Writable(conn):
            capture.drop_triggers(conn, i, True)
            capture.create_triggers(conn, i, info, top)
    start(conn)
    if n:
        capture.mark_bulk(conn, first)
    return n


def set_enabled(conn: sqlite3.Connection, on: bool) -> None:
    """Tails on (the default) or off, inside the caller's write transaction. Off, every
    tail is folded and every table logs every change with its transaction's mark, so
    push_operations_threshold can cut between local transactions (batches.py): push and
    connect turn them off for a connection that has a threshold, a push without one turns
    them on again (EXACT BATCHES in the module docstring)."""
    if capture.tails_enabled(conn) == on:
        return
    capture.set_tails_enabled(conn, on)
    fold(conn)  # off: the tails into the log, their triggers without a frontier; on: started


def start(conn: sqlite3.Connection) -> None:
    """Tails for the tables that log every change (inside the caller's write transaction):
    every change so far is logged, so each starts above the rows it holds. Nothing while
    the tails are off (set_enabled)."""
    if not capture.tails_enabled(conn):
        return
    todo = [(i, info, capture.top_rowid(conn, info)) for i, info in unstarted(conn)]
    todo = [(i, info, top) for i, info, top in todo if top is not None]  # (None: unreadable)
    if todo:
        with capture.Writable(conn):
            for i, info, top in todo:
                capture.drop_triggers(conn, i, False)
                capture.create_triggers(conn, i, info, top)
