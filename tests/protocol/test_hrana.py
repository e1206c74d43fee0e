"""Hrana stream requests (spec §3) on a real sqlite3 connection, plus generate_series."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turso_dbapi.protocol.hrana import decode_value, dumps, encode_value
from turso_dbapi.server.pipeline import Executor, PipelineRequestError, split_sql
from turso_dbapi.server.sql_series import rewrite


@pytest.fixture
def pipe():
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    yield Executor(conn, rewrite_sql=rewrite)
    conn.close()


def run(pipe, body):
    """One pipeline's results on the stream, as the HTTP layer builds them."""
    return {"results": [pipe.handle(r) for r in body["requests"]]}


def execute(pipe, sql, args=None, **stmt):
    body = {
        "requests": [
            {"type": "execute", "stmt": dict(sql=sql, **({"args": args} if args else {}), **stmt)}
        ]
    }
    out = run(pipe, json.loads(json.dumps(body)))
    return json.loads(dumps(out))["results"][0]


def rows(result):
    return [
        [c.get("value", c.get("base64")) for c in r] for r in result["response"]["result"]["rows"]
    ]


def step(sql, args=(), condition=None, want_rows=True):
    return {
        "condition": condition,
        "stmt": {
            "sql": sql,
            "sql_id": None,
            "args": list(args),
            "named_args": [],
            "want_rows": want_rows,
            "replication_index": None,
        },
    }


def batch(pipe, steps):
    out = run(
        pipe,
        {"requests": [{"type": "batch", "batch": {"steps": steps, "replication_index": None}}]},
    )
    return json.loads(dumps(out))


NOT_AUTOCOMMIT = {"type": "not", "cond": {"type": "is_autocommit"}}


def test_harness_shape_integers_as_strings(pipe):
    execute(pipe, "CREATE TABLE t(x INTEGER, y REAL, z TEXT, b BLOB)")
    execute(pipe, "INSERT INTO t VALUES (1, 1.5, 'a', x'000102'), (-42, NULL, '', x'')")
    res = execute(pipe, "SELECT x, y, z, b FROM t ORDER BY rowid")
    assert res["type"] == "ok" and res["response"]["type"] == "execute"
    r = res["response"]["result"]
    assert [c["name"] for c in r["cols"]] == ["x", "y", "z", "b"]
    assert r["rows"][0] == [
        {"type": "integer", "value": "1"},
        {"type": "float", "value": 1.5},
        {"type": "text", "value": "a"},
        {"type": "blob", "base64": "AAEC"},
    ]
    assert r["rows"][1][0] == {"type": "integer", "value": "-42"} and r["rows"][1][1] == {
        "type": "null"
    }
    for key in ("cols", "rows", "affected_row_count", "last_insert_rowid"):
        assert key in r
    assert execute(pipe, "SELECT SUM(x) FROM t")["response"]["result"]["rows"] == [
        [{"type": "integer", "value": "-41"}]
    ]


def test_args_and_blob_padding(pipe):
    execute(pipe, "CREATE TABLE t(a, b)")
    big = str(2**63 - 1)
    res = execute(
        pipe,
        "INSERT INTO t VALUES (?, ?)",
        [{"type": "integer", "value": big}, {"type": "blob", "base64": "AAECAw"}],
    )
    assert res["response"]["result"]["affected_row_count"] == 1
    assert res["response"]["result"]["last_insert_rowid"] == "1"
    execute(
        pipe,
        "INSERT INTO t VALUES (?, ?)",
        [{"type": "float", "value": 2.0}, {"type": "blob", "base64": "AAECAw=="}],
    )
    assert rows(execute(pipe, "SELECT a, hex(b), typeof(a) FROM t")) == [
        [big, "00010203", "integer"],
        [2.0, "00010203", "real"],
    ]


def test_want_rows_false_still_runs(pipe):
    execute(pipe, "CREATE TABLE t(x)")
    res = execute(
        pipe, "INSERT INTO t SELECT value FROM generate_series(1, 5) RETURNING x", want_rows=False
    )
    assert res["response"]["result"]["rows"] == []
    assert rows(execute(pipe, "SELECT count(*) FROM t")) == [["5"]]


