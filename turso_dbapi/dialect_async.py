"""SQLAlchemy asyncio dialect ``sqlite+aioturso_dbapi``: ``sqlite+turso_dbapi`` driven by
``turso_dbapi.aio``, for ``create_async_engine``.

Modelled on SQLAlchemy's own ``sqlite+aiosqlite`` dialect: ``AsyncAdapt_*`` classes give
SQLAlchemy the synchronous DB-API it expects and ``await_only`` each call of the asyncio
driver inside SQLAlchemy's greenlet. URLs, options and errors are exactly those of
``sqlite+turso_dbapi`` (``turso_dbapi.dialect``)::

    engine = create_async_engine("sqlite+aioturso_dbapi:///app.db")
    engine = create_async_engine("sqlite+aioturso_dbapi:///?url=https://host/db.sqlite&partial=true")

One execute is one round trip to the connection's thread (statement, description, counts
and — for a buffered cursor — every row); a server-side cursor (``stream()``) fetches in
``arraysize`` chunks on demand.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any, Deque, List, Optional, Sequence, Tuple

from sqlalchemy import pool
from sqlalchemy.dialects.sqlite.base import SQLiteExecutionContext
from sqlalchemy.engine.interfaces import AdaptedConnection
from sqlalchemy.engine.url import URL

from .dialect import TursoDBAPIDialect

try:  # SQLAlchemy 2.1 names it await_ (await_only stays as an alias until 2.2)
    from sqlalchemy.util.concurrency import await_ as await_only
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util.concurrency import await_only


def _execute(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool,
             buffered: bool) -> Tuple[sqlite3.Cursor, Any, int, Optional[int], Optional[List[Any]]]:
    """On the connection's thread: run, and read back everything SQLAlchemy will ask."""
    cursor = conn.cursor()
    if many:
        cursor.executemany(operation, parameters)
    else:
        cursor.execute(operation, () if parameters is None else parameters)
    rows = None
    if cursor.description and buffered:
        rows = cursor.fetchall()
        cursor.close()
    return cursor, cursor.description, cursor.rowcount, cursor.lastrowid, rows


