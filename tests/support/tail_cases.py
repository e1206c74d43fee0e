"""What the tail tests (tests/sync/test_tail*.py) share: a replica of a server table ``t``
with 10 synced rows, and the rows of ``t`` on the server and on a replica, as the server's
SQL over HTTP returns them (strings); and a local commit racing a WAL pull's side replay
(tests/sync/test_wal_replica.py too)."""

from __future__ import annotations

from typing import Any, Iterator, List, Optional, Sequence, Tuple

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


def commit_after_first_side_replay(monkeypatch: Any, writer: Any, statements: Sequence[str]) -> List[Any]:
    """A local commit racing a WAL pull: right after the pull's first side replay is built
    (sync/side_replay.run), before its lock, ``writer`` runs ``statements`` and commits.
    Returns the list of the pull's builds (the side views), filled as they happen."""
    from turso_dbapi.sync import side_replay

    real_run, builds = side_replay.run, []

    def run_then_commit(*a: Any, **k: Any) -> Any:
        view = real_run(*a, **k)
        builds.append(view)
        if len(builds) == 1:
            for sql in statements:
                writer.execute(sql)
            writer.commit()
        return view

    monkeypatch.setattr(side_replay, "run", run_then_commit)
    return builds