def test_errors_have_string_codes_and_sqlite_wording(pipe):
    res = execute(
        pipe,
        "SELECT pull_gen, change_id FROM turso_sync_last_change_id WHERE client_id = ?",
        [{"type": "text", "value": "c"}],
    )
    assert res["type"] == "error"
    assert "no such table" in res["error"]["message"] and isinstance(res["error"]["code"], str)
    res = batch(pipe, [step("SELECT * FROM nope")])["results"][0]
    assert res["type"] == "ok"
    err = res["response"]["result"]["step_errors"][0]
    assert err["message"] == "no such table: nope" and isinstance(err["code"], str)
    assert res["response"]["result"]["step_results"] == [None]
    assert (
        execute(pipe, "SELECT ?", [{"type": "integer", "value": 1.5}])["error"]["code"]
        == "ARGS_INVALID"
    )
    assert execute(pipe, "SELECT 1; SELECT 2")["error"]["code"] == "SQL_MANY_STATEMENTS"
    assert execute(pipe, "  ;")["error"]["code"] == "SQL_NO_STATEMENT"
    with pytest.raises(PipelineRequestError, match='needs "sql" or "sql_id"'):
        run(pipe, {"requests": [{"type": "execute", "stmt": {}}]})


def test_push_batch_shape_commits(pipe):
    steps = [
        step("BEGIN IMMEDIATE"),
        step(
            "CREATE TABLE IF NOT EXISTS turso_sync_last_change_id (client_id TEXT PRIMARY KEY, pull_gen INTEGER, change_id INTEGER)",
            condition=NOT_AUTOCOMMIT,
        ),
        step(
            "INSERT INTO turso_sync_last_change_id(client_id, pull_gen, change_id) VALUES (?, ?, ?) ON CONFLICT(client_id) DO UPDATE SET pull_gen=excluded.pull_gen, change_id=excluded.change_id",
            [
                {"type": "text", "value": "c"},
                {"type": "integer", "value": "1"},
                {"type": "integer", "value": "7"},
            ],
            condition=NOT_AUTOCOMMIT,
            want_rows=False,
        ),
        step("COMMIT", condition=NOT_AUTOCOMMIT),
    ]
    out = batch(pipe, steps)
    res = out["results"][0]["response"]["result"]
    assert res["step_errors"] == [None] * 4 and all(r is not None for r in res["step_results"])
    got = execute(
        pipe,
        "SELECT pull_gen, change_id FROM turso_sync_last_change_id WHERE client_id = ?",
        [{"type": "text", "value": "c"}],
    )
    assert rows(got) == [["1", "7"]]


def test_conditions(pipe):
    out = batch(
        pipe,
        [
            step("SELECT 1"),  # 0 ok
            step("SELECT * FROM missing"),  # 1 error
            step("SELECT 2", condition={"type": "ok", "step": 0}),  # 2 runs
            step("SELECT 3", condition={"type": "ok", "step": 1}),  # 3 skipped
            step("SELECT 4", condition={"type": "error", "step": 1}),  # 4 runs
            step(
                "SELECT 5",
                condition={
                    "type": "and",
                    "conds": [{"type": "ok", "step": 0}, {"type": "error", "step": 0}],
                },
            ),  # 5 skipped
            step(
                "SELECT 6",
                condition={
                    "type": "or",
                    "conds": [{"type": "ok", "step": 3}, {"type": "ok", "step": 4}],
                },
            ),  # 6 runs
            step("SELECT 7", condition={"type": "is_autocommit"}),  # 7 runs
            step("SELECT 8", condition=NOT_AUTOCOMMIT),  # 8 skipped
            step("SELECT 9", condition={"type": "ok", "step": 3}),  # 9 skipped step has no result
        ],
    )["results"][0]["response"]["result"]
    ran = [r is not None for r in out["step_results"]]
    assert ran == [True, False, True, False, True, False, True, True, False, False]
    assert [e is not None for e in out["step_errors"]] == [False, True] + [False] * 8
    # A condition on a step that has not run is a protocol error, as in sqld.
    with pytest.raises(PipelineRequestError, match="step 1, which has not run yet"):
        batch(pipe, [step("SELECT 1", condition={"type": "ok", "step": 1})])


def test_failed_step_inside_transaction_keeps_it_open_on_the_stream(pipe):
    execute(pipe, "CREATE TABLE t(x PRIMARY KEY)")
    out = batch(
        pipe,
        [
            step("BEGIN"),
            step("INSERT INTO t VALUES (1)", condition=NOT_AUTOCOMMIT),
            step("INSERT INTO t VALUES (1)", condition=NOT_AUTOCOMMIT),  # constraint error
        ],
    )["results"][0]["response"]["result"]
    assert out["step_errors"][2]["code"].startswith("SQLITE_CONSTRAINT")
    # no COMMIT was sent: the transaction lives on with the stream (as in sqld)
    assert pipe.conn.in_transaction
    assert rows(execute(pipe, "SELECT count(*) FROM t")) == [["1"]]
    execute(pipe, "ROLLBACK")
    assert rows(execute(pipe, "SELECT count(*) FROM t")) == [["0"]]


