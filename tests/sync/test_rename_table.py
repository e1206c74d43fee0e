"""ALTER TABLE of a captured table (sync/ddl.py): RENAME TO works through every path of a
replica connection (execute, cursors, executescript, inside and outside a transaction,
rolled back), keeps capturing, is pushed as a rename (rows other clients wrote meanwhile
survive), and the server, a second replica of ours and pyturso all see the renamed table."""

from __future__ import annotations

import json
import sys

import pytest

import turso_dbapi
from support.faultproxy import FaultProxy
from turso_dbapi.sync import capture, changes


def _tables(conn):
    return sorted(n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND name NOT LIKE 'turso\\_%' ESCAPE '\\'"))


def _pushed_sql(proxy):
    out = []
    for r in proxy.records:
        if b"BEGIN IMMEDIATE" in r.request_body:
            steps = json.loads(r.request_body)["requests"][0]["batch"]["steps"]
            out += [s["stmt"]["sql"] for s in steps]
    return out


def _logged(conn):
    """The keys pending a push, oldest first: logged, then the tails' (sync/tail.py)."""
    return [c.key for c in changes.collect(conn, 0).rows]


def test_a_renamed_table_is_pushed_as_a_rename_and_every_peer_sees_it(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    turso_server.db_sql("CREATE INDEX t_v ON t(v)")
    turso_server.db_sql("INSERT INTO t VALUES (1, 'server')")
    other = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "other.db"))
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"))
        conn.execute("ALTER TABLE t RENAME TO u")  # autocommit: SQLite alone refuses it
        conn.execute("INSERT INTO u VALUES (2, 'after the rename')")
        conn.commit()
        assert _tables(conn) == ["u"] and _logged(conn) == [(2,)]
        assert [r[1] for r in conn.execute("PRAGMA index_list(u)")] == ["t_v"]
        turso_server.db_sql("INSERT INTO t VALUES (3, 'another client, meanwhile')")
        proxy.clear()
        conn.push()
        sqls = _pushed_sql(proxy)
        assert 'ALTER TABLE "t" RENAME TO "u"' in sqls
        assert not [s for s in sqls if s.startswith(("DROP", "CREATE TABLE", "CREATE INDEX")) and "turso_sync" not in s], sqls
        proxy.clear()
        conn.push()  # the rename is part of the synced schema now: never sent again
        assert not [s for s in _pushed_sql(proxy) if "RENAME" in s]
    assert turso_server.db_sql("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('t', 'u')") \
        == [["u"]]
    assert turso_server.db_sql("SELECT id, v FROM u ORDER BY id") == [
        ["1", "server"], ["2", "after the rename"], ["3", "another client, meanwhile"]]
    other.pull()
    assert _tables(other) == ["u"]
    assert other.execute("SELECT id FROM u ORDER BY id").fetchall() == [(1,), (2,), (3,)]
    conn.pull()
    assert conn.execute("SELECT id FROM u ORDER BY id").fetchall() == [(1,), (2,), (3,)]
    conn.execute("INSERT INTO u VALUES (4, 'captured after the pull')")
    conn.commit()
    conn.push()
    assert turso_server.db_sql("SELECT COUNT(*) FROM u") == [["4"]]
    conn.close()
    other.close()


@pytest.mark.skipif(sys.version_info < (3, 10), reason="pyturso >= 0.8 needs Python 3.10+")
def test_pyturso_sees_the_table_our_replica_renamed(turso_server, tmp_path):
    import turso.sync as turso_sync  # a test extra; an ImportError names it

    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    turso_server.db_sql("INSERT INTO t VALUES (1, 'server')")
    peer = turso_sync.connect(str(tmp_path / "peer.db"), turso_server.url)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("ALTER TABLE t RENAME TO u")
    conn.execute("INSERT INTO u VALUES (2, 'ours')")
    conn.commit()
    conn.push()
    peer.pull()
    assert peer.execute("SELECT id, v FROM u ORDER BY id").fetchall() == [(1, "server"), (2, "ours")]
    peer.execute("INSERT INTO u VALUES (3, 'peer')")
    peer.commit()
    peer.push()
    conn.pull()
    assert conn.execute("SELECT id, v FROM u ORDER BY id").fetchall() == [(1, "server"), (2, "ours"), (3, "peer")]
    conn.close()
    peer.close()


