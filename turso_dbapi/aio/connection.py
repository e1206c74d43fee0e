"""``Connection`` and ``Cursor`` of ``turso_dbapi.aio``: the aiosqlite-style API over a
turso_dbapi connection that lives on its own thread (``aio.worker``)."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from typing import (
    Any, AsyncIterator, Awaitable, Callable, Generator, Iterable, List, Optional, Sequence, TypeVar,
)

from ..connection import Stats
from ..errors import ProgrammingError
from .worker import Worker

T = TypeVar("T")
Row = Any  # a tuple, or whatever row_factory makes
Parameters = Any  # a sequence or a mapping, as sqlite3 takes


class _Awaitable(Awaitable[T]):
    """What ``execute`` returns: await it for the cursor, or ``async with`` it (the cursor
    is closed on exit), as in aiosqlite."""

    __slots__ = ("_coro", "_value")

    def __init__(self, coro: Awaitable[T]):
        self._coro = coro
        self._value: Any = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    async def __aenter__(self) -> T:
        self._value = await self._coro
        return self._value

    async def __aexit__(self, *exc: Any) -> None:
        close = getattr(self._value, "close", None)
        if close is not None:
            await close()


class Cursor:
    """An asyncio cursor: every call runs on the connection's thread."""

    def __init__(self, conn: Connection, cursor: sqlite3.Cursor):
        self._conn = conn
        self._cursor = cursor
        self.iter_chunk_size = conn.iter_chunk_size

    async def execute(self, sql: str, parameters: Parameters = ()) -> Cursor:
        await self._conn._call(self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> Cursor:
        await self._conn._call(self._cursor.executemany, sql, seq_of_parameters)
        return self

    async def executescript(self, sql_script: str) -> Cursor:
        await self._conn._call(self._cursor.executescript, sql_script)
        return self

    async def fetchone(self) -> Optional[Row]:
        return await self._conn._call(self._cursor.fetchone)

    async def fetchmany(self, size: Optional[int] = None) -> List[Row]:
        n = self._cursor.arraysize if size is None else size
        return await self._conn._call(self._cursor.fetchmany, n)

    async def fetchall(self) -> List[Row]:
        return await self._conn._call(self._cursor.fetchall)

    async def close(self) -> None:
        if self._conn._open:
            await self._conn._call(self._cursor.close)

    def __aiter__(self) -> AsyncIterator[Row]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[Row]:
        while True:  # one thread round trip per chunk of rows, not per row
            rows = await self.fetchmany(self.iter_chunk_size)
            if not rows:
                return
            for row in rows:
                yield row

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> Optional[int]:
        return self._cursor.lastrowid

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    @property
    def row_factory(self) -> Any:
        return self._cursor.row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        self._cursor.row_factory = factory

    @property
    def connection(self) -> Connection:
        return self._conn


class Connection:
    """An asyncio connection (aiosqlite's API): ``await`` it or ``async with`` it to open.

    ``pull()``, ``push()``, ``sync()`` and ``stats()`` are those of ``turso_dbapi.Connection``
    (remote databases), run on the connection's thread like everything else.
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection], *, iter_chunk_size: int = 64):
        self._connector = connector
        self._conn: Optional[sqlite3.Connection] = None
        self._worker = Worker()
        self._started: Optional[asyncio.Future] = None
        self.iter_chunk_size = iter_chunk_size

    # -- opening and closing -------------------------------------------------------------

    async def _start(self) -> Connection:
        if self._started is None:
            self._started = asyncio.ensure_future(self._open_on_thread())
        await asyncio.shield(self._started)
        return self

    async def _open_on_thread(self) -> None:
        self._worker.start(asyncio.get_running_loop())
        try:
            self._conn = await self._worker.call(self._connector)
        except BaseException:
            self._worker.stop()
            raise
        self._worker.interrupt = self._conn.interrupt

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._start().__await__()

    async def __aenter__(self) -> Connection:
        return await self._start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def _open(self) -> bool:
        return self._conn is not None and self._worker.alive

    @property
    def closed(self) -> bool:
        """True before the connection opened and after close()."""
        return not self._open

    async def close(self) -> None:
        """Close the connection and end its thread (again: no-op)."""
        if not self._open:
            return
        try:
            await self._worker.call(self._conn.close)  # type: ignore[union-attr]
        finally:
            self._worker.stop()
            self._conn = None

    def stop(self) -> None:
        """Without awaiting (e.g. from a finaliser): interrupt what runs, close on the thread."""
        conn, self._conn = self._conn, None
        if conn is not None and self._worker.alive:
            conn.interrupt()
            self._worker.post(conn.close)
            self._worker.stop()

    # -- running calls -------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._open:
            raise ProgrammingError("Cannot operate on a closed database.")
        return await self._worker.call(functools.partial(fn, *args) if args else fn)

    @property
    def connection(self) -> sqlite3.Connection:
        """The ``turso_dbapi`` connection underneath (use it only through ``run``)."""
        if self._conn is None:
            raise ProgrammingError("Cannot operate on a closed database.")
        return self._conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the connection's thread: any sqlite3 call not wrapped
        here (cancelling it interrupts it, like every call)."""
        return await self._call(fn, self.connection, *args)

    def cursor(self) -> _Awaitable[Cursor]:
        return _Awaitable(self._cursor())

    async def _cursor(self) -> Cursor:
        return Cursor(self, await self._call(self.connection.cursor))

    def execute(self, sql: str, parameters: Parameters = ()) -> _Awaitable[Cursor]:
        return _Awaitable(self._execute(lambda c: c.execute(sql, parameters)))

    def executemany(self, sql: str, seq_of_parameters: Iterable[Parameters]) -> _Awaitable[Cursor]:
        return _Awaitable(self._execute(lambda c: c.executemany(sql, seq_of_parameters)))

    def executescript(self, sql_script: str) -> _Awaitable[Cursor]:
        return _Awaitable(self._execute(lambda c: c.executescript(sql_script)))

    async def _execute(self, run: Callable[[sqlite3.Connection], sqlite3.Cursor]) -> Cursor:
        conn = self.connection
        return Cursor(self, await self._call(run, conn))  # one thread round trip

    async def execute_fetchall(self, sql: str, parameters: Parameters = ()) -> List[Row]:
        """Execute and fetch every row in one round trip to the thread."""
        conn = self.connection
        return await self._call(lambda: conn.execute(sql, parameters).fetchall())

    async def commit(self) -> None:
        await self._call(self.connection.commit)

    async def rollback(self) -> None:
        await self._call(self.connection.rollback)

    def interrupt(self) -> None:
        """Abort the running statement (thread-safe, as sqlite3's)."""
        if self._conn is not None:
            self._conn.interrupt()

    async def create_function(self, name: str, num_params: int, func: Callable[..., Any], **kw: Any) -> None:
        await self._call(functools.partial(self.connection.create_function, name, num_params, func, **kw))

    async def set_trace_callback(self, callback: Optional[Callable[[str], None]]) -> None:
        await self._call(self.connection.set_trace_callback, callback)

    # -- remote replicas -----------------------------------------------------------------

    async def pull(self) -> bool:
        """Fetch and apply remote changes (Turso sync replicas); True when something changed."""
        return await self._call(self.connection.pull)  # type: ignore[attr-defined]

    async def push(self) -> None:
        """Send local changes to the remote, where the connection supports it."""
        await self._call(self.connection.push)  # type: ignore[attr-defined]

    async def sync(self) -> bool:
        return await self._call(self.connection.sync)  # type: ignore[attr-defined]

    async def stats(self) -> Stats:
        """The replica's counters (``turso_dbapi.Connection.stats``)."""
        return await self._call(self.connection.stats)  # type: ignore[attr-defined]

    # -- attributes (plain reads and writes of the sqlite3 object: no thread hop) --------

    @property
    def row_factory(self) -> Any:
        return self.connection.row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        self.connection.row_factory = factory

    @property
    def text_factory(self) -> Any:
        return self.connection.text_factory

    @text_factory.setter
    def text_factory(self, factory: Any) -> None:
        self.connection.text_factory = factory

    @property
    def isolation_level(self) -> Optional[str]:
        return self.connection.isolation_level

    async def set_isolation_level(self, level: Optional[str]) -> None:
        await self._call(setattr, self.connection, "isolation_level", level)

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    @property
    def total_changes(self) -> int:
        return self.connection.total_changes


__all__: Sequence[str] = ("Connection", "Cursor")
