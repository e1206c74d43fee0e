"""push() of OUR client to OUR reference server: what is captured, the SQL shapes of spec
§6.7, the high-water row, and bad input (server constraint, garbage reply, lost reply)."""

from __future__ import annotations

import io
import os
import json
import sqlite3
import time

import pytest

import turso_dbapi
from support.faultproxy import FaultProxy
from turso_dbapi.cli.shell import Shell

SCHEMA = [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",  # rowid alias
    "CREATE TABLE u(a TEXT, b INTEGER, c, PRIMARY KEY(a, b)) WITHOUT ROWID",
    "CREATE TABLE n(x, y)",  # no primary key: the rowid is the key
    "CREATE TABLE p(email TEXT PRIMARY KEY, name TEXT)",  # a non-alias primary key
]


def seed(server):
    for sql in SCHEMA:
        server.db_sql(sql)
    server.db_sql("INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    server.db_sql("INSERT INTO u VALUES ('k', 1, 'x'), ('k', 2, 'y')")
    server.db_sql("INSERT INTO n VALUES (x'00ff', 1.5), ('text', NULL)")
    server.db_sql("INSERT INTO p VALUES ('a@x', 'A'), ('b@x', 'B')")


def dump(conn):
    """Every user table's rows (typed), the way to compare two databases."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND name != 'turso_sync_last_change_id' ORDER BY name")]
    return {n: sorted(conn.execute(f'SELECT rowid, * FROM "{n}"' if n != "u" else f'SELECT * FROM "{n}"').fetchall(),
                      key=repr) for n in names}


def server_conn(server):
    """A read-only look at the server's file (its own SQLite, WAL mode)."""
    return sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True)


def test_push_sends_every_kind_of_change_of_every_table_shape(turso_server, tmp_path):
    seed(turso_server)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("INSERT INTO t VALUES (4, 'four')")
    conn.execute("UPDATE t SET v = 'ONE' WHERE id = 1")
    conn.execute("UPDATE t SET id = 20 WHERE id = 2")  # a key change: delete 2, upsert 20
    conn.execute("DELETE FROM t WHERE id = 3")
    conn.execute("UPDATE u SET c = 'z' WHERE a = 'k' AND b = 2")
    conn.execute("DELETE FROM u WHERE b = 1")
    conn.execute("INSERT INTO n VALUES (3, 'three')")
    conn.execute("UPDATE n SET y = 2.5 WHERE x = x'00ff'")
    conn.execute("UPDATE p SET email = 'c@x' WHERE email = 'b@x'")
    conn.commit()
    # DDL: a new table (its rows were written before it had triggers), an index, a column
    conn.execute("CREATE TABLE fresh(id INTEGER PRIMARY KEY, w BLOB)")
    conn.execute("INSERT INTO fresh VALUES (1, x'0102'), (2, NULL)")
    conn.execute("CREATE INDEX t_v ON t(v)")
    conn.execute("ALTER TABLE t ADD COLUMN extra INTEGER DEFAULT 7")
    conn.execute("UPDATE t SET extra = 8 WHERE id = 4")
    conn.commit()
    assert conn.stats().pending_changes > 0
    result = conn.push()
    assert result.batches == 1 and result.rows >= 10
    with server_conn(turso_server) as srv:
        assert dump(srv) == dump(conn)
        assert srv.execute("SELECT name FROM sqlite_master WHERE name = 't_v'").fetchall() == [("t_v",)]
        assert srv.execute("SELECT pull_gen, change_id FROM turso_sync_last_change_id").fetchall() == [
            (0, result.last_change_id)]
    st = conn.stats()
    assert st.pending_changes == 0 and st.pushed_rows == result.rows and st.last_push_unix_time
    # a second replica of the server now holds exactly the same rows
    other = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "o.db"))
    assert dump(other) == dump(conn)


