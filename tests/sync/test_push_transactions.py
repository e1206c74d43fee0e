"""Local transaction boundaries: every write transaction of every connection of every
process marks its first log row (capture.py, _native/txn.c), and push_operations_threshold
cuts batches only at boundaries no changed key crosses (sync/batches.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import turso_dbapi
from support.faultproxy import FaultProxy
from turso_dbapi.sync import capture, internal

ROOT = Path(__file__).resolve().parents[2]
TOP = 10 ** 9  # a synced row this high puts the tests' rows below the table's frontier:
# every change is logged with its transaction's mark (rows above it are the unpushed tail,
# sent without marks: sync/tail.py, tested in test_tail.py)


def _table(server):
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    server.db_sql(f"INSERT INTO t VALUES ({TOP}, 'synced')")


def _batches(proxy):
    """[[(sql, args)...]] of every push batch the proxy saw, row statements only."""
    out = []
    for r in proxy.records:
        if b"BEGIN IMMEDIATE" not in r.request_body:
            continue
        steps = json.loads(r.request_body)["requests"][0]["batch"]["steps"]
        out.append([s["stmt"] for s in steps if s["stmt"]["sql"].startswith(('INSERT INTO "', 'DELETE FROM "'))])
    return out


def _marks(proxy):
    marks = []
    for r in proxy.records:
        if b"BEGIN IMMEDIATE" in r.request_body:
            steps = json.loads(r.request_body)["requests"][0]["batch"]["steps"]
            marks += [int(s["stmt"]["args"][2]["value"]) for s in steps
                      if s["stmt"]["sql"].startswith("INSERT INTO turso_sync_last_change_id")]
    return marks


def _ids(batch):
    return sorted(int(s["args"][0]["value"]) for s in batch)


def test_one_local_transaction_over_the_threshold_is_one_server_transaction(turso_server, tmp_path):
    _table(turso_server)
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), push_operations_threshold=4)
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(10)])
        conn.commit()  # one transaction of 10 rows: no cut inside it, whatever the threshold
        conn.execute("INSERT INTO t VALUES (10, 10)")
        conn.commit()
        proxy.clear()
        result = conn.push()
        batches = _batches(proxy)
        marks = _marks(proxy)
    assert result.batches == 2 and result.rows == 11
    assert [_ids(b) for b in batches] == [list(range(10)), [10]]
    assert marks == [10, 11]
    assert turso_server.db_sql(f"SELECT COUNT(*) FROM t WHERE id < {TOP}") == [["11"]]


def test_a_cut_never_separates_a_key_changed_on_both_sides(turso_server, tmp_path):
    _table(turso_server)
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), push_operations_threshold=1)
        conn.execute("INSERT INTO t VALUES (1, 'a')")  # T1: keys 1, 2 (log ids 1, 2)
        conn.execute("INSERT INTO t VALUES (2, 'a')")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (3, 'b')")  # T2: key 3 (log id 3)
        conn.commit()
        conn.execute("UPDATE t SET v = 'c' WHERE id = 1")  # T3: key 1 again (log id 4)
        conn.commit()
        conn.execute("INSERT INTO t VALUES (4, 'd')")  # T4: key 4 (log id 5)
        conn.commit()
        proxy.clear()
        conn.push()
        batches = _batches(proxy)
        marks = _marks(proxy)
    # key 1 spans T1..T3: neither the cut before T2 nor the one before T3 is consistent
    # (key 1's current row carries T3's effect); the cut before T4 is.
    assert [_ids(b) for b in batches] == [[1, 2, 3], [4]]
    assert marks == [4, 5]
    assert turso_server.db_sql(f"SELECT id, v FROM t WHERE id < {TOP} ORDER BY id") == [
        ["1", "c"], ["2", "a"], ["3", "b"], ["4", "d"]]


WRITER = """
import sys, turso_dbapi
conn = turso_dbapi.connect(sys.argv[1])
for i in range(3):
    conn.execute("INSERT INTO t VALUES (?, 'child')", (1000 + 2 * i,))
    conn.execute("INSERT INTO t VALUES (?, 'child')", (1001 + 2 * i,))
    conn.commit()
