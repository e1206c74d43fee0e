"""What the tail tests (tests/sync/test_tail*.py) share: a replica of a server table ``t``
with 10 synced rows, and the rows of ``t`` on the server and on a replica, as the server's
SQL over HTTP returns them (strings)."""

from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple

import turso_dbapi


def seeded_replica(server: Any, path: str) -> Iterator[Any]:
    """Body of the ``replica`` fixture: ``t(id INTEGER PRIMARY KEY, v)`` with rows 1-10 on
    the server, and a replica of it at ``path``, closed afterwards."""
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    server.db_sql("INSERT INTO t SELECT value, 's' FROM generate_series(1, 10)")
    conn = turso_dbapi.connect(server.url, local_path=path)
    yield conn
    conn.close()


def server_rows(server: Any, table: str = "t") -> List[Tuple[Any, ...]]:
    return [tuple(r) for r in server.db_sql(f"SELECT id, v FROM {table} ORDER BY id")]


def local_rows(conn: Any, table: str = "t") -> List[Tuple[str, Optional[str]]]:
    return [(str(i), None if v is None else str(v))
            for i, v in conn.execute(f"SELECT id, v FROM {table} ORDER BY id")]