def test_push_sql_is_spec_6_7_and_commits_the_high_water_row_in_the_same_batch(turso_server, tmp_path):
    seed(turso_server)
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"))
        conn.execute("INSERT INTO p VALUES ('z@x', 'Z')")
        conn.execute("DELETE FROM u WHERE b = 1")
        conn.execute("CREATE TABLE k(id INTEGER PRIMARY KEY)")
        conn.commit()
        proxy.clear()
        conn.push()
        calls = [json.loads(r.request_body) for r in proxy.records if r.path == "/v2/pipeline"]
    assert len(calls) == 2  # (a) the high-water read, (b) one batch
    (read,) = calls[0]["requests"][0]["batch"]["steps"]
    assert read["stmt"]["sql"] == "SELECT pull_gen, change_id FROM turso_sync_last_change_id WHERE client_id = ?"
    steps = calls[1]["requests"][0]["batch"]["steps"]
    sqls = [s["stmt"]["sql"] for s in steps]
    assert sqls[0] == "BEGIN IMMEDIATE" and steps[0]["condition"] is None
    assert sqls[1].startswith("CREATE TABLE IF NOT EXISTS turso_sync_last_change_id")
    assert sqls[2].startswith("SELECT abs(-9223372036854775808) WHERE")  # the compare-and-set guard
    assert steps[2]["stmt"]["args"][1] == {"type": "null"}  # built on no high-water row yet
    assert "CREATE TABLE IF NOT EXISTS k(id INTEGER PRIMARY KEY)" in sqls
    assert ('INSERT INTO "p"("email", "name") VALUES (?, ?) ON CONFLICT("email") DO UPDATE SET '
            '"name" = excluded."name"') in sqls
    assert 'DELETE FROM "u" WHERE "a" IS ? AND "b" IS ?' in sqls
    assert sqls[-3].startswith("INSERT INTO turso_sync_last_change_id(client_id, pull_gen, change_id)")
    assert sqls[-2:] == ["COMMIT", "ROLLBACK"]
    # every step after BEGIN runs only inside the transaction and after its predecessor
    for i in range(1, len(steps) - 1):
        cond = steps[i]["condition"]
        assert cond["type"] == "and" and {"type": "not", "cond": {"type": "is_autocommit"}} in cond["conds"]
        assert {"type": "ok", "step": i - 1} in cond["conds"]
    assert steps[-1]["condition"] == {"type": "not", "cond": {"type": "is_autocommit"}}
    args = steps[sqls.index('DELETE FROM "u" WHERE "a" IS ? AND "b" IS ?')]["stmt"]["args"]
    assert args == [{"type": "text", "value": "k"}, {"type": "integer", "value": "1"}]


def test_push_batches_split_at_the_threshold_each_with_its_high_water_row(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("INSERT INTO t VALUES (1000000, 'synced')")  # the rows below: logged, not a tail
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), push_operations_threshold=4)
        for i in range(10):  # ten local transactions: cuts are allowed between any two
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, i))
            conn.commit()
        proxy.clear()
        result = conn.push()
        batches = [json.loads(r.request_body) for r in proxy.records if b"BEGIN IMMEDIATE" in r.request_body]
    assert result.batches == len(batches) == 3 and result.rows == 10
    marks = [[s["stmt"]["args"][2]["value"] for s in b["requests"][0]["batch"]["steps"]
              if s["stmt"]["sql"].startswith("INSERT INTO turso_sync_last_change_id")][0] for b in batches]
    assert marks == ["4", "8", "10"]
    assert turso_server.db_sql("SELECT COUNT(*) FROM t") == [["11"]]


def _counting_server(server):
    """A server table that counts every row statement applied to t (a trigger on the server
    only: the replica bootstraps before it exists, and never pulls in these tests)."""
    server.db_sql("CREATE TABLE applied(n INTEGER)")
    server.db_sql("INSERT INTO applied VALUES (0)")
    for ev in ("INSERT", "UPDATE", "DELETE"):
        server.db_sql(f"CREATE TRIGGER count_{ev.lower()} AFTER {ev} ON t BEGIN UPDATE applied SET n = n + 1; END")


def test_a_push_whose_reply_is_lost_is_retried_and_applies_nothing_twice(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), retries=0)
        _counting_server(turso_server)
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(5)])
        conn.commit()
        proxy.clear()
        # the server commits the batch, the reply never arrives
        proxy.inject("drop_reply", when=lambda r: b"BEGIN IMMEDIATE" in r.body)
        result = conn.push()  # retried from the high-water row: nothing left to send
        batches = [r for r in proxy.records if b"BEGIN IMMEDIATE" in r.request_body]
    assert [r.fault for r in batches] == ["drop_reply", None]
    assert b'"sql":"INSERT INTO \\"t\\"' not in batches[1].request_body  # no row statement again
    assert result.rows == 0
    assert turso_server.db_sql("SELECT n FROM applied") == [["5"]]
    assert turso_server.db_sql("SELECT COUNT(*) FROM t") == [["5"]]
    # and a later push of the same replica sends nothing twice either
    conn.push()
    assert turso_server.db_sql("SELECT n FROM applied") == [["5"]]