def _close(conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
    cursor.close()


def _cursor_call(conn: sqlite3.Connection, cursor: sqlite3.Cursor, method: str, *args: Any) -> Any:
    return getattr(cursor, method)(*args)


class AsyncAdapt_turso_cursor:
    server_side = False

    def __init__(self, adapt_connection: AsyncAdapt_turso_connection):
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor: Optional[sqlite3.Cursor] = None
        self._rows: Deque[Any] = collections.deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: Optional[int] = None
        self.arraysize = 1

    def close(self) -> None:
        self._rows.clear()
        if self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            if not self._connection.closed:
                await_only(self._connection.run(_close, cursor))

    async def _async_soft_close(self) -> None:
        """SQLAlchemy 2.1 calls this from the loop when a result leaves the greenlet:
        a server-side cursor lets go of its statement (the description stays)."""
        if self.server_side and self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            if not self._connection.closed:
                await self._connection.run(_close, cursor)

    def execute(self, operation: str, parameters: Any = None) -> Any:
        return self._run(operation, parameters, False)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> Any:
        return self._run(operation, seq_of_parameters, True)

    def _run(self, operation: str, parameters: Any, many: bool) -> Any:
        cursor, self.description, self.rowcount, self.lastrowid, rows = await_only(
            self._connection.run(_execute, operation, parameters, many, not self.server_side))
        self._rows = collections.deque(rows or ())
        self._cursor = None if rows is not None else cursor

    def setinputsizes(self, *inputsizes: Any) -> None:
        pass

    def __iter__(self) -> Any:
        while self._rows:
            yield self._rows.popleft()

    def fetchone(self) -> Optional[Any]:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: Optional[int] = None) -> List[Any]:
        n = self.arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(n, len(self._rows)))]

    def fetchall(self) -> List[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows


class AsyncAdapt_turso_ss_cursor(AsyncAdapt_turso_cursor):
    """Server-side: rows stay in SQLite until asked for."""

    server_side = True

    def _fetch(self, method: str, *args: Any) -> Any:
        if self._cursor is None:
            return [] if method != "fetchone" else None
        return await_only(self._connection.run(_cursor_call, self._cursor, method, *args))

    def fetchone(self) -> Optional[Any]:
        return self._fetch("fetchone")

    def fetchmany(self, size: Optional[int] = None) -> List[Any]:
        return self._fetch("fetchmany", self.arraysize if size is None else size)

    def fetchall(self) -> List[Any]:
        return self._fetch("fetchall")

    def __iter__(self) -> Any:
        while True:
            rows = self.fetchmany(max(self.arraysize, 64))
            if not rows:
                return
            yield from rows


class AsyncAdapt_turso_connection(AdaptedConnection):
    """The DB-API connection SQLAlchemy sees; ``_connection`` is the ``aio.Connection``."""

    await_ = staticmethod(await_only)

    def __init__(self, dbapi: Any, connection: Any):
        self.dbapi = dbapi
        self._connection = connection

    @property
    def isolation_level(self) -> Optional[str]:
        return self._connection.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: Optional[str]) -> None:
        await_only(self._connection.set_isolation_level(value))

    def create_function(self, *args: Any, **kw: Any) -> None:
        await_only(self._connection.create_function(*args, **kw))

    def cursor(self, server_side: bool = False) -> AsyncAdapt_turso_cursor:
        return (AsyncAdapt_turso_ss_cursor if server_side else AsyncAdapt_turso_cursor)(self)

    def execute(self, operation: str, parameters: Any = None) -> AsyncAdapt_turso_cursor:
        cursor = self.cursor()
        cursor.execute(operation, parameters)
        return cursor

    def rollback(self) -> None:
        if not self._connection.closed:
            await_only(self._connection.rollback())

    def commit(self) -> None:
        if not self._connection.closed:
            await_only(self._connection.commit())

    def close(self) -> None:
        await_only(self._connection.close())

    def terminate(self) -> None:
        self._connection.stop()  # no awaiting: the pool may call it from a finaliser

    def __getattr__(self, name: str) -> Any:  # stats, pull, ... reach the asyncio connection
        return getattr(self._connection, name)


class AsyncAdapt_turso_dbapi:
    """The DB-API module SQLAlchemy sees: turso_dbapi's names, an awaiting ``connect``."""

    def __init__(self, aio: Any, sync: Any):
        self.aio = aio
        self.sync = sync
        self.paramstyle = "qmark"
        for name in ("Error", "Warning", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
                     "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError",
                     "sqlite_version", "sqlite_version_info", "PARSE_COLNAMES", "PARSE_DECLTYPES", "Binary"):
            setattr(self, name, getattr(sync, name))

    def connect(self, *args: Any, **kw: Any) -> AsyncAdapt_turso_connection:
        creator = kw.pop("async_creator_fn", None)
        connection = creator(*args, **kw) if creator else self.aio.connect(*args, **kw)
        return AsyncAdapt_turso_connection(self, await_only(connection))


class SQLiteExecutionContext_aioturso(SQLiteExecutionContext):
    def create_server_side_cursor(self) -> Any:
        return self._dbapi_connection.cursor(server_side=True)


class AsyncTursoDBAPIDialect(TursoDBAPIDialect):
    driver = "aioturso_dbapi"
    supports_statement_cache = True
    is_async = True
    has_terminate = True
    supports_server_side_cursors = True
    execution_ctx_cls = SQLiteExecutionContext_aioturso

    @classmethod
    def import_dbapi(cls) -> Any:
        import turso_dbapi
        import turso_dbapi.aio

        return AsyncAdapt_turso_dbapi(turso_dbapi.aio, turso_dbapi)

    @classmethod
    def get_pool_class(cls, url: URL) -> Any:
        if url.query.get("url") or cls._is_url_file_db(url):  # a replica is a file, as sqlite+turso_dbapi
            return pool.AsyncAdaptedQueuePool
        return pool.StaticPool  # :memory: lives in its one connection

    def get_driver_connection(self, connection: Any) -> Any:
        return connection._connection

    def do_terminate(self, dbapi_connection: Any) -> None:
        dbapi_connection.terminate()


dialect = AsyncTursoDBAPIDialect