conn.close()
"""


def test_every_connection_and_process_marks_its_transactions(turso_server, tmp_path):
    _table(turso_server)
    path = str(tmp_path / "r.db")
    a = turso_dbapi.connect(turso_server.url, local_path=path)
    b = turso_dbapi.connect(path)
    for i in range(3):  # interleaved two-row transactions of two connections
        for conn, base in ((a, 0), (b, 100)):
            conn.execute("INSERT INTO t VALUES (?, 'x')", (base + 2 * i,))
            conn.execute("INSERT INTO t VALUES (?, 'x')", (base + 2 * i + 1,))
            conn.commit()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    out = subprocess.run([sys.executable, "-c", WRITER, path], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with a:
        a.execute("UPDATE t SET v = 'y' WHERE id IN (0, 101)")
    rows = a.execute(f"SELECT id, k, x FROM {capture.LOG} ORDER BY id").fetchall()
    keys = [k for _, k, _ in rows]
    starts = [(i, x) for i, _, x in rows if x is not None]
    # one mark per transaction, on its first row: 6 here, 3 in the child, 1 update
    assert [i for i, _ in starts] == list(range(1, 20, 2))
    assert len({x for _, x in starts}) == len(starts)  # ids differ (adjacent ones must)
    assert keys[12:18] == [1000, 1001, 1002, 1003, 1004, 1005]
    assert sorted(keys[18:]) == [0, 101]
    a.close()
    b.close()


def test_savepoints_and_rollbacks_keep_one_mark_per_committed_transaction(turso_server, tmp_path):
    _table(turso_server)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("INSERT INTO t VALUES (1, 'rolled back')")
    conn.rollback()  # its mark is gone with it; the next transaction gets its own
    conn.execute("INSERT INTO t VALUES (2, 'a')")
    conn.execute("SAVEPOINT s")
    conn.execute("INSERT INTO t VALUES (3, 'a')")
    conn.execute("ROLLBACK TO s")
    conn.execute("INSERT INTO t VALUES (4, 'a')")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (5, 'b')")
    conn.commit()
    rows = conn.execute(f"SELECT k, x IS NOT NULL FROM {capture.LOG} ORDER BY id").fetchall()
    assert rows == [(2, 1), (4, 0), (5, 1)]
    conn.close()


def _make_v1(path: str, conn_id: int) -> None:
    """Turn the replica's machinery into the previous version's: a NOT NULL log without
    transaction ids, triggers that do not read sqlite_tdb_txn, no version row."""
    ic = internal.connect(path, conn_id)
    ic.execute("BEGIN IMMEDIATE")
    with capture.Writable(ic):
        for (name,) in ic.execute("SELECT name FROM sqlite_schema WHERE type = 'trigger'").fetchall():
            ic.execute(f'DROP TRIGGER "{name}"')
        ic.execute(f"UPDATE {capture.LOG} SET x = NULL")
        version = ic.execute("PRAGMA schema_version").fetchone()[0]
        ic.execute("UPDATE sqlite_schema SET sql = ? WHERE name = ?",
                   (f"CREATE TABLE {capture.LOG}(id INTEGER PRIMARY KEY, t INTEGER NOT NULL, k)", capture.LOG))
        ic.execute(f"PRAGMA schema_version = {version + 1}")
        for i, name in ic.execute(f"SELECT id, name FROM {capture.TABLES}").fetchall():
            for op, row in (("INSERT", "NEW"), ("DELETE", "OLD"), ("UPDATE", "NEW")):
                ic.execute(f'CREATE TRIGGER sqlite_tdb_{i}_{op[0].lower()} AFTER {op} ON "{name}" BEGIN '
                           f"INSERT INTO {capture.LOG}(t, k) VALUES ({i}, {row}.id); END")
    ic.execute(f"DELETE FROM {capture.STATE} WHERE key = 'version'")
    ic.execute("COMMIT")
    ic.close()


def test_a_replica_with_the_previous_capture_is_upgraded_and_keeps_its_log(turso_server, tmp_path):
    _table(turso_server)
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    conn.execute("INSERT INTO t VALUES (1, 'before the upgrade')")
    conn.commit()
    _make_v1(path, conn._replica.conn_id)
    conn.close()
    conn = turso_dbapi.connect(path, push_operations_threshold=1)
    assert "x" in [c[1] for c in conn.execute(f"PRAGMA table_info({capture.LOG})")]
    conn.execute("INSERT INTO t VALUES (2, 'after')")
    conn.commit()
    assert conn.execute(f"SELECT k, x IS NOT NULL FROM {capture.LOG} ORDER BY id").fetchall() == [(1, 0), (2, 1)]
    result = conn.push()
    assert result.rows == 2
    assert turso_server.db_sql(f"SELECT id, v FROM t WHERE id < {TOP} ORDER BY id") == [["1", "before the upgrade"], ["2", "after"]]
    conn.close()


def test_a_wal_replica_marks_its_transactions_and_push_cuts_between_them(turso_server, tmp_path):
    _table(turso_server)
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), push_operations_threshold=2)
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        for rows in ([1, 2, 3], [4], [5, 6]):  # the WAL write lock starts each transaction
            conn.executemany("INSERT INTO t VALUES (?, 'w')", [(i,) for i in rows])
            conn.commit()
        assert [x is not None for (x,) in conn.execute(f"SELECT x FROM {capture.LOG} ORDER BY id")] == [
            True, False, False, True, True, False]
        proxy.clear()
        conn.push()
        batches = _batches(proxy)
    assert [_ids(b) for b in batches] == [[1, 2, 3], [4, 5, 6]]
    assert turso_server.db_sql(f"SELECT COUNT(*) FROM t WHERE id < {TOP}") == [["6"]]