def test_every_path_of_a_connection_renames_and_keeps_capturing(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    # a script (statement by statement, its own BEGIN/COMMIT kept)
    conn.executescript("BEGIN; ALTER TABLE t RENAME TO u; INSERT INTO u VALUES (1, 's'); COMMIT;")
    # a cursor, inside the connection's implicit transaction
    conn.execute("INSERT INTO u VALUES (2, 'in a transaction')")
    conn.cursor().execute('ALTER TABLE "u" RENAME TO w')
    conn.execute("INSERT INTO w VALUES (3, 'still in it')")
    conn.commit()
    # rolled back: the table, its triggers and the noted rename are as before
    conn.execute("INSERT INTO w VALUES (4, 'rolled back')")
    conn.execute("ALTER TABLE w RENAME TO gone")
    conn.rollback()
    assert _tables(conn) == ["w"]
    conn.execute("INSERT INTO w VALUES (5, 'after the rollback')")
    conn.commit()
    assert _logged(conn) == [(1,), (2,), (3,), (5,)]
    assert capture.renames(conn) == {"w": "t"}
    # a failing ALTER changes nothing either
    with pytest.raises(turso_dbapi.OperationalError):
        conn.execute("ALTER TABLE w RENAME TO sqlite_nope")
    assert _tables(conn) == ["w"] and capture.renames(conn) == {"w": "t"}
    # RENAME COLUMN of the key column: the triggers follow it (they read NEW.id before)
    conn.execute("ALTER TABLE w RENAME COLUMN id TO ident")
    conn.execute("INSERT INTO w VALUES (6, 'renamed key')")
    conn.commit()
    assert _logged(conn)[-1] == (6,)
    # the dump and the schema show the user's objects only
    assert not [line for line in conn.iterdump() if "sqlite_tdb" in line]
    conn.push()
    assert turso_server.db_sql("SELECT ident, v FROM w ORDER BY ident") == [
        ["1", "s"], ["2", "in a transaction"], ["3", "still in it"], ["5", "after the rollback"],
        ["6", "renamed key"]]
    conn.close()


def test_a_rename_not_pushed_yet_is_replayed_by_a_pull(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("ALTER TABLE t RENAME TO u")
    conn.execute("INSERT INTO u VALUES (1, 'local')")
    conn.commit()
    turso_server.db_sql("INSERT INTO t VALUES (2, 'server')")
    conn.pull()  # the server's revision still has t: the replay renames it again
    assert _tables(conn) == ["u"]
    assert conn.execute("SELECT id, v FROM u ORDER BY id").fetchall() == [(1, "local"), (2, "server")]
    conn.execute("INSERT INTO u VALUES (3, 'after the pull')")
    conn.commit()
    conn.push()
    assert turso_server.db_sql("SELECT id, v FROM u ORDER BY id") == [
        ["1", "local"], ["2", "server"], ["3", "after the pull"]]
    conn.close()


def test_a_new_table_under_the_old_name_goes_after_the_rename(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    turso_server.db_sql("INSERT INTO t VALUES (1, 'server')")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("ALTER TABLE t RENAME TO archive")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, note TEXT)")
    conn.execute("INSERT INTO t VALUES (7, 'new table')")
    conn.commit()
    conn.push()
    assert turso_server.db_sql("SELECT id, v FROM archive") == [["1", "server"]]
    assert turso_server.db_sql("SELECT id, note FROM t") == [["7", "new table"]]
    conn.close()
