"""``push()``: the unpushed changes as idempotent SQL over ``/v2/pipeline`` (spec §3.5, §6.7).

1. Under the replica's push lock (one push at a time, across processes), tables created
   since the last push get their triggers (capture.ensure_triggers) and every table's
   unpushed tail is folded into the log (tail.fold: its keys in one INSERT ... SELECT,
   its frontier raised) - one short local write. Folding at the START is what keeps a
   tail row changed while the push is on the network: from here on its changes are logged.
   Push never sends a tail row (step 3 folds again rows inserted meanwhile).
2. The server's high-water row ``(pull_gen, change_id)`` of this client (§3.5 a): with the
   local generation ``g``: remote gen == g -> send the log after ``change_id``; remote gen
   < g (or no row / no table) -> send everything; remote gen > g is a protocol error.
3. One local read transaction collects the changes (changes.collect), then ends: the
   network runs with no local lock held, and local writers keep writing. It runs while
   the read of step 2 is in flight, after the mark this replica last pushed (the push
   state's hint); if the server's mark differs, it runs again after that one. A snapshot
   that holds tail rows (inserted after step 1) is not used: they are folded and the
   collect runs again, the last time folding under the write lock (``FOLD_ATTEMPTS``).
4. Batches (one ``/v2/pipeline`` call, one server transaction each): ``BEGIN IMMEDIATE``;
   ``CREATE TABLE IF NOT EXISTS turso_sync_last_change_id``; a guard that fails unless the
   high-water row is still the one the batch was built on (a compare-and-set: a batch of
   an earlier attempt that was delayed in the network and committed after its client gave
   up makes this one roll back, and the push starts over from the new row); the statements; the upsert
   of ``(client_id, g, newest log id in the batch)``; ``COMMIT``; ``ROLLBACK``. Every step
   after BEGIN runs only while the transaction is open AND the previous step succeeded (an
   ``ok`` condition; ADD COLUMN steps may fail with "duplicate column"), so a failing
   statement skips the rest, COMMIT included, and the final ROLLBACK discards the whole
   batch - also on servers that, like the Rust reference server, would otherwise commit
   the steps after a failed one (§3.5 caveat). With ``push_operations_threshold`` a batch
   is cut at the first local transaction boundary no changed key crosses once it holds that
   many row changes (batches.py; an over-threshold batch is sent whole when there is none):
   one local transaction never spans two server transactions.
5. A lost reply (the batch may or may not have committed) is retried from step 2: the
   high-water row committed with the data says what the server has, so nothing is applied
   twice. A refused statement raises ``PushRejectedError`` (``PushConstraintError`` for
   constraint failures) naming the table and the statement; batches before it stay
   committed and the high-water row says so.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import ProtocolError, PushConstraintError, PushRejectedError, RemoteError
from ..protocol import hrana_batch as hrana
from ..transport.http import HttpClient, Reply
from . import capture, tail
from .batches import split
from .changes import Change, Changes, Stmt, collect
from .._util.atomic import write_atomic
from .._util.gcpause import paused
from ..storage.files import PUSH_STATE

PIPELINE_PATH = "/v2/pipeline"
HW_CREATE = ("CREATE TABLE IF NOT EXISTS turso_sync_last_change_id "
             "(client_id TEXT PRIMARY KEY, pull_gen INTEGER, change_id INTEGER)")
HW_SELECT = "SELECT pull_gen, change_id FROM turso_sync_last_change_id WHERE client_id = ?"
HW_UPSERT = ("INSERT INTO turso_sync_last_change_id(client_id, pull_gen, change_id) VALUES (?, ?, ?) "
             "ON CONFLICT(client_id) DO UPDATE SET pull_gen=excluded.pull_gen, change_id=excluded.change_id")
RETRIES = 3  # pushes redone from the high-water row after a lost reply
# Compare-and-set on the high-water row: the step fails ("integer overflow") when the row is
# no longer the one this batch was built on - a batch of an earlier attempt, delayed in the
# network after its client gave up, committed first. The batch then rolls back whole.
HW_GUARD = ("SELECT abs(-9223372036854775808) WHERE (SELECT pull_gen || ':' || change_id FROM "
            "turso_sync_last_change_id WHERE client_id = ?) IS NOT ?")
FIRST = 3  # index of a batch's first statement: BEGIN, CREATE TABLE, the guard come before
FOLD_ATTEMPTS = 3  # collects that find rows inserted since the fold before one holds the lock

Transform = Callable[[Change], Optional[Change]]


@dataclasses.dataclass
class PushResult:
    batches: int = 0
    rows: int = 0  # row changes sent (after transform)
    statements: int = 0
    bytes: int = 0  # request body bytes
    gen: int = 0
    last_change_id: int = 0


# -- push statistics (a file of its own: pulls rewrite the sync metadata concurrently) -----


def load_state(replica: str) -> dict:
    try:
        with open(replica + PUSH_STATE, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_state(replica: str, result: PushResult) -> None:
    state = load_state(replica)
    state["last_push_unix_time"] = int(time.time())
    state["pushed_rows"] = int(state.get("pushed_rows", 0)) + result.rows
    state["pushed_bytes"] = int(state.get("pushed_bytes", 0)) + result.bytes
    state["last_pushed_pull_gen_hint"] = result.gen
    state["last_pushed_change_id_hint"] = result.last_change_id
    write_atomic(replica + PUSH_STATE, json.dumps(state).encode())


# -- the pipeline ------------------------------------------------------------------------------


class Pipeline:
    """``/v2/pipeline`` calls of one replica (its source's HTTP client and counters)."""

    def __init__(self, http: HttpClient, base_url: str, display_url: str):
        self.http = http
        self.endpoint = base_url + PIPELINE_PATH
        self.display_url = display_url
        self.sent_bytes = 0

    def call(self, steps: List[Any], what: str) -> Tuple[list, list]:
        body = hrana.batch_body(steps)
        self.sent_bytes += len(body)

        def check(reply: Reply) -> Tuple[list, list]:
            if reply.status != 200:
                excerpt = reply.body[:300].decode("utf-8", "replace").strip()
                raise RemoteError(f"{what}: {reply.where()} -> HTTP {reply.status}: {excerpt!r}; "
                                  "check the URL, the auth token and the server's log",
                                  url=self.display_url, status=reply.status)
            try:
                with paused():  # a 10k-step reply is 10k small dicts (_util/gcpause.py)
                    return hrana.batch_reply(json.loads(reply.body), len(steps))
            except ValueError as exc:  # JSON or shape (json.JSONDecodeError is a ValueError)
                raise ProtocolError(f"{what}: {self.display_url} answered {PIPELINE_PATH} with a malformed "
                                    f"reply ({exc}); is this a Turso / libSQL server?",
                                    url=self.display_url, status=reply.status) from None

        # Not idempotent at the HTTP level: a batch is never re-sent blindly after it left;
        # push() re-reads the high-water row instead (module docstring, 5).
        return self.http.request("POST", self.endpoint, data=body, idempotent=False, check=check, what=what,
                                 headers={"content-type": "application/json"})

    def remote_mark(self, client_id: str) -> Optional[Tuple[int, int]]:
        """(pull_gen, change_id) of this client on the server, or None (§3.5 a)."""
        what = f"push to {self.display_url}: reading the high-water mark"
        results, errors = self.call([hrana.step(hrana.stmt(HW_SELECT, [client_id], want_rows=True))], what)
        if errors and errors[0] is not None:
            if "no such table" in errors[0].message:
                return None
            raise PushRejectedError(f"{what}: {errors[0].message} ({errors[0].code})",
                                    statement=HW_SELECT, code=errors[0].code)
        rows = hrana.rows_of(results[0])
        if not rows:
            return None
        gen, cid = rows[0][:2]
        if not isinstance(gen, int) or not isinstance(cid, int):
            raise ProtocolError(f"{what}: pull_gen/change_id are not integers: {rows[0]!r:.80}",
                                url=self.display_url)
        return gen, cid


def batch_steps(stmts: List[Stmt], client_id: str, gen: int, mark: Optional[int],
                expected: Optional[Tuple[int, int]]) -> List[Any]:
    """The steps of one push batch (module docstring, 4); ``expected`` is the high-water row
    this batch was built on (None: no row)."""
    steps = [hrana.step(hrana.stmt("BEGIN IMMEDIATE"))]

    def chained() -> Any:
        prev = len(steps) - 1
        ran = hrana.ok(prev)
        if FIRST <= prev < FIRST + len(stmts) and stmts[prev - FIRST].tolerate:
            ran = hrana.or_(ran, hrana.failed(prev))
        return hrana.and_(hrana.IN_TRANSACTION, ran)

    steps.append(hrana.step(hrana.stmt(HW_CREATE), hrana.and_(hrana.IN_TRANSACTION, hrana.ok(0))))
    want = None if expected is None else f"{expected[0]}:{expected[1]}"
    steps.append(hrana.step(hrana.stmt(HW_GUARD, [client_id, want]), chained()))
    for s in stmts:
        if s.tolerate:
            steps.append(hrana.step(hrana.stmt(s.sql, s.args), chained()))
        else:  # the common shape, encoded from its SQL's template (no dicts per row)
            steps.append(hrana.template(s.sql).step(len(steps) - 1, s.args))
    if mark is not None:
        steps.append(hrana.step(hrana.stmt(HW_UPSERT, [client_id, gen, mark]), chained()))
    steps.append(hrana.step(hrana.stmt("COMMIT"), chained()))
    steps.append(hrana.step(hrana.stmt("ROLLBACK"), hrana.IN_TRANSACTION))
    return steps


def _failure(stmts: List[Stmt], steps: List[Any], errors: list, results: list, display_url: str) -> Exception:
    for err in errors:
        if err is None:
            continue
        i = err.index
        if FIRST <= i < FIRST + len(stmts) and stmts[i - FIRST].tolerate and stmts[i - FIRST].tolerate in err.message:
            continue
        if i == FIRST - 1:
            return _Moved(f"push to {display_url}: the high-water row moved under this batch")
        if FIRST <= i < FIRST + len(stmts):
            sql = stmts[i - FIRST].sql  # (its step may be pre-encoded text)
        else:
            sql = steps[i]["stmt"]["sql"] if 0 <= i < len(steps) else "(the request)"
        table = stmts[i - FIRST].table if FIRST <= i < FIRST + len(stmts) else ""
        where = f" on table {table!r}" if table else ""
        cls = PushConstraintError if "CONSTRAINT" in err.code.upper() else PushRejectedError
        return cls(f"push to {display_url} failed{where}: {err.message} ({err.code}) in statement "
                   f"{sql!r}; the server rolled this batch back as a whole and nothing of it is marked "
                   "pushed; fix the data (locally or on the server) and push again",
                   table=table, statement=sql, code=err.code)
    commit = len(steps) - 2
    if results[commit] is None:
        return ProtocolError(f"push to {display_url}: the server skipped COMMIT without reporting an error",
                             url=display_url)
    return None  # type: ignore[return-value]


class _Moved(RemoteError):
    """Another batch of this client committed first: build the push again from the mark."""


def push(ic: sqlite3.Connection, replica: str, client_id: str, pipeline: Pipeline, *,
         transform: Optional[Transform] = None, threshold: Optional[int] = None) -> PushResult:
    """Push through the internal connection ``ic`` (isolation_level=None, our VFS)."""
    if not capture.installed(ic):
        raise RemoteError(f"push: the replica {replica} has no change capture (opened by an older version?); "
                          "reopen it with this version", url=pipeline.display_url)
    tails = not threshold  # exact batches need every insert logged (tail.py EXACT BATCHES)
    if capture.untracked(ic) or tail.needed(ic, tails):
        _fold(ic, tails)
    attempt = 0
    while True:
        try:
            result, schema, renames = _push_once(ic, client_id, pipeline, transform, threshold,
                                                 load_state(replica))
            break
        except (PushRejectedError, ProtocolError):
            raise
        except RemoteError:
            attempt += 1  # the reply may be lost after a commit: re-read the mark and go on
            if attempt > RETRIES:
                raise
    _pushed_schema(ic, result.gen, schema, renames)
    _save_state(replica, result)
    return result


def _pushed_schema(ic: sqlite3.Connection, gen: int, schema: dict, renames: Dict[str, str]) -> None:
    """The schema just pushed becomes the DDL baseline, so no schema change is sent twice
    (a crash before this resends it once: every DDL statement tolerates its second run),
    and the renames it sent are forgotten. Skipped when a pull rebased meanwhile: it
    installed the new revision's schema."""
    ic.execute("BEGIN IMMEDIATE")
    try:
        if capture.generation(ic) == gen:
            capture.forget_renames(ic, renames)
        if capture.generation(ic) == gen and capture.user_schema(ic, capture.SCHEMA) != schema:
            capture.snapshot_schema(ic, schema)
        ic.execute("COMMIT")
    except BaseException:
        ic.execute("ROLLBACK")
        raise


class _Background:
    """A call run in a thread (a round trip, while this thread works); ``result`` joins it
    and returns its value or raises its exception."""

    def __init__(self, fn: Callable[[], Any]):
        self._fn = fn
        self._box: Dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._box["value"] = self._fn()
        except BaseException as exc:  # handed to the caller's thread
            self._box["error"] = exc

    def result(self) -> Any:
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]


