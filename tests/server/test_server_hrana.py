"""Hrana over HTTP on the reference server: real streams, batons, cursors, v1, errors.

Raw HTTP with ``requests``, exactly the bodies sqld's clients send; the real clients
(@libsql/client, @tursodatabase/serverless, libsql-client, libsql, sqlalchemy-libsql) are
driven in tests/test_server_clients.py.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
import requests


def stmt(sql, *args):
    return {"sql": sql, "args": [_arg(a) for a in args]}


def _arg(v):
    if isinstance(v, int):
        return {"type": "integer", "value": str(v)}
    return {"type": "text", "value": v}


def ex(sql, *args):
    return {"type": "execute", "stmt": stmt(sql, *args)}


def post(srv, path, body, **kw):
    return requests.post(srv.url + path, json=body, timeout=30, **kw)


def pipe(srv, requests_, baton=None, path="/v2/pipeline"):
    r = post(srv, path, {"baton": baton, "requests": requests_})
    assert r.status_code == 200, r.text
    return r.json()


def count(srv, table="t"):
    return srv.db_sql(f"SELECT count(*) FROM {table}")[0][0]


def test_begin_insert_rollback_as_three_requests_leaves_nothing(turso_server):
    turso_server.db_sql("CREATE TABLE t(x)")
    rev = turso_server.revision
    b1 = pipe(turso_server, [ex("BEGIN")])["baton"]
    out = pipe(turso_server, [ex("INSERT INTO t VALUES (1)"), ex("SELECT count(*) FROM t")], b1)
    b2 = out["baton"]
    assert b2 and b2 != b1  # a new baton with every reply
    assert out["results"][1]["response"]["result"]["rows"] == [[{"type": "integer", "value": "1"}]]
    assert count(turso_server) == "0"  # other streams do not see the open transaction
    assert turso_server.revision == rev
    b3 = pipe(turso_server, [ex("ROLLBACK")], b2)["baton"]
    assert count(turso_server) == "0" and turso_server.revision == rev
    closed = pipe(turso_server, [{"type": "close"}], b3)
    assert closed["baton"] is None and closed["results"] == [{"type": "ok", "response": {"type": "close"}}]


def test_commit_across_requests_is_one_revision(turso_server):
    turso_server.db_sql("CREATE TABLE t(x)")
    rev = turso_server.revision_number
    b = pipe(turso_server, [ex("BEGIN"), ex("INSERT INTO t VALUES (1)")])["baton"]
    b = pipe(turso_server, [ex("INSERT INTO t VALUES (2)"), {"type": "get_autocommit"}], b)
    assert b["results"][1]["response"]["is_autocommit"] is False
    out = pipe(turso_server, [ex("COMMIT"), {"type": "get_autocommit"}], b["baton"])
    assert out["results"][1]["response"]["is_autocommit"] is True
    assert count(turso_server) == "2" and turso_server.revision_number == rev + 1


def test_batons_are_single_use_and_unforgeable(turso_server):
    b1 = pipe(turso_server, [ex("SELECT 1")])["baton"]
    b2 = pipe(turso_server, [ex("SELECT 2")], b1)["baton"]
    reused = post(turso_server, "/v2/pipeline", {"baton": b1, "requests": [ex("SELECT 3")]})
    assert reused.status_code == 400 and reused.json()["code"] == "BATON_REUSED"
    assert "already used" in reused.json()["message"]
    for forged in ("made-up-baton", base64.b64encode(bytes(48)).decode(), b2[:-2] + "AA"):
        r = post(turso_server, "/v2/pipeline", {"baton": forged, "requests": [ex("SELECT 1")]})
        assert r.status_code == 400 and r.json()["code"] == "BATON_INVALID", forged
        assert r.headers["Content-Type"] == "application/json"


def test_expired_baton_rolls_back_and_is_refused(turso_server_factory):
    srv = turso_server_factory(idle_timeout=0.4)
    srv.db_sql("CREATE TABLE t(x)")
    b = pipe(srv, [ex("BEGIN"), ex("INSERT INTO t VALUES (1)")])["baton"]
    time.sleep(1.5)
    r = post(srv, "/v2/pipeline", {"baton": b, "requests": [ex("COMMIT")]})
    assert r.status_code == 400 and r.json()["code"] == "STREAM_EXPIRED"
    assert "expired" in r.json()["message"]
    assert count(srv) == "0"
    srv.db_sql("INSERT INTO t VALUES (2)")  # the expired transaction released its lock
    assert count(srv) == "1"


def test_two_clients_interleave_interactive_transactions(turso_server):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(k TEXT PRIMARY KEY, v INTEGER)")
    srv.db_sql("INSERT INTO t VALUES ('a', 0), ('b', 0)")
    a = pipe(srv, [ex("BEGIN"), ex("SELECT v FROM t WHERE k = 'a'")])["baton"]
    b = pipe(srv, [ex("BEGIN"), ex("SELECT v FROM t WHERE k = 'b'")])["baton"]
    a = pipe(srv, [ex("UPDATE t SET v = v + 1 WHERE k = 'a'")], a)["baton"]
    # b reads its own snapshot while a holds the write lock: a's change is invisible to it
    out = pipe(srv, [ex("SELECT sum(v) FROM t")], b)
    assert out["results"][0]["response"]["result"]["rows"][0][0]["value"] == "0"
    b = out["baton"]
    a = pipe(srv, [ex("COMMIT")], a)["baton"]
    out = pipe(srv, [ex("ROLLBACK"), ex("BEGIN IMMEDIATE"), ex("UPDATE t SET v = v + 10 WHERE k = 'b'"),
                     ex("COMMIT")], b)
    assert [r["type"] for r in out["results"]] == ["ok"] * 4
    assert srv.db_sql("SELECT k, v FROM t ORDER BY k") == [["a", "1"], ["b", "10"]]


def test_a_writer_waits_for_the_lock_then_gets_busy(turso_server_factory):
    srv = turso_server_factory()
    srv.server.db.busy_timeout = 0.3
    srv.db_sql("CREATE TABLE t(x)")
    holder = pipe(srv, [ex("BEGIN IMMEDIATE"), ex("INSERT INTO t VALUES (1)")])["baton"]
    out = pipe(srv, [ex("INSERT INTO t VALUES (2)")])["results"][0]
    assert out["type"] == "error" and out["error"]["code"] == "SQLITE_BUSY"
    results = {}

    def late_writer():
        results["w"] = pipe(srv, [ex("INSERT INTO t VALUES (3)")])["results"][0]["type"]

    srv.server.db.busy_timeout = 5.0
    t = threading.Thread(target=late_writer)
    t.start()
    time.sleep(0.2)
    pipe(srv, [ex("COMMIT")], holder)
    t.join(10)
    assert results["w"] == "ok" and count(srv) == "2"


def test_stream_bound_evicts_idle_streams_and_refuses_when_all_hold_transactions(
    turso_server_factory,
):
    srv = turso_server_factory(max_streams=3)
    srv.db_sql("CREATE TABLE t(x)")
    idle = pipe(srv, [ex("SELECT 1")])["baton"]
    busy = [pipe(srv, [ex("BEGIN"), ex("SELECT * FROM t")])["baton"] for _ in range(3)]
    r = post(srv, "/v2/pipeline", {"requests": [ex("SELECT 1")]})
    assert r.status_code == 503 and r.json()["code"] == "STREAMS_EXHAUSTED"
    r = post(srv, "/v2/pipeline", {"baton": idle, "requests": [ex("SELECT 1")]})
    assert r.json()["code"] == "STREAM_EXPIRED"  # the idle stream made room for a busy one
    pipe(srv, [{"type": "close"}], busy[0])
    assert pipe(srv, [ex("SELECT 1")])["results"][0]["type"] == "ok"


def test_v3_pipeline_store_sql_sequence_describe_decltype(turso_server):
    out = pipe(
        turso_server,
        [
            {"type": "sequence", "sql": "CREATE TABLE t(id INTEGER PRIMARY KEY, name VARCHAR(20), "
                                        "score REAL); INSERT INTO t(name, score) VALUES ('a', 1.5);"},
            {"type": "store_sql", "sql_id": 7, "sql": "SELECT id, name, score, 1 + 1 AS two FROM t"},
            {"type": "execute", "stmt": {"sql_id": 7}},
            {"type": "describe", "sql": "SELECT name, :p AS p FROM t WHERE id = ?2"},
            {"type": "describe", "sql": "SELEC nothing"},
            {"type": "close_sql", "sql_id": 7},
            {"type": "execute", "stmt": {"sql": "SELECT 9e999, -9e999, 0.5"}},
        ],
        path="/v3/pipeline",
    )
    res = out["results"]
    assert [r["type"] for r in res] == ["ok", "ok", "ok", "ok", "error", "ok", "ok"]
    cols = res[2]["response"]["result"]["cols"]
    assert cols == [
        {"name": "id", "decltype": "INTEGER"},
        {"name": "name", "decltype": "VARCHAR(20)"},
        {"name": "score", "decltype": "REAL"},
        {"name": "two", "decltype": None},
    ]
    d = res[3]["response"]["result"]
    assert d["params"] == [{"name": ":p"}, {"name": "?2"}]
    assert d["cols"] == [{"name": "name", "decltype": "VARCHAR(20)"}, {"name": "p", "decltype": None}]
    assert d["is_readonly"] is True and d["is_explain"] is False
    assert "syntax error" in res[4]["error"]["message"]
    assert [v["value"] for v in res[6]["response"]["result"]["rows"][0]] == [
        float("inf"), float("-inf"), 0.5
    ]
    r = post(turso_server, "/v3/pipeline", {"requests": [ex("SELECT 9e999")]})
    assert b"Infinity" not in r.content and b"1e999" in r.content


def test_v3_cursor_streams_entries(turso_server):
    turso_server.db_sql("CREATE TABLE t(x INTEGER)")
    body = {
        "baton": None,
        "batch": {
            "steps": [
                {"stmt": stmt("INSERT INTO t SELECT value FROM generate_series(1, 1000)")},
                {"stmt": stmt("SELECT x FROM t WHERE x <= 3 ORDER BY x")},
                {"stmt": stmt("SELECT * FROM nope")},
                {"stmt": stmt("SELECT 1"), "condition": {"type": "ok", "step": 2}},
            ]
        },
    }
    r = requests.post(turso_server.url + "/v3/cursor", json=body, stream=True, timeout=30)
    assert r.status_code == 200 and r.headers.get("Transfer-Encoding") == "chunked"
    lines = [json.loads(line) for line in r.iter_lines() if line]
    head, entries = lines[0], lines[1:]
    assert set(head) == {"baton", "base_url"} and head["baton"]
    kinds = [e["type"] for e in entries]
    assert kinds == ["step_begin", "step_end", "step_begin", "row", "row", "row", "step_end",
                     "step_error"]
    assert entries[1]["affected_row_count"] == 1000
    assert entries[2]["cols"] == [{"name": "x", "decltype": "INTEGER"}]
    assert entries[3]["row"] == [{"type": "integer", "value": "1"}]
    assert entries[7]["step"] == 2 and "no such table" in entries[7]["error"]["message"]
    # the cursor's baton continues the stream
    assert pipe(turso_server, [ex("SELECT count(*) FROM t")], head["baton"])["baton"]


def test_v1_execute_and_batch(turso_server):
    r = post(turso_server, "/v1/execute", {"stmt": stmt("CREATE TABLE t(x INTEGER PRIMARY KEY, y)")})
    assert r.status_code == 200 and r.json()["result"]["cols"] == []
    r = post(turso_server, "/v1/batch", {"batch": {"steps": [
        {"stmt": stmt("INSERT INTO t VALUES (?, ?)", 1, "a")},
        {"stmt": stmt("INSERT INTO t VALUES (?, ?)", 1, "dup")},
        {"stmt": stmt("SELECT y FROM t"), "condition": {"type": "error", "step": 1}},
    ]}})
    res = r.json()["result"]
    assert res["step_results"][0]["affected_row_count"] == 1
    assert res["step_errors"][1]["code"].startswith("SQLITE_CONSTRAINT")
    assert res["step_results"][2]["rows"] == [[{"type": "text", "value": "a"}]]
    r = post(turso_server, "/v1/execute", {"stmt": stmt("SELECT * FROM nope")})
    assert r.status_code == 500 and "no such table" in r.json()["message"]
    r = post(turso_server, "/v1/execute", {"stmt": {"sql": "SELECT ?", "args": [{"type": "zz"}]}})
    assert r.status_code == 400 and r.json()["code"] == "ARGS_INVALID"
    assert turso_server.server.db.streams.open_streams == 0  # v1 streams end with the request


def test_protocol_errors_are_400_with_a_json_message(turso_server):
    r = requests.post(turso_server.url + "/v2/pipeline", data=b"{not json", timeout=10)
    assert r.status_code == 400 and "invalid JSON" in r.json()["message"]
    r = post(turso_server, "/v3/pipeline", {"requests": [{"type": "frobnicate"}]})
    assert r.status_code == 400 and "frobnicate" in r.json()["message"]
    r = requests.post(
        turso_server.url + "/v3/pipeline", data=b" " * (16 * 1024 * 1024 + 1), timeout=30
    )
    assert r.status_code == 413 and r.json()["code"] == "REQUEST_TOO_LARGE"


def test_unknown_paths_are_404_json_and_the_file_lives_at_its_name(turso_server):
    turso_server.db_sql("CREATE TABLE t(x)")
    for path in ("/infos", "/v3", "/sync/1/0", "/app.db", "/", "/v3-protobuf", "/export/x"):
        r = requests.get(turso_server.url + path, timeout=10)
        if path == "/v3":
            assert r.status_code == 200
            continue
        assert r.status_code == 404 and r.headers["Content-Type"] == "application/json", path
        assert "/server.db" in r.json()["message"]
    r = requests.get(turso_server.file_url, headers={"Range": "bytes=0-15"}, timeout=10)
    assert r.status_code == 206 and r.content == b"SQLite format 3\0"
    assert requests.post(turso_server.url + "/v4/pipeline", json={}, timeout=10).status_code == 404
    assert requests.get(turso_server.url + "/health", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v3/pipeline", {"requests": []}),
        ("/v3/cursor", {"batch": {"steps": []}}),
        ("/v1/execute", {"stmt": {"sql": "SELECT 1"}}),
        ("/v1/batch", {"batch": {"steps": []}}),
    ],
)
def test_auth_on_every_hrana_endpoint(turso_server_factory, path, body):
    srv = turso_server_factory(auth_token="s3cret-t0ken")
    for headers in ({}, {"Authorization": "Bearer s3cret-t0kem"}):
        r = requests.post(srv.url + path, json=body, headers=headers, timeout=10)
        assert r.status_code == 401 and "s3cret" not in r.text
    for path_ in ("/health", "/v3", "/nope"):
        assert requests.get(srv.url + path_, timeout=10).status_code == 401
    ok = requests.post(srv.url + path, json=body, timeout=10,
                       headers={"Authorization": "Bearer s3cret-t0ken"})
    assert ok.status_code == 200


def test_the_cursor_baton_waits_for_the_cursor_to_finish(turso_server):
    # libsql's remote client stops reading a cursor at its last step and sends the next
    # request with the head's baton while the server is still writing the body.
    srv = turso_server
    srv.db_sql("CREATE TABLE t(x)")
    srv.db_sql("INSERT INTO t SELECT value FROM generate_series(1, 20000)")
    body = {"batch": {"steps": [{"stmt": stmt("SELECT x, randomblob(100) FROM t")}]}}
    r = requests.post(srv.url + "/v3/cursor", json=body, stream=True, timeout=30)
    lines = r.iter_lines()
    baton = json.loads(next(lines))["baton"]
    rows = []
    reader = threading.Thread(target=lambda: rows.extend(line for line in lines if line))
    reader.start()
    out = pipe(srv, [ex("SELECT count(*) FROM t")], baton)  # not "in use by another request"
    reader.join(30)
    assert out["results"][0]["response"]["result"]["rows"] == [[{"type": "integer", "value": "20000"}]]
    assert len(rows) == 20002  # step_begin, the rows, step_end: the cursor was not cut short
    stale = post(srv, "/v2/pipeline", {"baton": baton, "requests": [ex("SELECT 1")]})
    assert stale.json()["code"] == "BATON_REUSED"


def test_many_clients_read_modify_write_across_requests(turso_server):
    """Each client holds BEGIN IMMEDIATE across three requests; SQLite's lock (with the busy
    timeout) serialises them, so no increment is lost and every commit is one revision."""
    srv = turso_server
    srv.db_sql("CREATE TABLE c(k INTEGER PRIMARY KEY, n INTEGER)")
    srv.db_sql("INSERT INTO c VALUES (1, 0)")
    rev0 = srv.revision_number
    clients, rounds = 6, 8
    errors = []

    def client():
        try:
            for _ in range(rounds):
                b = pipe(srv, [ex("BEGIN IMMEDIATE"), ex("SELECT n FROM c WHERE k = 1")])
                assert [r["type"] for r in b["results"]] == ["ok", "ok"], b
                n = int(b["results"][1]["response"]["result"]["rows"][0][0]["value"])
                b = pipe(srv, [ex(f"UPDATE c SET n = {n + 1} WHERE k = 1")], b["baton"])
                out = pipe(srv, [ex("COMMIT"), {"type": "close"}], b["baton"])
                assert out["results"][0]["type"] == "ok" and out["baton"] is None
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    assert srv.db_sql("SELECT n FROM c") == [[str(clients * rounds)]]
    assert srv.revision_number == rev0 + clients * rounds
    assert srv.server.db.streams.open_streams == 3  # only the three db_sql streams (no close)