def test_malformed_requests(pipe):
    with pytest.raises(PipelineRequestError, match="unsupported pipeline request type: 'nope'"):
        run(pipe, {"requests": [{"type": "nope"}]})
    with pytest.raises(PipelineRequestError, match="must be an object"):
        run(pipe, {"requests": [[]]})
    with pytest.raises(PipelineRequestError, match="not stored"):
        run(pipe, {"requests": [{"type": "execute", "stmt": {"sql_id": 7}}]})
    out = run(pipe, {"requests": [{"type": "get_autocommit"}, {"type": "close"}]})
    assert out["results"][0]["response"]["is_autocommit"] is True
    assert pipe.closed


def test_store_sql_sequence_describe(pipe):
    out = run(
        pipe,
        {
            "requests": [
                {"type": "sequence", "sql": "CREATE TABLE t(a INTEGER, b TEXT); -- x;\n"
                 "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;"
                 "INSERT INTO t VALUES (1, 'a;b')"},
                {"type": "store_sql", "sql_id": 1, "sql": "SELECT b FROM t WHERE a = ?"},
                {"type": "execute", "stmt": {"sql_id": 1, "args": [{"type": "integer", "value": "1"}]}},
                {"type": "close_sql", "sql_id": 1},
                {"type": "sequence", "sql": "INSERT INTO t VALUES (2, 'x'); SELECT * FROM nope"},
            ]
        },
    )
    kinds = [r["type"] for r in out["results"]]
    assert kinds == ["ok", "ok", "ok", "ok", "error"]
    assert out["results"][2]["response"]["result"]["rows"] == [[{"type": "text", "value": "a;b"}]]
    assert "no such table: nope" in out["results"][4]["error"]["message"]
    assert rows(execute(pipe, "SELECT count(*) FROM t")) == [["2"]]  # steps before the error stay
    with pytest.raises(PipelineRequestError, match="not stored"):
        run(pipe, {"requests": [{"type": "execute", "stmt": {"sql_id": 1}}]})
    assert split_sql("SELECT ';'; ; SELECT 2") == ["SELECT ';';", " SELECT 2"]


def test_infinities_are_valid_json():
    text = dumps({"v": [encode_value(float("inf")), encode_value(-float("inf")), "Infinity"]})
    assert b"Infinity\"" in text and b":Infinity" not in text  # the string stays a string
    assert json.loads(text)["v"][0]["value"] == float("inf")
    assert b"1e999" in text and b"-1e999" in text


def test_named_args(pipe):
    res = execute(
        pipe,
        "SELECT :a + $b",
        named_args=[
            {"name": ":a", "value": {"type": "integer", "value": "2"}},
            {"name": "$b", "value": {"type": "integer", "value": "3"}},
        ],
    )
    assert rows(res) == [["5"]]


values = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.binary(),
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_value_roundtrip(v):
    enc = json.loads(json.dumps(encode_value(v)))
    if isinstance(v, int):
        assert isinstance(enc["value"], str)
    assert decode_value(enc) == v
    if isinstance(v, bytes):
        enc["base64"] = enc["base64"].rstrip("=")
        assert decode_value(enc) == v


@settings(max_examples=100, deadline=None)
@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(-7, 7))
def test_generate_series_matches_definition(start, stop, stp):
    conn = sqlite3.connect(":memory:")
    got = [
        r[0]
        for r in conn.execute(
            rewrite("SELECT value FROM generate_series(?, ?, ?)"), (start, stop, stp)
        )
    ]
    s = abs(stp) or 1
    want = list(range(start, stop + 1, s))
    assert got == (want[::-1] if stp < 0 else want)


def test_generate_series_forms():
    conn = sqlite3.connect(":memory:")
    assert conn.execute(
        rewrite(
            "select count(*), sum(length(b)) from (select randomblob(1024) b from generate_series(1, 2000))"
        )
    ).fetchall() == [(2000, 2048000)]
    assert conn.execute(
        rewrite(
            "select s.value from generate_series(1,3) AS s join generate_series(2, 9) t on t.value = s.value"
        )
    ).fetchall() == [(2,), (3,)]
    assert (
        rewrite("select 'generate_series(1,2)' -- generate_series(1)\n")
        == "select 'generate_series(1,2)' -- generate_series(1)\n"
    )
    assert rewrite("select my_generate_series(1)") == "select my_generate_series(1)"