def _prepare(ic: sqlite3.Connection, gen: int, after: int, pipeline: Pipeline, transform: Optional[Transform],
             threshold: Optional[int]) -> Tuple[Changes, List[Tuple[List[Stmt], int]]]:
    """The changes after log id ``after`` and their batches (module docstring, 3). Never
    tail rows (tail.py): a row sent from a tail would stay there, and its later delete or
    key change would log nothing - the server would keep the row. Rows a writer inserted
    since push's fold make the collect start over after folding them; the last attempt
    folds and collects in one write transaction."""
    with paused():  # rows, statements and steps: many objects at once (_util/gcpause.py)
        for attempt in range(FOLD_ATTEMPTS):
            locked = attempt == FOLD_ATTEMPTS - 1
            ic.execute("BEGIN IMMEDIATE" if locked else "BEGIN")
            try:
                if capture.generation(ic) != gen:  # a pull rebased in between: start over
                    raise RemoteError("the replica was rebased during the push", url=pipeline.display_url)
                if locked:
                    tail.fold(ic)
                changes = collect(ic, after)
            except BaseException:
                ic.execute("ROLLBACK")
                raise
            ic.execute("COMMIT")  # (a read: this only ends the snapshot; no lock from here)
            if not changes.tails:
                break
            _fold(ic)
        groups = changes.row_groups(transform)
        return changes, split(changes, groups, threshold)


