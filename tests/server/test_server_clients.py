"""Real clients others wrote, against the reference server (issue 11).

npm: @libsql/client (Hrana over HTTP, embedded replicas with ``syncUrl``) and
@tursodatabase/serverless (``/v3/pipeline`` + ``/v3/cursor``), installed by the
``node_clients`` session fixture. PyPI (the ``test`` extra): ``libsql-client`` (Hrana 1:
``/v1/execute``, ``/v1/batch``), ``libsql`` (remote mode and embedded replicas with
``sync_url``) and ``sqlalchemy-libsql``. The Rust-backed ``libsql`` clients hold the GIL
while they wait for the network, so they run in a subprocess, never next to the server's
threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import libsql_client

TOKEN = "client-t0ken"


def run_python(code: str, **env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_libsql_client_js(node_clients, turso_server_factory):
    srv = turso_server_factory(auth_token=TOKEN)
    out = node_clients.run("libsql_client.mjs", SCENARIO="ops", URL=srv.url, TOKEN=TOKEN)
    assert out["insert"] == {"rowsAffected": 1, "lastInsertRowid": {"bigint": "1"}}
    sel = out["select"]
    assert sel["columns"] == ["big", "b", "f", "s", "inf"]
    assert sel["columnTypes"] == ["INTEGER", "BLOB", "REAL", "TEXT", ""]  # decltype, "" = none
    assert sel["rows"] == [[{"bigint": "9007199254740993"}, {"blob": [0, 1, 255]}, 1.5, None,
                            {"float": "Infinity"}]]
    assert out["named"] == [["xy"]]
    assert out["batch_write"] == [[], [[{"bigint": "2"}]]]
    assert out["batch_read"] == [[[{"bigint": "2"}]], [[{"bigint": "2"}]]]
    assert out["batch_deferred"] == [[], [[{"bigint": "3"}]]]
    assert out["batch_atomic"]["code"] == "SQLITE_CONSTRAINT_PRIMARYKEY"
    assert out["after_atomic"] == [[{"bigint": "0"}]]  # the failed batch rolled back entirely
    assert out["tx_sees_own"] == [[{"bigint": "1"}]]
    assert out["after_rollback"] == [[{"bigint": "0"}]]
    assert out["after_commit"] == [[{"bigint": "2"}]]
    assert out["after_multiple"] == [["m1"], ["m;2"]]
    assert out["interleave"] == {
        "before": [[{"bigint": "7"}]],
        "during": [[{"bigint": "7"}]],  # the writer's row is not committed yet
        "after": [[{"bigint": "7"}]],  # committed, but the read transaction keeps its snapshot
        "fresh": [[{"bigint": "8"}]],
    }
    assert out["constraint"]["code"] == "SQLITE_CONSTRAINT_PRIMARYKEY"
    assert "UNIQUE constraint failed: t.id" in out["constraint"]["message"]
    assert out["syntax"]["code"] == "SQLITE_ERROR" and "syntax error" in out["syntax"]["message"]
    assert "401" in out["wrong_token"]["message"] or out["wrong_token"]["code"] == "UNAUTHORIZED"
    assert srv.db_sql("SELECT count(*) FROM t") == [["8"]]


def test_libsql_client_js_transaction_expires(node_clients, turso_server_factory):
    srv = turso_server_factory(auth_token=TOKEN, idle_timeout=0.5)
    out = node_clients.run("libsql_client.mjs", SCENARIO="expire", URL=srv.url, TOKEN=TOKEN,
                           WAIT_MS="2000")
    assert out["expired"]["code"] == "STREAM_EXPIRED"
    assert out["count"] == [[0]]  # the expired transaction was rolled back


def test_libsql_client_js_embedded_replica(node_clients, turso_server_factory, tmp_path):
    srv = turso_server_factory(auth_token=TOKEN)
    srv.db_sql("CREATE TABLE r(id INTEGER PRIMARY KEY, v)")
    srv.db_sql("INSERT INTO r(v) SELECT value FROM generate_series(1, 500)")
    out = node_clients.run("libsql_client.mjs", SCENARIO="replica", URL=srv.url, TOKEN=TOKEN,
                           REPLICA=str(tmp_path / "replica.db"))
    assert out["bootstrap"] == [[{"bigint": "500"}]]
    assert out["after_sync"] == [[{"bigint": "500"}]]
    assert out["read_your_write"] == [[{"bigint": "9007199254740993"}]]  # written remotely
    assert out["final"] == [[{"bigint": "502"}]]
    assert srv.db_sql("SELECT count(*), max(v) FROM r")[0][0] == "502"


def test_serverless_js(node_clients, turso_server_factory):
    srv = turso_server_factory(auth_token=TOKEN)
    out = node_clients.run("serverless.mjs", URL=srv.url, TOKEN=TOKEN)
    assert out["run"] == {"changes": 1, "lastInsertRowid": 1}
    assert out["columns"] == [  # from describe: decltypes
        {"name": "big", "type": "INTEGER"}, {"name": "b", "type": "BLOB"},
        {"name": "f", "type": "REAL"}, {"name": "t", "type": "TEXT"},
        {"name": "inf", "type": None},
    ]
    assert out["row"] == {"big": {"bigint": "9007199254740993"}, "b": {"blob": [0, 1, 255]},
                          "f": 1.5, "t": None, "inf": {"float": "Infinity"}}
    assert out["all"] == [{"id": 1}]
    assert out["batch"] == [1, 1]
    assert out["tx_rollback"]["message"] == "roll it back"
    assert out["after_rollback"] == 0 and out["after_commit"] == 1
    assert out["constraint"]["code"] == "SQLITE_CONSTRAINT_PRIMARYKEY"
    assert "syntax error" in out["syntax"]["message"]
    assert "401" in out["wrong_token"]["message"]
    assert out["compat_batch"] == [1, 1]
    assert out["compat_after_rollback"] == 0 and out["compat_after_multiple"] == 2


def test_libsql_client_python_v1(turso_server_factory):
    srv = turso_server_factory(auth_token=TOKEN)
    with libsql_client.create_client_sync(srv.url, auth_token=TOKEN) as c:
        c.execute("CREATE TABLE p(id INTEGER PRIMARY KEY, big INTEGER, b BLOB, f REAL)")
        rs = c.execute("INSERT INTO p(big, b, f) VALUES (?, ?, ?)", [2**62 + 1, b"\0\1", 2.5])
        assert (rs.rows_affected, rs.last_insert_rowid) == (1, 1)
        rs = c.execute("SELECT big, b, f, NULL FROM p")
        assert tuple(rs.rows[0]) == (2**62 + 1, b"\0\1", 2.5, None)
        results = c.batch(["INSERT INTO p(f) VALUES (1)", ("SELECT count(*) FROM p WHERE f > ?", [0])])
        assert results[1].rows[0][0] == 2
        for sql, code in (("INSERT INTO p(id) VALUES (1)", "SQLITE_CONSTRAINT"), ("SELEC 1", "SQLITE_ERROR")):
            try:
                c.execute(sql)
            except libsql_client.LibsqlError as exc:
                assert exc.code.startswith(code)
            else:
                raise AssertionError(f"{sql} did not fail")
    with libsql_client.create_client_sync(srv.url, auth_token="wrong") as c:
        try:
            c.execute("SELECT 1")
        except libsql_client.LibsqlError as exc:
            assert "401" in str(exc) or "UNAUTHORIZED" in str(exc)
        else:
            raise AssertionError("a wrong token was accepted")


LIBSQL_REMOTE = """
import json, os, libsql
c = libsql.connect(os.environ["URL"], auth_token=os.environ["TOKEN"])
c.execute("CREATE TABLE q(id INTEGER PRIMARY KEY, v, b BLOB)")
c.execute("INSERT INTO q(v, b) VALUES (?, ?)", (2**31 - 1, b"\\x00\\x01"))
c.execute("INSERT INTO q(v, b) VALUES (?, ?)", ("text", None))
c.commit()
c.execute("INSERT INTO q(v) VALUES ('rolled back')")
c.rollback()
rows = c.execute("SELECT v, typeof(v), hex(b) FROM q ORDER BY id").fetchall()
try:
    c.execute("INSERT INTO q(id) VALUES (1)")
    constraint = None