def test_a_server_constraint_violation_fails_the_batch_as_a_whole(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    turso_server.db_sql("INSERT INTO users VALUES (1, 'a@x')")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    turso_server.db_sql("INSERT INTO users VALUES (2, 'taken@x')")  # another client, meanwhile
    conn.execute("INSERT INTO users VALUES (10, 'ok@x')")
    conn.execute("INSERT INTO users VALUES (11, 'taken@x')")  # fine locally, refused remotely
    conn.execute("INSERT INTO users VALUES (12, 'ok2@x')")
    conn.commit()
    pending = conn.stats().pending_changes
    with pytest.raises(turso_dbapi.PushConstraintError) as info:
        conn.push()
    err = info.value
    assert isinstance(err, turso_dbapi.IntegrityError)
    assert err.table == "users" and err.statement.startswith('INSERT INTO "users"')
    assert "users" in str(err) and "UNIQUE" in str(err) and "rolled this batch back as a whole" in str(err)
    # nothing of the batch is on the server, nothing is marked pushed
    assert turso_server.db_sql("SELECT id FROM users ORDER BY id") == [["1"], ["2"]]
    # (even its CREATE TABLE of the high-water table was rolled back)
    assert turso_server.db_sql("SELECT name FROM sqlite_master WHERE name = 'turso_sync_last_change_id'") == []
    assert conn.stats().pending_changes == pending and conn.stats().pushed_rows == 0
    # fixing the data locally makes the next push go through
    conn.execute("UPDATE users SET email = 'mine@x' WHERE id = 11")
    conn.commit()
    conn.push()
    assert turso_server.db_sql("SELECT id, email FROM users ORDER BY id") == [
        ["1", "a@x"], ["2", "taken@x"], ["10", "ok@x"], ["11", "mine@x"], ["12", "ok2@x"]]


@pytest.mark.parametrize("body", [b"<html>proxy error</html>", b'{"results": [{"type": "ok"}]}',
                                  b'{"results": [{"type": "ok", "response": {"type": "batch", "result": '
                                  b'{"step_results": [], "step_errors": []}}}]}'])
def test_a_garbage_pipeline_reply_is_a_protocol_error_and_nothing_is_marked_pushed(turso_server, tmp_path, body):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"))
        conn.execute("INSERT INTO t VALUES (1, 1)")
        conn.commit()
        proxy.inject("replace_body", body=body, when=lambda r: r.path == "/v2/pipeline")
        with pytest.raises(turso_dbapi.ProtocolError, match="malformed reply") as info:
            conn.push()
        assert "127.0.0.1" in str(info.value)
        assert conn.stats().pending_changes == 1 and conn.stats().last_push_unix_time is None
        conn.push()  # the server is fine again
    assert turso_server.db_sql("SELECT * FROM t") == [["1", "1"]]


def test_push_transform_maps_or_drops_changes(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, secret TEXT)")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(1, "a", "s1"), (2, "b", "s2"), (3, "c", "s3")])
    conn.commit()

    def transform(change):
        if change.key == (2,):
            return None  # never leaves this replica
        if change.row is not None:
            change.row = dict(change.row, secret=None)
        return change

    result = conn.push(transform=transform)
    assert result.rows == 2
    assert turso_server.db_sql("SELECT id, v, secret FROM t ORDER BY id") == [["1", "a", None], ["3", "c", None]]


def test_capture_is_invisible_in_dumps_schema_and_reflection(turso_server, tmp_path):
    seed(turso_server)
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    conn.execute("CREATE TABLE mine(a)")
    conn.commit()
    conn.push()  # installs the triggers of the new table too
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'sqlite_tdb_%'").fetchone()[0] > 0
    dumped = "\n".join(conn.iterdump())
    assert "sqlite_tdb" not in dumped and "CREATE TABLE mine(a);" in dumped
    plain = sqlite3.connect(":memory:")
    plain.executescript(dumped)  # the dump restores into a plain database
    assert dump(plain) == dump(conn)
    import sqlalchemy as sa  # a test extra

    engine = sa.create_engine(f"sqlite+turso_dbapi:///{path}")
    with engine.connect() as c:
        names = sa.inspect(c).get_table_names()
    engine.dispose()
    assert names == ["mine", "n", "p", "t", "u"]
    out = io.StringIO()
    Shell(conn, out=out).dot(".schema")
    assert "sqlite_tdb" not in out.getvalue() and "CREATE TABLE mine(a);" in out.getvalue()


def test_a_batch_delayed_in_the_network_past_its_retry_rolls_back_instead_of_applying_twice(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), http_timeout=0.5, retries=0)
        _counting_server(turso_server)
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(5)])
        conn.commit()
        proxy.clear()
        # the first batch is held 1.5 s: the client gives up at 0.5 s and pushes again; the
        # retry commits, then the held batch reaches the server - and must change nothing
        proxy.inject("slow", delay=1.5, when=lambda r: b"BEGIN IMMEDIATE" in r.body)
        conn.push()
        time.sleep(2.0)  # the held batch has arrived by now
        guard = [json.loads(r.request_body)["requests"][0]["batch"]["steps"][2]["stmt"]["args"]
                 for r in proxy.records if b"BEGIN IMMEDIATE" in r.request_body]
    assert len(guard) == 2 and guard[0] == guard[1]  # both built on "no high-water row"
    assert turso_server.db_sql("SELECT n FROM applied") == [["5"]]  # not 10
    assert turso_server.db_sql("SELECT COUNT(*) FROM t") == [["5"]]


