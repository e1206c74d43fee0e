"""Rows of a table created here, which no trigger has logged yet, survive a pull.

The rebase replays only changes above the floor (the log id the server already has). Rows
of a table the triggers do not cover yet are read whole from the table; they were never
pushed, so no floor may hide them: not when the log is empty (floor 0 = last log id 0),
nor when everything logged was pushed (floor = last log id). Both journal modes.
"""

from __future__ import annotations

import pytest

import turso_dbapi


def _replica(server, tmp_path, mode):
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    server.db_sql("INSERT INTO t VALUES (1, 0)")
    conn = turso_dbapi.connect(server.url, local_path=str(tmp_path / "r.db"), journal_mode=mode)
    assert conn.execute("PRAGMA journal_mode").fetchone() == (mode,)
    return conn


def _local_table(conn):
    conn.execute("CREATE TABLE mine(n INTEGER PRIMARY KEY, pad BLOB)")
    conn.commit()
    conn.execute("INSERT INTO mine(pad) VALUES (x'01')")
    conn.execute("INSERT INTO mine(pad) VALUES (x'02')")
    conn.commit()


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_rows_of_a_local_table_survive_a_pull_with_an_empty_log(turso_server, tmp_path, mode):
    conn = _replica(turso_server, tmp_path, mode)
    _local_table(conn)
    turso_server.db_sql("UPDATE t SET v = 1")
    assert conn.pull() is True
    assert conn.execute("SELECT n, pad FROM mine ORDER BY n").fetchall() == [(1, b"\x01"), (2, b"\x02")]
    assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]
    conn.push()  # and they still reach the server
    assert turso_server.db_sql("SELECT count(*) FROM mine") == [["2"]]
    conn.close()


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_rows_of_a_local_table_survive_a_pull_after_everything_logged_was_pushed(turso_server, tmp_path, mode):
    conn = _replica(turso_server, tmp_path, mode)
    conn.execute("UPDATE t SET v = 5")
    conn.commit()
    conn.push()  # the server now has log id 1: the replay floor is the last log id
    _local_table(conn)
    turso_server.db_sql("INSERT INTO t VALUES (2, 0)")
    assert conn.pull() is True
    assert conn.execute("SELECT count(*) FROM mine").fetchone() == (2,)
    assert conn.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, 5), (2, 0)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