except Exception as exc:
    constraint = str(exc)
print(json.dumps({"rows": rows, "constraint": constraint}))
"""

LIBSQL_REPLICA = """
import json, os, libsql
c = libsql.connect(os.environ["REPLICA"], sync_url=os.environ["URL"], auth_token=os.environ["TOKEN"])
out = {"bootstrap": c.execute("SELECT count(*) FROM r").fetchone()[0]}
c.execute("INSERT INTO r(v) VALUES ('from the replica')")
c.commit()
c.sync()
out["after_write"] = c.execute("SELECT count(*) FROM r").fetchone()[0]
print(json.dumps(out))
"""

LIBSQL_RESYNC = """
import json, os, libsql
c = libsql.connect(os.environ["REPLICA"], sync_url=os.environ["URL"], auth_token=os.environ["TOKEN"])
c.sync()
print(json.dumps({"count": c.execute("SELECT count(*) FROM r").fetchone()[0],
                  "last": c.execute("SELECT v FROM r ORDER BY id DESC LIMIT 1").fetchone()[0]}))
"""


def test_libsql_python_remote(turso_server_factory):
    srv = turso_server_factory(auth_token=TOKEN)
    out = run_python(LIBSQL_REMOTE, URL=srv.url, TOKEN=TOKEN)
    assert out["rows"] == [[2**31 - 1, "integer", "0001"], ["text", "text", ""]]
    assert "UNIQUE constraint failed" in out["constraint"]


def test_libsql_python_embedded_replica(turso_server_factory, tmp_path):
    srv = turso_server_factory(auth_token=TOKEN)
    srv.db_sql("CREATE TABLE r(id INTEGER PRIMARY KEY, v)")
    srv.db_sql("INSERT INTO r(v) SELECT randomblob(200) FROM generate_series(1, 300)")
    env = dict(URL=srv.url, TOKEN=TOKEN, REPLICA=str(tmp_path / "replica.db"))
    out = run_python(LIBSQL_REPLICA, **env)
    assert out == {"bootstrap": 300, "after_write": 301}  # the write went to the server
    assert srv.db_sql("SELECT count(*) FROM r") == [["301"]]
    srv.db_sql("INSERT INTO r(v) VALUES ('from the server')")
    assert run_python(LIBSQL_RESYNC, **env) == {"count": 302, "last": "from the server"}


SQLALCHEMY_LIBSQL = """
import json, os
from sqlalchemy import create_engine, text
eng = create_engine("sqlite+libsql://" + os.environ["HOSTPORT"] + "/",
                    connect_args={"auth_token": os.environ["TOKEN"]})
