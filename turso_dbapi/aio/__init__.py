"""asyncio for turso_dbapi, with aiosqlite's API::

    import turso_dbapi.aio

    async with turso_dbapi.aio.connect("https://example.com/app.db", partial=True) as db:
        async with db.execute("select name from items where id = ?", (42,)) as cursor:
            async for row in cursor:
                ...
        await db.stats()

Each connection runs on its own thread (``aio.worker``), so a page miss waiting on the
network never blocks the event loop; cancelling a coroutine interrupts its statement and
leaves the connection usable. ``connect`` takes what ``turso_dbapi.connect`` takes (a path,
a URL, every remote option) plus ``iter_chunk_size`` (rows per thread round trip when
iterating a cursor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import turso_dbapi
from turso_dbapi import Database
from turso_dbapi.url import ConnectArgs

from ..errors import (  # noqa: F401 - the DB-API names, as aiosqlite re-exports them
    DatabaseError, Error, IntegrityError, InterfaceError, NotSupportedError, OperationalError,
    ProgrammingError, RemoteChangedError, RemoteError, Warning,
)
from .connection import Connection, Cursor

sqlite_version = turso_dbapi.sqlite_version
sqlite_version_info = turso_dbapi.sqlite_version_info
Row = turso_dbapi.Row
__version__ = turso_dbapi.__version__


if TYPE_CHECKING:
    from typing_extensions import Unpack


def connect(database: Database, *, iter_chunk_size: int = 64, **kwargs: Unpack[ConnectArgs]) -> Connection:
    """An asyncio connection: ``await`` it, or use it as ``async with``. Same arguments as
    ``turso_dbapi.connect``; the connection is made on its own thread, and may be read
    from the loop's thread too (``check_same_thread=False`` unless you say otherwise)."""
    kwargs.setdefault("check_same_thread", False)
    return Connection(lambda: turso_dbapi.connect(database, **kwargs), iter_chunk_size=iter_chunk_size)





__all__ = ["Connection", "Cursor", "connect", "Row", "Error", "DatabaseError", "OperationalError",
           "ProgrammingError", "IntegrityError", "NotSupportedError", "RemoteError", "RemoteChangedError"]
