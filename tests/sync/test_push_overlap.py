"""push() collects the changes while the high-water read is in flight, after the mark the
replica last pushed (push state hint); the batch is always built on the mark the server
returned: a hint that is wrong either way makes it collect again, so nothing is missed and
nothing already pushed is sent again. Counted on the wire."""

from __future__ import annotations

import json

import pytest

import turso_dbapi
from support.faultproxy import FaultProxy
from turso_dbapi.storage.files import PUSH_STATE


def batch_rows(proxy):
    """Row statements of the push batches the proxy saw (upserts of table t)."""
    out = []
    for r in proxy.records:
        if r.path == "/v2/pipeline":
            for step in json.loads(r.request_body)["requests"][0]["batch"]["steps"]:
                if step["stmt"]["sql"].startswith('INSERT INTO "t"'):
                    out.append(int(step["stmt"]["args"][0]["value"]))
    return out


def set_hint(path, change_id):
    with open(path + PUSH_STATE, encoding="utf-8") as f:
        state = json.load(f)
    state["last_pushed_change_id_hint"] = change_id
    with open(path + PUSH_STATE, "w", encoding="utf-8") as f:
        json.dump(state, f)


@pytest.mark.parametrize("hint", [0, 10**9])
def test_a_wrong_hint_is_corrected_by_the_mark_read(turso_server, tmp_path, hint):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    path = str(tmp_path / "r.db")
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=path)
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(1, 51)])
        conn.commit()
        conn.push()
        assert sorted(batch_rows(proxy)) == list(range(1, 51))
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(51, 61)])
        conn.commit()
        set_hint(path, hint)  # 0: collects too much; past the log: collects nothing
        proxy.clear()
        conn.push()
        assert sorted(batch_rows(proxy)) == list(range(51, 61))  # exactly the unpushed rows
        assert len([r for r in proxy.records if r.path == "/v2/pipeline"]) == 2  # read + batch
    assert int(turso_server.db_sql("SELECT count(*) FROM t")[0][0]) == 60


def test_the_right_hint_is_used_and_the_push_is_the_same(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    path = str(tmp_path / "r.db")
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=path)
        for lo in (1, 101):
            conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(lo, lo + 100)])
            conn.commit()
            proxy.clear()
            conn.push()
            assert sorted(batch_rows(proxy)) == list(range(lo, lo + 100))
    assert int(turso_server.db_sql("SELECT count(*) FROM t")[0][0]) == 200
