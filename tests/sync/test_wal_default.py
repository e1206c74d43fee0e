"""A new Turso replica starts in WAL mode (as Turso's and pyturso's local files); the
connect option ``journal_mode="delete"`` keeps the rollback journal; an existing replica
keeps its file's mode; plain local files are untouched (the stdlib's default)."""

from __future__ import annotations

import pytest

import turso_dbapi


def _table(server):
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    server.db_sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')")


def _mode(conn):
    return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_a_fresh_replica_answers_wal_and_so_does_its_reopen(turso_server, tmp_path):
    _table(turso_server)
    path = tmp_path / "r.db"
    conn = turso_dbapi.connect(turso_server.url, local_path=str(path))
    assert _mode(conn) == "wal"
    assert conn.execute("SELECT v FROM t ORDER BY id").fetchall() == [("a",), ("b",)]
    conn.close()
    again = turso_dbapi.connect(str(path))
    assert _mode(again) == "wal"
    again.close()


def test_journal_mode_delete_gives_a_rollback_replica_that_stays_rollback(turso_server, tmp_path):
    _table(turso_server)
    path = tmp_path / "r.db"
    conn = turso_dbapi.connect(turso_server.url, local_path=str(path), journal_mode="delete")
    assert _mode(conn) == "delete"
    conn.execute("INSERT INTO t VALUES (3, 'c')")
    conn.commit()
    conn.close()
    assert not (tmp_path / "r.db-wal").exists()
    # reopened (by path, and by URL without the option): still rollback, never switched
    again = turso_dbapi.connect(str(path))
    assert _mode(again) == "delete"
    again.close()
    by_url = turso_dbapi.connect(turso_server.url, local_path=str(path))
    assert _mode(by_url) == "delete"
    assert by_url.execute("SELECT count(*) FROM t").fetchone() == (3,)
    by_url.close()


def test_the_option_in_a_url_query_string(turso_server, tmp_path):
    _table(turso_server)
    conn = turso_dbapi.connect(f"{turso_server.url}?journal_mode=DELETE", local_path=str(tmp_path / "r.db"))
    assert _mode(conn) == "delete"
    conn.close()


@pytest.mark.parametrize("bad", ["wall", "truncate", "memory", ""])
def test_a_bad_journal_mode_is_a_clear_error_naming_it(turso_server, tmp_path, bad):
    _table(turso_server)
    with pytest.raises(turso_dbapi.ProgrammingError) as info:
        turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"), journal_mode=bad)
    assert "journal_mode" in str(info.value)
    assert "wal or delete" in str(info.value)
    assert not (tmp_path / "r.db").exists()  # nothing bootstrapped


def test_a_plain_local_file_keeps_the_stdlib_default(tmp_path):
    conn = turso_dbapi.connect(str(tmp_path / "x.db"))
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    assert _mode(conn) == "delete"
    conn.close()