with eng.connect() as c:
    c.execute(text("CREATE TABLE sa(id INTEGER PRIMARY KEY, v TEXT)"))
    c.execute(text("INSERT INTO sa(v) VALUES (:v)"), {"v": "kept"})
    c.commit()
    c.execute(text("INSERT INTO sa(v) VALUES ('dropped')"))
    c.rollback()
    rows = c.execute(text("SELECT v FROM sa")).fetchall()
print(json.dumps({"rows": [list(r) for r in rows]}))
"""


def test_sqlalchemy_libsql(turso_server_factory):
    srv = turso_server_factory(auth_token=TOKEN)
    hostport = srv.url.split("//", 1)[1]
    assert run_python(SQLALCHEMY_LIBSQL, HOSTPORT=hostport, TOKEN=TOKEN) == {"rows": [["kept"]]}
    assert srv.db_sql("SELECT v FROM sa") == [["kept"]]


def test_turso_sync_js(node_clients, turso_server_factory, tmp_path):
    srv = turso_server_factory(auth_token=TOKEN)
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    srv.db_sql("INSERT INTO t(v) SELECT hex(randomblob(2000)) FROM generate_series(1, 400)")
    out = node_clients.run("turso_sync.mjs", URL=srv.url, TOKEN=TOKEN, DIR=str(tmp_path))
    assert out["bootstrap"] == 400
    assert out["b_pulled"] is True and out["b_after_pull"] == 401 and out["b_row"] == "from a"
    assert srv.db_sql("SELECT count(*) FROM t WHERE v = 'from a'") == [["1"]]  # pushed
    assert len(out["query_row"]) == 4000
    db_bytes = int(srv.db_sql("PRAGMA page_count")[0][0]) * 4096
    assert out["query_bootstrap_bytes"] < db_bytes / 10  # only the query's pages
    assert out["query_count"] == 401 and out["query_total_bytes"] > db_bytes / 2
    assert out["remote_write_seen"] == 1  # went to the server over Hrana, then pulled back
    assert srv.db_sql("SELECT count(*) FROM t WHERE v = 'remote write'") == [["1"]]


def test_libsql_client_js_offline_writes_are_refused_clearly(node_clients, turso_server_factory,
                                                              tmp_path):
    srv = turso_server_factory(auth_token=TOKEN)
    srv.db_sql("CREATE TABLE r(id INTEGER PRIMARY KEY, v)")
    out = node_clients.run("libsql_client.mjs", SCENARIO="offline", URL=srv.url, TOKEN=TOKEN,
                           REPLICA=str(tmp_path / "offline.db"))
    assert "405" in out["push"]["message"] and "remote writes" in out["push"]["message"]
    assert srv.db_sql("SELECT count(*) FROM r") == [["0"]]
