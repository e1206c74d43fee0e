"""The Hrana-over-HTTP subset of `/v2/pipeline` (spec §3), executed on a sqlite3 connection.

``Pipeline(conn).run(body)`` takes the decoded JSON request and returns the JSON response.
The connection must be in autocommit mode (``isolation_level=None``) so ``BEGIN`` /
``COMMIT`` steps pass straight through to SQLite; one pipeline call is one unit: any
transaction still open at its end is rolled back, so a client that died mid-batch cannot
leak a transaction into the next request.

Values and statement errors travel as ``protocol.hrana`` encodes them; errors carry
SQLite's own message text (the client looks for "no such table").
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, List, Optional

from ..protocol.hrana import Json, StmtError, decode_value, encode_value


class PipelineRequestError(ValueError):
    """The request body is not a valid pipeline request (answered with HTTP 400)."""


def _error_code(exc: sqlite3.Error) -> str:
    # 3.11+ exposes SQLite's symbolic code (e.g. SQLITE_CONSTRAINT_PRIMARYKEY), as sqld sends;
    # 3.9/3.10 only tell the class, which still separates constraint failures.
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        return name
    return "SQLITE_CONSTRAINT" if isinstance(exc, sqlite3.IntegrityError) else "SQLITE_ERROR"


# ------------------------------------------------------------------------- pipeline


class Pipeline:
    """Executes pipeline requests on one connection; callers serialise access to it."""

    def __init__(
        self, conn: sqlite3.Connection, rewrite_sql: Optional[Callable[[str], str]] = None
    ) -> None:
        if conn.isolation_level is not None:
            raise ValueError("the pipeline connection must use isolation_level=None")
        self.conn = conn
        self.rewrite_sql = rewrite_sql

    def run(self, body: Any) -> Json:
        if not isinstance(body, dict):
            raise PipelineRequestError("pipeline body must be a JSON object")
        requests = body.get("requests")
        if not isinstance(requests, list):
            raise PipelineRequestError('pipeline body needs a "requests" array')
        for req in requests:
            if not isinstance(req, dict) or req.get("type") not in _REQUEST_TYPES:
                kind = req.get("type") if isinstance(req, dict) else req
                raise PipelineRequestError(f"unsupported pipeline request type: {kind!r}")
        try:
            results = [self._request(req) for req in requests]
        finally:
            if self.conn.in_transaction:
                self.conn.rollback()
        return {"baton": body.get("baton"), "base_url": None, "results": results}

    def _request(self, req: Json) -> Json:
        kind = req["type"]
        try:
            if kind == "execute":
                result = self.execute(req.get("stmt"))
                return _ok({"type": "execute", "result": result})
            if kind == "batch":
                batch = req.get("batch")
                if not isinstance(batch, dict) or not isinstance(batch.get("steps"), list):
                    raise StmtError(
                        'batch request needs "batch": {"steps": [...]}', "BATCH_STEP_ERROR"
                    )
                return _ok({"type": "batch", "result": self.batch(batch["steps"])})
            if kind == "get_autocommit":
                return _ok(
                    {"type": "get_autocommit", "is_autocommit": not self.conn.in_transaction}
                )
            return _ok({"type": "close"})  # streams end with each call anyway
        except StmtError as exc:
            return {"type": "error", "error": exc.to_json()}

    def batch(self, steps: List[Any]) -> Json:
        results: List[Optional[Json]] = []
        errors: List[Optional[Json]] = []
        for index, step in enumerate(steps):
            if not isinstance(step, dict):
                raise StmtError(f"batch step {index} is not an object", "BATCH_STEP_ERROR")
            cond = step.get("condition")
            if cond is not None and not self._condition(cond, results, errors):
                results.append(None)
                errors.append(None)
                continue
            try:
                results.append(self.execute(step.get("stmt")))
                errors.append(None)
            except StmtError as exc:
                results.append(None)
                errors.append(exc.to_json())
        return {"step_results": results, "step_errors": errors, "replication_index": None}

    def _condition(self, cond: Any, results: list, errors: list) -> bool:
        if not isinstance(cond, dict):
            raise StmtError(f"invalid batch condition: {cond!r}", "BATCH_STEP_ERROR")
        kind = cond.get("type")
        if kind in ("ok", "error"):
            step = cond.get("step")
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                raise StmtError(f"invalid step in batch condition: {step!r}", "BATCH_STEP_ERROR")
            # Only steps recorded before the current one count (skipped steps record nothing).
            recorded = results if kind == "ok" else errors
            return step < len(recorded) and recorded[step] is not None
        if kind == "not":
            return not self._condition(cond.get("cond"), results, errors)
        if kind in ("and", "or"):
            conds = cond.get("conds")
            if not isinstance(conds, list):
                raise StmtError(f'"{kind}" condition needs "conds"', "BATCH_STEP_ERROR")
            values = [self._condition(c, results, errors) for c in conds]
            return all(values) if kind == "and" else any(values)
        if kind == "is_autocommit":
            return not self.conn.in_transaction
        raise StmtError(f"unknown batch condition type: {kind!r}", "BATCH_STEP_ERROR")

    def execute(self, stmt: Any) -> Json:
        if not isinstance(stmt, dict):
            raise StmtError("statement must be an object", "NO_SQL")
        sql = stmt.get("sql")
        if not isinstance(sql, str):
            raise StmtError("statement has no SQL text (sql_id is not supported)", "NO_SQL")
        args = stmt.get("args") or []
        named = stmt.get("named_args") or []
        if not isinstance(args, list) or not isinstance(named, list):
            raise StmtError("args and named_args must be arrays", "BIND_ERROR")
        params: Any = [decode_value(a) for a in args]
        if named:
            if params:
                raise StmtError(
                    "mixing positional and named arguments is not supported", "BIND_ERROR"
                )
            params = {}
            for item in named:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise StmtError("named argument needs a name", "BIND_ERROR")
                params[item["name"].lstrip(":@$")] = decode_value(item.get("value"))
        want_rows = stmt.get("want_rows")
        want_rows = True if want_rows is None else bool(want_rows)
        if self.rewrite_sql is not None:
            sql = self.rewrite_sql(sql)
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
            rows = cur.fetchall()  # run to completion even when rows are not wanted
        except sqlite3.Error as exc:
            raise StmtError(str(exc), _error_code(exc))
        except (ValueError, OverflowError, sqlite3.Warning) as exc:
            # e.g. a bad parameter, or several statements (sqlite3.Warning before 3.11)
            raise StmtError(str(exc), "SQLITE_ERROR")
        finally:
            cur.close()
        cols = [{"name": d[0], "decltype": None} for d in (cur.description or ())]
        changed = max(cur.rowcount, 0) if cur.description is None else 0
        last_rowid = cur.lastrowid if changed and cur.lastrowid else None
        return {
            "cols": cols,
            "rows": [[encode_value(v) for v in row] for row in rows] if want_rows else [],
            "affected_row_count": changed,
            "last_insert_rowid": str(last_rowid) if last_rowid is not None else None,
            "replication_index": None,
            "rows_read": 0,
            "rows_written": 0,
            "query_duration_ms": 0.0,
        }


_REQUEST_TYPES = ("execute", "batch", "close", "get_autocommit")


def _ok(response: Json) -> Json:
    return {"type": "ok", "response": response}
