"""Hrana stream requests (spec §3; Hrana 2/3 as sqld serves them) on one sqlite3 connection.

``Executor(conn, ...)`` is the state of one stream: its connection (autocommit mode, so
``BEGIN``/``COMMIT`` pass straight to SQLite and a transaction lives as long as the stream)
and its stored SQL texts (``store_sql``/``close_sql``). ``handle(request)`` answers one
pipeline request; ``cursor(batch)`` yields ``/v3/cursor`` entries one by one.

Values, statement errors and the finite-float JSON travel as ``protocol.hrana`` encodes
them; errors carry SQLite's own message text (clients look for "no such table").
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Dict, Iterator, List, Optional

from ..protocol.hrana import Json, StmtError, decode_value, encode_value
from .describe import DescribeError, Describer

MAX_STORED_SQL = 50  # per stream, as sqld
MAX_STORED_SQL_BYTES = 5 * 1024


class PipelineRequestError(ValueError):
    """The request violates the protocol (answered with HTTP 400, as sqld does)."""


def _error_code(exc: sqlite3.Error) -> str:
    # 3.11+ exposes SQLite's symbolic code (e.g. SQLITE_CONSTRAINT_PRIMARYKEY), as sqld sends;
    # 3.9/3.10 only tell the class, which still separates constraint failures.
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        return name
    return "SQLITE_CONSTRAINT" if isinstance(exc, sqlite3.IntegrityError) else "SQLITE_ERROR"


def split_sql(sql: str) -> List[str]:
    """Split a script into statements at the semicolons SQLite itself would end them at."""
    out: List[str] = []
    start = 0
    pos = sql.find(";")
    while pos != -1:
        piece = sql[start : pos + 1]
        if sqlite3.complete_statement(piece):
            if piece.strip(" \t\r\n;"):
                out.append(piece)
            start = pos + 1
        pos = sql.find(";", pos + 1)
    if sql[start:].strip():
        out.append(sql[start:])
    return out


# ------------------------------------------------------------------------- stream state


class Executor:
    """One stream's connection and stored SQL; callers use it from one thread at a time."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        describer: Optional[Describer] = None,
        rewrite_sql: Optional[Callable[[str], str]] = None,
    ) -> None:
        if conn.isolation_level is not None:
            raise ValueError("the stream connection must use isolation_level=None")
        self.conn = conn
        self.describer = describer
        self.rewrite_sql = rewrite_sql
        self.sqls: Dict[int, str] = {}
        self.closed = False  # a "close" request ends the stream after this pipeline

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    # ---------------------------------------------------------------- requests

    def handle(self, req: Any) -> Json:
        """One pipeline request -> its result; protocol violations raise (HTTP 400)."""
        if not isinstance(req, dict):
            raise PipelineRequestError(f"pipeline request must be an object, not {req!r}")
        kind = req.get("type")
        try:
            if kind == "execute":
                return _ok({"type": "execute", "result": self.execute(req.get("stmt"))})
            if kind == "batch":
                return _ok({"type": "batch", "result": self.batch(req.get("batch"))})
            if kind == "sequence":
                self.sequence(self._sql_of(req))
                return _ok({"type": "sequence"})
            if kind == "describe":
                return _ok({"type": "describe", "result": self.describe(self._sql_of(req))})
            if kind == "store_sql":
                self.store_sql(req.get("sql_id"), req.get("sql"))
                return _ok({"type": "store_sql"})
            if kind == "close_sql":
                self.sqls.pop(req.get("sql_id"), None)
                return _ok({"type": "close_sql"})
            if kind == "get_autocommit":
                return _ok({"type": "get_autocommit", "is_autocommit": not self.in_transaction})
            if kind == "close":
                self.closed = True
                return _ok({"type": "close"})
        except StmtError as exc:
            return {"type": "error", "error": exc.to_json()}
        raise PipelineRequestError(f"unsupported pipeline request type: {kind!r}")

    def store_sql(self, sql_id: Any, sql: Any) -> None:
        if not _is_int(sql_id) or not isinstance(sql, str):
            raise PipelineRequestError('store_sql needs an integer "sql_id" and a string "sql"')
        if sql_id in self.sqls:
            raise PipelineRequestError(f"SQL text {sql_id} is already stored on this stream")
        if len(self.sqls) >= MAX_STORED_SQL:
            raise StmtError(
                f"The server already stores {len(self.sqls)} SQL texts, it cannot store more",
                "SQL_STORE_TOO_MANY",
            )
        if len(sql.encode()) > MAX_STORED_SQL_BYTES:
            raise StmtError(
                f"The statement is too large to be stored: {len(sql.encode())} bytes "
                f"(at most {MAX_STORED_SQL_BYTES})",
                "SQL_STORE_TOO_LARGE",
            )
        self.sqls[sql_id] = sql

    def _sql_of(self, obj: Any) -> str:
        if not isinstance(obj, dict):
            raise StmtError("statement must be an object", "SQL_NO_STATEMENT")
        sql, sql_id = obj.get("sql"), obj.get("sql_id")
        if sql is not None and sql_id is not None:
            raise PipelineRequestError('a statement has both "sql" and "sql_id"')
        if sql_id is not None:
            if not _is_int(sql_id) or sql_id not in self.sqls:
                raise PipelineRequestError(f"SQL text {sql_id!r} is not stored on this stream")
            return self.sqls[sql_id]
        if not isinstance(sql, str):
            raise PipelineRequestError('a statement needs "sql" or "sql_id"')
        return sql

    # ---------------------------------------------------------------- statements

    def _params(self, stmt: Json) -> Any:
        args = stmt.get("args") or []
        named = stmt.get("named_args") or []
        if not isinstance(args, list) or not isinstance(named, list):
            raise StmtError("args and named_args must be arrays", "ARGS_INVALID")
        params: Any = [decode_value(a) for a in args]
        if named:
            if params:
                raise StmtError(
                    "mixing positional and named arguments is not supported",
                    "ARGS_BOTH_POSITIONAL_AND_NAMED",
                )
            params = {}
            for item in named:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise StmtError("named argument needs a name", "ARGS_INVALID")
                params[item["name"].lstrip(":@$")] = decode_value(item.get("value"))
        return params

    def _run(self, stmt: Any) -> sqlite3.Cursor:
        """Start a statement; the returned cursor is positioned before its first row."""
        sql = self._sql_of(stmt)
        params = self._params(stmt)
        if not sql.strip(" \t\r\n;"):
            raise StmtError("SQL string does not contain any statement", "SQL_NO_STATEMENT")
        if self.rewrite_sql is not None:
            sql = self.rewrite_sql(sql)
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
        except sqlite3.Error as exc:
            cur.close()
            if "one statement at a time" in str(exc):
                raise StmtError(
                    "SQL string contains more than one statement", "SQL_MANY_STATEMENTS"
                )
            raise StmtError(str(exc), _error_code(exc))
        except (ValueError, OverflowError, sqlite3.Warning) as exc:
            # e.g. a bad parameter, or several statements (sqlite3.Warning before 3.11)
            cur.close()
            code = "SQL_MANY_STATEMENTS" if "one statement" in str(exc) else "ARGS_INVALID"
            raise StmtError(str(exc), code)
        return cur

    def _cols(self, stmt: Json, cur: sqlite3.Cursor) -> List[Json]:
        names = [d[0] for d in (cur.description or ())]
        decls: List[Optional[str]] = [None] * len(names)
        if names and self.describer is not None:
            decls = self.describer.decltypes(self._sql_of(stmt), len(names))
        return [{"name": n, "decltype": d} for n, d in zip(names, decls)]

    def _step_end(self, cur: sqlite3.Cursor) -> Json:
        changed = max(cur.rowcount, 0) if cur.description is None else 0
        last_rowid = cur.lastrowid if changed and cur.lastrowid else None
        return {
            "affected_row_count": changed,
            "last_insert_rowid": str(last_rowid) if last_rowid is not None else None,
        }

    def execute(self, stmt: Any) -> Json:
        if not isinstance(stmt, dict):
            raise StmtError("statement must be an object", "SQL_NO_STATEMENT")
        cur = self._run(stmt)
        try:
            try:
                rows = cur.fetchall()  # run to completion even when rows are not wanted
            except sqlite3.Error as exc:
                raise StmtError(str(exc), _error_code(exc))
            want_rows = stmt.get("want_rows")
            want_rows = True if want_rows is None else bool(want_rows)
            return {
                "cols": self._cols(stmt, cur),
                "rows": [[encode_value(v) for v in row] for row in rows] if want_rows else [],
                **self._step_end(cur),
                "replication_index": None,
                "rows_read": 0,
                "rows_written": 0,
                "query_duration_ms": 0.0,
            }
        finally:
            cur.close()

    def sequence(self, sql: str) -> None:
        for piece in split_sql(sql):
            self.execute({"sql": piece, "want_rows": False})

    def describe(self, sql: str) -> Json:
        if self.describer is None:
            raise StmtError("describe is not available on this server", "SQL_INPUT_ERROR")
        try:
            d = self.describer.describe(sql)
        except DescribeError as exc:
            raise StmtError(str(exc), "SQLITE_ERROR")
        return {
            "params": [{"name": n} for n in d.params],
            "cols": [{"name": n, "decltype": t} for n, t in d.cols],
            "is_explain": d.is_explain,
            "is_readonly": d.is_readonly,
        }

    # ---------------------------------------------------------------- batches

    def _steps(self, batch: Any) -> List[Json]:
        if not isinstance(batch, dict) or not isinstance(batch.get("steps"), list):
            raise PipelineRequestError('batch request needs "batch": {"steps": [...]}')
        steps = batch["steps"]
        for index, step in enumerate(steps):
            if not isinstance(step, dict):
                raise PipelineRequestError(f"batch step {index} is not an object")
        return steps

    def batch(self, batch: Any) -> Json:
        results: List[Optional[Json]] = []
        errors: List[Optional[Json]] = []
        for step in self._steps(batch):
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

    def cursor(self, batch: Any) -> Iterator[Json]:
        """The ``/v3/cursor`` entries of a batch, produced as the rows are read."""
        results: List[Optional[bool]] = []
        errors: List[Optional[bool]] = []
        for index, step in enumerate(self._steps(batch)):
            cond = step.get("condition")
            if cond is not None and not self._condition(cond, results, errors):
                results.append(None)
                errors.append(None)
                continue
            stmt = step.get("stmt")
            try:
                if not isinstance(stmt, dict):
                    raise StmtError("statement must be an object", "SQL_NO_STATEMENT")
                cur = self._run(stmt)
            except StmtError as exc:
                results.append(None)
                errors.append(True)
                yield {"type": "step_error", "step": index, "error": exc.to_json()}
                continue
            try:
                yield {"type": "step_begin", "step": index, "cols": self._cols(stmt, cur)}
                try:
                    while True:
                        rows = cur.fetchmany(256)
                        if not rows:
                            break
                        for row in rows:
                            yield {"type": "row", "row": [encode_value(v) for v in row]}
                except sqlite3.Error as exc:
                    results.append(None)
                    errors.append(True)
                    err = StmtError(str(exc), _error_code(exc))
                    yield {"type": "step_error", "step": index, "error": err.to_json()}
                    continue
                results.append(True)
                errors.append(None)
                yield {"type": "step_end", **self._step_end(cur)}
            finally:
                cur.close()

    def _condition(self, cond: Any, results: list, errors: list) -> bool:
        if not isinstance(cond, dict):
            raise PipelineRequestError(f"invalid batch condition: {cond!r}")
        kind = cond.get("type")
        if kind in ("ok", "error"):
            step = cond.get("step")
            if not _is_int(step) or step < 0:
                raise PipelineRequestError(f"invalid step in batch condition: {step!r}")
            if step >= len(results):
                raise PipelineRequestError(
                    f"batch condition refers to step {step}, which has not run yet"
                )
            recorded = results if kind == "ok" else errors
            return recorded[step] is not None
        if kind == "not":
            return not self._condition(cond.get("cond"), results, errors)
        if kind in ("and", "or"):
            conds = cond.get("conds")
            if not isinstance(conds, list):
                raise PipelineRequestError(f'"{kind}" condition needs "conds"')
            values = [self._condition(c, results, errors) for c in conds]
            return all(values) if kind == "and" else any(values)
        if kind == "is_autocommit":
            return not self.in_transaction
        raise PipelineRequestError(f"unknown batch condition type: {kind!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ok(response: Json) -> Json:
    return {"type": "ok", "response": response}
