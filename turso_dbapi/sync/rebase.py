"""Rebase of a pull: set the local layer aside, apply the remote revision, replay the
unpushed changes on top (spec §6.5 steps 8-9, §6.6), crash-safe.

The sequence (apply.py drives it; the network is already done and staged):

1. Under the internal connection's ``BEGIN EXCLUSIVE`` (every transaction of every process
   is over): ``<replica>-tdbreplay`` (``replay_file``: a small SQLite database) holds every
   change the log holds (and every row of tables without triggers yet, and every tail
   row - tail.py: an id above every log id, so it is replayed whatever the floor), with its log id,
   key and local row - temp, fsync, rename, fsync dir. Then ``pending_pull`` is recorded.
   The file is extracted just before the lock (``prepare``: one read transaction, rows
   copied in SQL into the attached file) and published under the lock only if no
   transaction committed in between (``PRAGMA data_version``); otherwise ``extract``
   writes it again under the lock.
   From here a crash redoes everything below from the stage and the replay file.
2. The apply flag is set, the synced layer switches to the new revision, the local layer is
   dropped whole (pagestore.c rule (16)) and the logical size returns to the synced size:
   pages only the replica had allocated are gone, nothing reads past the new end.
3. The exclusive transaction ends. The flag (held by a live puller) keeps every other
   connection of every process out (vfs.c rule (13): SQLITE_BUSY, their busy handler
   retries), so nobody sees the new revision without the replay.
4. A fresh internal connection (an empty page cache: it reads the new revision) runs one
   write transaction: ``replay`` reads the replay floor FROM THE JUST-APPLIED SNAPSHOT (the
   ``turso_sync_last_change_id`` row of this client: same generation -> its change id,
   older -> 0; §6.6: never from the server, which may be ahead of the pages), installs the
   capture machinery afresh (generation + 1, the new revision's schema as the synced one),
   runs the DDL and the row statements above the floor - set-based: per table, one
   ``executemany`` of deletes and one of upserts (the SQL push would send), fed by cursors
   over the replay file; row by row only with a conflict hook or when a statement fails -
   captured again by the new triggers, so they stay unpushed with new log ids - and commits.
5. Metadata switches, the stage and the replay file go, the flag clears.

Readers therefore see the old state (with its local changes) or the new one with them
replayed, never a mix. Rows both sides changed: the replayed local row wins (last writer
wins, as Turso does) unless ``on_conflict`` says otherwise.

CONFLICTS. ``on_conflict(c)`` is called for each replayed row whose server row differs
from the local one in the new revision and which the server changed in this pull (its
row is on a page the pull brought). ``c`` has ``table``, ``key``, ``local`` (dict or None
for a delete), ``server`` (dict or None). It returns ``"local"`` (replay, the default),
``"server"`` (skip: the server's row stays) or a dict (the merged row, written instead).
A replayed statement the new revision rejects (a constraint the server's rows now break)
is reported the same way with ``c.error`` set; keeping ``"local"`` then skips it with a
warning (it cannot be applied), so a pull never fails half-way.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import sqlite3
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

from ..errors import OperationalError
from . import capture, ddl
from . import replay_file
from .server_changes import ServerChanges  # noqa: F401 (re-exported: wal_apply, apply)
from .changes import Change, Stmt, collect, current_row, rowid_changes_sql, statements, upsert_from
from ..storage.files import REPLAY

log = logging.getLogger("turso_dbapi")


def replay_path(replica: str) -> str:
    return replica + REPLAY


def remove_replay(replica: str) -> None:
    """No directory fsync (as for the stage): a replay file that outlives a crash with no
    pending pull recorded is never read, and the next extraction replaces it."""
    try:
        os.remove(replay_path(replica))
    except FileNotFoundError:
        pass


# DDL statements in the replay file's JSON: int, float (repr round-trips exactly; inf as
# Infinity), str and None as they are; a blob becomes {"b": base64}.
def _enc(values: Any) -> Any:
    return [{"b": base64.b64encode(v).decode("ascii")} if isinstance(v, (bytes, bytearray, memoryview)) else v
            for v in values]


def _stmt_json(s: Stmt) -> Any:
    return [s.sql, _enc(s.args), s.table, s.change_id, s.tolerate]


def _stmt_of(j: Any) -> Stmt:
    return Stmt(j[0], replay_file.decode_values(j[1]), j[2], j[3], j[4])


def local_changes(store: Any) -> List[int]:
    """Up to 3 pages the local layer changed (entries that change nothing - a rolled-back
    transaction that spilled pages wrote the old bytes back - are cleared on the way)."""
    found: List[int] = []
    p = store.first_local(1)
    while p and len(found) < 3:
        if not store.forget_unchanged_local(p):
            found.append(p)
        p = store.first_local(p + 1)
    return found


def _fill(ic: sqlite3.Connection, out: replay_file.Writer, after: int = 0) -> Dict[str, Any]:
    """The local changes logged after ``after`` into ``out`` (inside the caller's
    transaction on ``ic``); the doc. Its "last" is the newest log id seen; "whole": rows of
    tables nothing logs yet, read whole (a later catch-up, ``extract_since``, could not
    tell their deletes); "tails": {table: frontier} of the non-empty tails (tail.py), whose
    rows carry the change id "tail_id"."""
    changes = collect(ic, after, untracked_rows=True, rowid_rows=False)
    doc: Dict[str, Any] = {"gen": capture.generation(ic), "before": [_stmt_json(s) for s in changes.before],
                           "after": [_stmt_json(s) for s in changes.after], "last": changes.last_id,
                           "whole": any(ch.change_id > changes.last_id and ch.table not in changes.tails
                                        for ch in changes.rows),
                           "tails": dict(changes.tails), "tail_id": changes.tail_id}
    # Tables keyed by rowid: their logged rows go from the replica to the file in SQL.
    for name, t in changes.by_rowid.items():
        f = changes.tails.get(name)  # its tail (tail.py) too, above every log id
        args = (t, 0) if f is None else (t, 0, f, changes.tail_id)
        out.table(changes.infos[name], False, select=(ic, rowid_changes_sql(changes.infos[name], tail=f is not None), args))
    grouped: Dict[str, List[Change]] = {}
    for ch in changes.rows:  # primary keys, tables without triggers yet
        grouped.setdefault(ch.table, []).append(ch)
    for name, chs in grouped.items():
        info = changes.infos[name]
        none = (None,) * len(info.columns)
        out.table(info, info.kind == "pk" and _without_rowid(ic, name),
                  ((ch.change_id, ch.row is not None, *ch.key,
                    *(none if ch.row is None else (ch.row[c] for c in info.columns))) for ch in chs))
    return doc


def extract(ic: sqlite3.Connection, replica: str, store: Any, display_url: str) -> int:
    """Step 1: the replay file (``replay_file``); returns the number of row changes in it.
    A replica without change capture (written by a raw connection of this VFS) that has
    local changes is refused: nothing records them, so setting the layer aside would lose
    them."""
    doc: Dict[str, Any] = {"gen": 0, "before": [], "after": []}
    if not capture.installed(ic):
        pages = local_changes(store)
        if pages:
            raise OperationalError(
                f"pull from {display_url}: the replica {replica} has local changes (pages "
                f"{', '.join(map(str, pages))}...) made without change capture, so pulling would "
                "lose them; nothing was changed. Open it with turso_dbapi.connect() (which "
                "installs capture and logs every row) and pull again")
    out = replay_file.Writer(replay_path(replica))
    try:
        if capture.installed(ic):
            doc = _fill(ic, out)
        return out.finish(doc)
    except BaseException:
        out.discard()
        raise


def extract_since(ic: sqlite3.Connection, replica: str, after: int) -> Tuple[replay_file.Writer, Dict[str, Any]]:
    """Inside the caller's transaction on ``ic``: the changes logged after ``after`` into a
    scratch replay file (neither durable nor published: a WAL pull's catch-up replays it
    at once, ``sync.wal_apply``); the writer (``discard`` it after) and the doc."""
    out = replay_file.Writer(replay_path(replica) + ".since")
    try:
        doc = _fill(ic, out, after)
        out.keep(doc)
        return out, doc
    except BaseException:
        out.discard()
        raise


class Prepared:
    """A replay file extracted BEFORE the exclusive lock (``prepare``), in SQL through the
    replica's connection; valid under the lock if no transaction committed since. ``doc``:
    what ``_fill`` recorded (gen, last, rows_only...)."""

    def __init__(self, out: replay_file.Writer, version: int, doc: Optional[Dict[str, Any]] = None):
        self.out, self.version, self.doc = out, version, doc or {}

    def use(self, ic: sqlite3.Connection) -> bool:
        """Under ``ic``'s exclusive lock: publish the file and answer True when the replica
        is as it was extracted (``PRAGMA data_version``: another connection's commit moves
        it); otherwise drop it and answer False (extract again)."""
        if ic.execute("PRAGMA data_version").fetchone()[0] != self.version:
            self.out.discard()
            return False
        self.out.finish()
        return True

    def discard(self) -> None:
        self.out.discard()


def prepare(ic: sqlite3.Connection, replica: str, durable: bool = True) -> Optional[Prepared]:
    """Step 1 ahead of the lock: the replay file extracted in one read transaction of ``ic``
    (outside any transaction when called) into the file attached to it - INSERT ... SELECT
    from the replica, which ``extract`` cannot do under the lock (the lock's transaction is
    rolled back) - then fsynced; None without change capture (``extract`` decides)."""
    try:
        if not capture.installed(ic):
            return None
        out = replay_file.Writer(replay_path(replica), attach_to=ic)
    except sqlite3.Error:
        return None  # (busy, say) the lock's path extracts
    try:
        ic.execute("BEGIN")
        try:
            version = ic.execute("PRAGMA data_version").fetchone()[0]
            doc = _fill(ic, out)
            out.write_doc(doc)
            ic.execute("COMMIT")
        except BaseException:
            ic.execute("ROLLBACK")
            raise
        out.detach(durable=durable)
        return Prepared(out, version, doc)
    except sqlite3.Error:
        out.discard()
        return None
    except BaseException:
        out.discard()
        raise


def _without_rowid(ic: sqlite3.Connection, table: str) -> bool:
    row = ic.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return bool(row and capture.WITHOUT_ROWID.search(row[0] or ""))


@dataclasses.dataclass
class Conflict:
    table: str
    key: Tuple[Any, ...]
    local: Optional[Dict[str, Any]]
    server: Optional[Dict[str, Any]]
    error: Optional[str] = None


OnConflict = Callable[[Conflict], Any]


def replay_floor(rc: sqlite3.Connection, client_id: str, gen: int) -> int:
    """§6.5 step 8: from the just-applied snapshot, never from the server."""
    try:
        row = rc.execute("SELECT pull_gen, change_id FROM turso_sync_last_change_id WHERE client_id = ?",
                         (client_id,)).fetchone()
    except sqlite3.OperationalError:  # no such table: nothing of ours was ever pushed
        return 0
    if row is None:
        return 0
    remote_gen, change_id = int(row[0] or 0), int(row[1] or 0)
    if remote_gen > gen:
        # A protocol violation (§6.5); replaying everything is always safe (idempotent SQL).
        log.warning("replay: the snapshot has generation %d for this client, ahead of the local %d; "
                    "replaying every local change", remote_gen, gen)
        return 0
    return change_id if remote_gen == gen else 0


def _server_row(rc: sqlite3.Connection, info: capture.TableInfo, key: Tuple[Any, ...]) -> Optional[Dict[str, Any]]:
    try:
        return current_row(rc, info, key)
    except sqlite3.Error:
        return None  # the table or a column is gone in the new revision


def replay(rc: sqlite3.Connection, replica: str, client_id: str, *, server: Optional[ServerChanges] = None,
           on_conflict: Optional[OnConflict] = None, path: Optional[str] = None,
           install: bool = True) -> Tuple[int, int]:
    """Step 4 inside the caller's write transaction; (changes replayed, skipped). ``path``:
    a replay file other than the replica's (a WAL pull's, not published). Without
    ``install`` the capture installed by an earlier replay of the same pull stays and the
    DDL is not run again (a WAL pull's catch-up: row changes logged since that replay's
    extraction, whose DDL it ran, on top; logged by the same triggers). Every replayed row
    is logged, as before tails (tail.py): the floor may predate a push racing this pull, so
    a replayed row may be on the server already, and in a tail its later delete would log
    nothing. The tails start above them after the commit (pull_end.start_tails)."""
    src = replay_file.Reader(path or replay_path(replica))
    try:
        doc = src.doc
        gen = int(doc.get("gen", 0))
        floor = replay_floor(rc, client_id, gen)
        if install:
            capture.install(rc, gen=gen + 1)
        for j in doc["before"] if install else ():
            _run(rc, _stmt_of(j))
        if on_conflict is None and not src.legacy and attached(rc):
            replayed = skipped = 0
            for i, (info, _) in enumerate(src.tables):  # set-based: a few statements per table
                ok, failed = _replay_table(rc, src, i, info, floor)
                replayed += ok
                skipped += failed
        else:
            replayed, skipped = _replay_rows(rc, src.all_changes(floor), server, on_conflict)
        _log_deletes(rc, src, floor)
        for j in doc["after"] if install else ():
            _run(rc, _stmt_of(j))
    finally:
        src.close()
    if install:  # (a catch-up runs no DDL: its tables have their triggers already)
        capture.ensure_triggers(rc, log_rows=True)  # tables the replayed DDL created
    return replayed, skipped


def _log_deletes(rc: sqlite3.Connection, src: replay_file.Reader, floor: int) -> None:
    """Every replayed delete is logged, also of a row the new revision does not hold (no
    trigger fires for it): the floor may predate a push racing this pull that sent the
    row, and that push's server state must still get the delete (spec 6.6). A row the
    trigger logged too has two log rows: harmless (push sends each key once). One
    INSERT ... SELECT a table from the attached replay file (set-based), else row by row."""
    ids = {name: i for i, name in rc.execute(f"SELECT id, name FROM {capture.TABLES} ORDER BY id")}
    found: Dict[str, List[Tuple[Any, ...]]] = {}
    if src.legacy:
        for info, _, ch in src.all_changes(floor):
            if ch.row is None:
                found.setdefault(info.name, []).append(tuple(ch.key))
    in_sql = not src.legacy and attached(rc)
    for i, (info, _) in enumerate(src.tables):
        t = ids.get(info.name)
        if t is None:  # created by the replayed DDL: ensure_triggers logs its every row
            continue
        n = replay_file.key_width(info)
        if in_sql:
            key = "k0" if info.kind != "pk" else "||','||".join(f"quote(k{j})" for j in range(n))
            rc.execute(f"INSERT INTO {capture.LOG}(t, k) SELECT {int(t)}, {key} FROM tdb_replay.r{i} "
                       "WHERE m > ? AND NOT present", (floor,))
            continue
        key = "?1" if info.kind != "pk" else "||','||".join(f"quote(?{j + 1})" for j in range(n))
        keys = found.get(info.name, []) if src.legacy else src.select(i, [f"k{j}" for j in range(n)], floor,
                                                                       "NOT present")
        rc.executemany(f"INSERT INTO {capture.LOG}(t, k) VALUES ({int(t)}, {key})", keys)


def attach(rc: sqlite3.Connection, replica: str, path: Optional[str] = None) -> bool:
    """Attach the replay file (format 3; ``path``, else the replica's) to ``rc`` as
    ``tdb_replay``, read-only, before its write transaction begins (SQLite attaches outside
    transactions only): the set-based replay reads it in SQL. False when there is none (or
    a format 2 file)."""
    path = path or replay_path(replica)
    if not replay_file.is_sqlite(path):
        return False
    rc.execute("ATTACH DATABASE ? AS tdb_replay", (f"file:{quote(path)}?mode=ro",))
    return True


def _replay_table(rc: sqlite3.Connection, src: replay_file.Reader, i: int, info: capture.TableInfo,
                  floor: int) -> Tuple[int, int]:
    """Table i's changes above ``floor`` in two statements over the attached replay file:
    the deletes (one DELETE ... IN; for a primary key other than the rowid, an
    ``executemany`` of NULL-safe deletes, which an upsert whose key holds a NULL also
    needs first), then the upserts as one INSERT ... SELECT ... ON CONFLICT, oldest change
    first. If one fails (a constraint the new revision breaks), the table is redone row by
    row: every statement is idempotent, and the rows that cannot be applied are skipped
    with a warning."""
    n = src.count(i, floor)
    if not n:
        return 0, 0
    nk = replay_file.key_width(info)
    keys = [f"k{j}" for j in range(nk)]
    cols = ", ".join((["k0"] if info.kind == "rowid" else []) + [f"c{j}" for j in range(len(info.columns))])
    table = f"tdb_replay.r{i}"
    try:
        if info.kind == "pk":
            null_key = " OR ".join(f"{k} IS NULL" for k in keys)
            delete_sql = statements(info, Change(info.name, (1,) * nk, None, 0))[0].sql
            rc.executemany(delete_sql, src.select(i, keys, floor, f"NOT present OR {null_key}"))
        else:
            key = capture.qi(info.pk[0]) if info.kind == "alias" else info.rowid_name
            rc.execute(f"DELETE FROM {capture.qi(info.name)} WHERE {key} IN "
                       f"(SELECT k0 FROM {table} WHERE m > ? AND NOT present)", (floor,))
        rc.execute(upsert_from(info, f"SELECT {cols} FROM {table} WHERE m > ? AND present ORDER BY m"), (floor,))
        return n, 0
    except sqlite3.Error:
        ok = failed = 0
        for ch in src.changes(i, floor):
            if _apply(rc, info, ch, None):
                ok += 1
            else:
                failed += 1
        return ok, failed


def attached(rc: sqlite3.Connection) -> bool:
    return any(row[1] == "tdb_replay" for row in rc.execute("PRAGMA database_list"))


def _replay_rows(rc: sqlite3.Connection, rows: List[Tuple[capture.TableInfo, bool, Change]],
                 server: Optional[ServerChanges], on_conflict: Optional[OnConflict]) -> Tuple[int, int]:
    """Replay change by change, oldest first (with a conflict hook, or a format 2 file)."""
    replayed = skipped = 0
    run: List[Tuple[capture.TableInfo, Change]] = []  # consecutive rows of one SQL shape
    for info, without_rowid, ch in rows:
        if on_conflict is not None:
            theirs = _server_row(rc, info, ch.key)
            if theirs != ch.row and (server is None or server.changed(info, ch.key, without_rowid)):
                decision = on_conflict(Conflict(ch.table, ch.key, ch.row, theirs))
                decided = _decide(ch, decision)
                if decided is None:
                    skipped += 1
                    continue
                ch = decided
            if _apply(rc, info, ch, on_conflict):
                replayed += 1
            else:
                skipped += 1
            continue
        run.append((info, ch))
    ok, failed = _apply_runs(rc, run)
    return replayed + ok, skipped + failed


def _apply_runs(rc: sqlite3.Connection, changes: List[Tuple[capture.TableInfo, Change]]) -> Tuple[int, int]:
    """Replay without a hook: consecutive rows of one statement shape go in one
    ``executemany``; if one fails, the run is redone row by row (every statement is
    idempotent, so the rows the failed ``executemany`` had applied are simply applied again)."""
    ok = failed = 0
    i = 0
    while i < len(changes):
        info, ch = changes[i]
        stmts = statements(info, ch)
        if len(stmts) != 1:  # a NULL-safe delete first: not batched
            if _apply(rc, info, ch, None):
                ok += 1
            else:
                failed += 1
            i += 1
            continue
        sql = stmts[0].sql
        args = [stmts[0].args]
        j = i + 1
        while j < len(changes):
            more = statements(*changes[j])
            if len(more) != 1 or more[0].sql != sql:
                break
            args.append(more[0].args)
            j += 1
        try:
            rc.executemany(sql, args)
            ok += j - i
        except sqlite3.Error:
            for info2, ch2 in changes[i:j]:
                if _apply(rc, info2, ch2, None):
                    ok += 1
                else:
                    failed += 1
        i = j
    return ok, failed


def _decide(ch: Change, decision: Any) -> Optional[Change]:
    if decision is None or decision == "local":
        return ch
    if decision == "server":
        return None
    if isinstance(decision, dict):
        return Change(ch.table, ch.key, dict(decision), ch.change_id)
    raise ValueError(f"on_conflict returned {decision!r}; expected 'local', 'server' or a dict (the merged row)")


def _apply(rc: sqlite3.Connection, info: capture.TableInfo, ch: Change, on_conflict: Optional[OnConflict]) -> bool:
    try:
        # No savepoint per row (it doubled the replay's cost): a failing statement is
        # undone by SQLite itself (ABORT), the transaction goes on.
        for s in statements(info, ch):
            rc.execute(s.sql, s.args)
        return True
    except sqlite3.Error as exc:
        decision = None
        if on_conflict is not None:
            decision = on_conflict(Conflict(ch.table, ch.key, ch.row, _server_row(rc, info, ch.key), str(exc)))
        if isinstance(decision, dict):
            return _apply(rc, info, Change(ch.table, ch.key, decision, ch.change_id), None)
        log.warning("pull: the local change to %s %r cannot be replayed on the new revision (%s); "
                    "the server's row stays", ch.table, ch.key, exc)
        return False


def _run(rc: sqlite3.Connection, s: Stmt) -> None:
    try:
        ddl.execute(rc, s.sql, s.args)  # an ALTER TABLE keeps the capture of its table
    except sqlite3.Error as exc:
        if s.tolerate and s.tolerate in str(exc):
            return
        log.warning("pull: replaying %r failed on the new revision (%s); skipped", s.sql, exc)