def test_changes_of_another_process_are_captured_and_pushed(turso_server, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import turso_dbapi\n"
              "c = turso_dbapi.connect(sys.argv[2])\n"
              "c.execute('INSERT INTO t VALUES (7, 7)'); c.execute('CREATE TABLE theirs(a)')\n"
              "c.execute('INSERT INTO theirs VALUES (1)'); c.commit()\n")
    subprocess.run([sys.executable, "-c", script, root, path], check=True, timeout=60)
    assert conn.stats().pending_changes >= 1
    conn.push()  # this process pushes what the other one wrote
    assert turso_server.db_sql("SELECT * FROM t") == [["7", "7"]]
    assert turso_server.db_sql("SELECT * FROM theirs") == [["1"]]


def test_a_row_insert_or_replace_deletes_through_another_unique_key_is_pushed(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE p(id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    turso_server.db_sql("INSERT INTO p VALUES (1, 'a@x'), (2, 'b@x')")
    a = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "a.db"))
    a2 = turso_dbapi.connect(str(tmp_path / "a.db"))  # a second connection of the replica
    # row 1 goes: the new row 3 takes its email (REPLACE deletes it, no DELETE statement ran)
    a.execute("INSERT OR REPLACE INTO p VALUES (3, 'a@x')")
    a.commit()
    a2.execute("REPLACE INTO p VALUES (4, 'b@x')")
    a2.commit()
    a.push()
    assert turso_server.db_sql("SELECT id, email FROM p ORDER BY id") == [["3", "a@x"], ["4", "b@x"]]
    # a user's own triggers now run with recursive_triggers on: a trigger on its own table
    # recurses (bounded by SQLite's trigger depth) - visible as the pragma's value
    assert a.execute("PRAGMA recursive_triggers").fetchone() == (1,)


def test_on_conflict_and_transform_are_connect_options_and_the_shell_pushes_and_syncs(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("CREATE TABLE secret(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("INSERT INTO t VALUES (1, 'base')")
    seen = []

    def decide(c):
        seen.append((c.table, c.key))
        return "server"

    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"), on_conflict=decide,
                               transform=lambda ch: None if ch.table == "secret" else ch)
    conn.execute("INSERT INTO secret VALUES (1, 'local only')")
    conn.execute("INSERT INTO t VALUES (2, 'pushed')")
    conn.commit()
    out = io.StringIO()
    Shell(conn, out=out).dot(".push")  # the connect option's transform drops table secret
    assert "pushed: 1 row changes" in out.getvalue()
    assert turso_server.db_sql("SELECT COUNT(*) FROM secret") == [["0"]]
    assert turso_server.db_sql("SELECT v FROM t WHERE id = 2") == [["pushed"]]
    # both sides change row 1: the connect option's hook keeps the server's row
    conn.execute("UPDATE t SET v = 'local' WHERE id = 1")
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 'server' WHERE id = 1")
    assert conn.pull() is True
    assert seen == [("t", (1,))]
    assert conn.execute("SELECT v FROM t WHERE id = 1").fetchone() == ("server",)
    # .sync: push then pull
    conn.execute("INSERT INTO t VALUES (3, 'synced')")
    conn.commit()
    turso_server.db_sql("INSERT INTO t VALUES (4, 'from the server')")
    out = io.StringIO()
    Shell(conn, out=out).dot(".sync")
    assert out.getvalue().splitlines() == ["pushed: 1 row changes in 1 batch(es)", "pulled: changes applied"]
    assert turso_server.db_sql("SELECT v FROM t WHERE id = 3") == [["synced"]]
    assert conn.execute("SELECT v FROM t WHERE id = 4").fetchone() == ("from the server",)
    # a callable cannot travel in a URL: the option is refused there with the reason
    with pytest.raises(turso_dbapi.ProgrammingError, match="transform.*callable.*keyword"):
        turso_dbapi.connect(turso_server.url + "?transform=drop", local_path=str(tmp_path / "u.db"))