def _fold(ic: sqlite3.Connection, tails: Optional[bool] = None) -> None:
    """Tables created since the last push get triggers, every tail goes into the log (one
    short local write transaction; push.py step 1); ``tails``: the tails on or off from
    now (tail.set_enabled; None: as they are)."""
    ic.execute("BEGIN IMMEDIATE")
    try:
        if tails is not None:
            tail.set_enabled(ic, tails)
        capture.ensure_triggers(ic)
        tail.fold(ic)
        ic.execute("COMMIT")
    except BaseException:
        ic.execute("ROLLBACK")
        raise


def _push_once(ic: sqlite3.Connection, client_id: str, pipeline: Pipeline,
               transform: Optional[Transform], threshold: Optional[int],
               state: Optional[dict] = None) -> Tuple[PushResult, dict, Dict[str, str]]:
    gen = capture.generation(ic)
    # The high-water read (a round trip) runs in a thread while this one collects the
    # changes after the mark this replica last pushed (the push state's hint, same
    # generation): when the server's mark says the same, that work is used, otherwise it
    # is done again after the server's mark. The batch is always built on the mark read.
    state = state or {}
    guess = int(state.get("last_pushed_change_id_hint") or 0) if state.get("last_pushed_pull_gen_hint") == gen else 0
    reader = _Background(lambda: pipeline.remote_mark(client_id))
    try:
        prepared: Optional[Tuple[Changes, List[Tuple[List[Stmt], int]]]] = \
            _prepare(ic, gen, guess, pipeline, transform, threshold)
    except RemoteError:
        prepared = None  # (rebased meanwhile) decided below, after the read
    mark = reader.result()
    if mark is not None and mark[0] > gen:
        raise ProtocolError(f"push to {pipeline.display_url}: the server has generation {mark[0]} for client "
                            f"{client_id!r}, ahead of the local {gen}; this replica's files were replaced",
                            url=pipeline.display_url)
    after = mark[1] if mark is not None and mark[0] == gen else 0
    if prepared is None or after != guess:
        prepared = _prepare(ic, gen, after, pipeline, transform, threshold)
    changes, batches = prepared
    result = PushResult(gen=gen, last_change_id=changes.last_id)
    sent0 = pipeline.sent_bytes
    expected = mark
    for stmts, hw in batches:
        new_mark = hw if hw > after or stmts else None
        with paused():
            steps = batch_steps(stmts, client_id, gen, new_mark, expected)
        results, errors = pipeline.call(steps, f"push to {pipeline.display_url}")
        exc = _failure(stmts, steps, errors, results, pipeline.display_url)
        if exc is not None:
            raise exc
        if new_mark is not None:
            expected = (gen, new_mark)
        result.batches += 1
        result.statements += len(stmts)
        result.rows += sum(1 for s in stmts if s.change_id)
    result.bytes = pipeline.sent_bytes - sent0
    return result, changes.schema, changes.renames


def pending(conn: sqlite3.Connection, replica: str) -> int:
    """Changed rows not pushed yet as far as this replica knows (distinct keys logged, plus
    the rows of every tail, counted without folding them)."""
    try:
        gen = capture.generation(conn)
        state = load_state(replica)
        after = state.get("last_pushed_change_id_hint", 0) if state.get("last_pushed_pull_gen_hint") == gen else 0
        logged = conn.execute(f"SELECT COUNT(*) FROM (SELECT DISTINCT t, k FROM {capture.LOG} WHERE id > ?)",
                              (int(after),)).fetchone()[0]
        return int(logged) + tail.count(conn)
    except sqlite3.OperationalError:
        return 0
