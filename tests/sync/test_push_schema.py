"""Schema changes pushed without ever destroying rows other clients wrote (issue 10
follow-up): ALTER TABLE is sent as ALTER statements, never as drop-and-recreate, and a
pushed schema change is never sent again."""

from __future__ import annotations

import json

import pytest

import turso_dbapi
from support.faultproxy import FaultProxy


def _ddl_sent(proxy):
    """SQL texts of ALTER/DROP/CREATE statements in the push batches the proxy saw."""
    out = []
    for r in proxy.records:
        if r.path != "/v2/pipeline" or b"BEGIN IMMEDIATE" not in r.request_body:
            continue
        for s in json.loads(r.request_body)["requests"][0]["batch"]["steps"]:
            sql = s["stmt"]["sql"]
            if sql.split()[0] in ("ALTER", "DROP", "CREATE") and "turso_sync_last_change_id" not in sql:
                out.append(sql)
    return out


def test_alter_table_keeps_rows_other_clients_pushed_and_is_sent_once(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, w TEXT)")
    turso_server.db_sql("INSERT INTO t VALUES (1, 'one', 'w1')")
    with FaultProxy(turso_server.url) as proxy:
        a = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "a.db"))
        b = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "b.db"))
        a.execute("ALTER TABLE t RENAME COLUMN v TO label")
        a.execute("ALTER TABLE t DROP COLUMN w")
        a.execute("ALTER TABLE t ADD COLUMN extra INTEGER DEFAULT 5")
        a.execute("INSERT INTO t(id, label) VALUES (10, 'ten')")
        a.commit()
        # meanwhile another client adds rows on the server
        b.execute("INSERT INTO t VALUES (2, 'two', 'w2')")
        b.commit()
        b.push()
        proxy.clear()
        a.push()
        first = _ddl_sent(proxy)
        assert not any(s.startswith("DROP TABLE") for s in first), first
        assert 'ALTER TABLE "t" RENAME COLUMN "v" TO "label"' in first
        assert 'ALTER TABLE "t" DROP COLUMN "w"' in first
        # b's rows survived the schema change on the server
        assert turso_server.db_sql("SELECT id, label, extra FROM t ORDER BY id") == [
            ["1", "one", "5"], ["2", "two", "5"], ["10", "ten", "5"]]
        # a second push (before any pull) sends no schema change again
        a.execute("INSERT INTO t(id, label) VALUES (11, 'eleven')")
        a.commit()
        proxy.clear()
        a.push()
        assert _ddl_sent(proxy) == []
    assert turso_server.db_sql("SELECT COUNT(*) FROM t") == [["4"]]


def test_a_rebuilt_table_is_refused_not_dropped_on_the_server(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    turso_server.db_sql("INSERT INTO t VALUES (1, 'one')")
    a = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "a.db"))
    a.executescript("CREATE TABLE t2(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, z); "
                    "INSERT INTO t2(id, v) SELECT id, 0 FROM t; DROP TABLE t; ALTER TABLE t2 RENAME TO t;")
    with pytest.raises(turso_dbapi.NotSupportedError, match="table 't'.*drop-and-recreate"):
        a.push()
    assert turso_server.db_sql("SELECT id, v FROM t") == [["1", "one"]]

