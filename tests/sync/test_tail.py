"""The unpushed tail (sync/tail.py): rows inserted above a table's frontier are pending
without a log row; push folds them into the log at its start; pulls replay them.

Every test writes through real replicas of the reference server (and pyturso, the peer);
the network phase of a push is held by a hook on the pipeline's call (another connection
writes meanwhile, as another thread or process would)."""

from __future__ import annotations

import json

import pytest

import turso_dbapi
from support.faultproxy import FaultProxy
from support import tail_cases
from turso_dbapi.sync import capture, changes, internal, push as sync_push, tail

import turso.sync as turso_sync  # noqa: E402 - a test extra (pyturso); an ImportError names it

N = 2000  # rows of a bulk insert


_rows = tail_cases.server_rows
_local = tail_cases.local_rows


def _logged(conn):
    return conn.execute(f"SELECT COUNT(*) FROM {capture.LOG}").fetchone()[0]


def _frontier(conn, table="t"):
    i = conn.execute(f"SELECT id FROM {capture.TABLES} WHERE name = ? ORDER BY id DESC", (table,)).fetchone()[0]
    return capture.frontier(conn, i)


def _pushed_rows(proxy):
    """Row statements of every push batch the proxy saw: [(sql, first argument)]."""
    out = []
    for r in proxy.records:
        if b"BEGIN IMMEDIATE" in r.request_body:
            for s in json.loads(r.request_body)["requests"][0]["batch"]["steps"]:
                st = s["stmt"]
                if st["sql"].startswith(('INSERT INTO "', 'DELETE FROM "')):
                    out.append((st["sql"].split()[0], st["args"][0]["value"]))
    return out


@pytest.fixture
def replica(turso_server, tmp_path):
    yield from tail_cases.seeded_replica(turso_server, str(tmp_path / "r.db"))


def test_a_bulk_insert_logs_nothing_and_push_sends_it_all(turso_server, replica, tmp_path):
    assert _frontier(replica) == 10  # the synced rows' largest rowid
    replica.executemany("INSERT INTO t(v) VALUES (?)", [(f"n{i}",) for i in range(N)])
    replica.execute("UPDATE t SET v = 'changed' WHERE id = 3")  # a synced row: logged
    replica.commit()
    assert _logged(replica) == 1 and tail.count(replica) == N
    assert replica.stats().pending_changes == N + 1
    result = replica.push()
    assert result.rows == N + 1
    assert _rows(turso_server) == _local(replica)
    assert _frontier(replica) == 10 + N and tail.count(replica) == 0
    assert replica.stats().pending_changes == 0
    peer = turso_sync.connect(str(tmp_path / "peer.db"), turso_server.url)
    try:
        assert [(str(i), v) for i, v in peer.execute("SELECT id, v FROM t ORDER BY id").fetchall()] == \
            _local(replica)
    finally:
        peer.close()


def test_tail_rows_changed_while_a_push_is_on_the_network_go_in_the_next_push(
        turso_server, replica, tmp_path, monkeypatch):
    replica.executemany("INSERT INTO t VALUES (?, 'old')", [(100 + i,) for i in range(10)])
    replica.commit()
    other = turso_dbapi.connect(str(tmp_path / "r.db"))
    real = sync_push.Pipeline.call
    done = []

    def call(self, steps, what):  # the first batch: the others write while it is in flight
        if not done and any("BEGIN IMMEDIATE" in json.dumps(s) for s in steps[:1]):
            done.append(1)
            other.execute("UPDATE t SET v = 'during' WHERE id = 100")
            other.execute("DELETE FROM t WHERE id = 101")
            other.execute("INSERT INTO t VALUES (200, 'during')")
            other.commit()
        return real(self, steps, what)

    monkeypatch.setattr(sync_push.Pipeline, "call", call)
    replica.push()
    assert done
    server = dict(_rows(turso_server))
    assert server["100"] == "old" and "101" in server and "200" not in server  # as folded
    assert replica.stats().pending_changes == 3
    monkeypatch.setattr(sync_push.Pipeline, "call", real)
    replica.push()
    assert _rows(turso_server) == _local(replica)
    assert dict(_rows(turso_server))["100"] == "during"
    other.close()


@pytest.mark.parametrize("fault", ["status", "drop_reply"])
def test_a_failed_push_then_a_retry_sends_every_tail_row_once(turso_server, tmp_path, fault):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("CREATE TABLE applied(n INTEGER)")
    turso_server.db_sql("INSERT INTO applied VALUES (0)")
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"))
        conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(1, 101)])
        conn.commit()
        # counts every row statement the server applies to t (not on the replica: no log there)
        for ev in ("INSERT", "UPDATE"):
            turso_server.db_sql(f"CREATE TRIGGER c_{ev} AFTER {ev} ON t WHEN NOT EXISTS (SELECT 1 FROM "
                                "sqlite_schema WHERE name = 'sqlite_tdb_log') BEGIN UPDATE applied SET n = n + 1; END")
        # every attempt's batch fails (a 500, or the reply lost after the commit)
        proxy.inject(fault, times=None, when=lambda r: b"BEGIN IMMEDIATE" in r.body)
        with pytest.raises(turso_dbapi.Error):
            conn.push()
        proxy.clear_faults()
        assert conn.stats().pending_changes == 100 and tail.count(conn) == 0  # folded: in the log
        conn.push()
        assert turso_server.db_sql("SELECT n FROM applied") == [["100"]]
        assert turso_server.db_sql("SELECT COUNT(*) FROM t") == [["100"]]
        conn.close()


def test_a_pull_with_a_pending_tail_replays_it_and_the_push_after_sends_it(turso_server, replica, tmp_path):
    replica.executemany("INSERT INTO t VALUES (?, 'local')", [(i,) for i in range(11, 21)])
    replica.execute("UPDATE t SET v = 'local' WHERE id = 2")
    replica.commit()
    # another client inserts rows with the same rowids (and more), and changes a synced row
    turso_server.db_sql("INSERT INTO t SELECT value, 'server' FROM generate_series(15, 30)")
    turso_server.db_sql("UPDATE t SET v = 'server' WHERE id = 5")
    assert replica.pull() is True
    got = dict(_local(replica))
    assert all(got[str(i)] == "local" for i in range(11, 21))  # last writer (the replay) wins
    assert all(got[str(i)] == "server" for i in range(21, 31)) and got["5"] == "server"
    assert replica.stats().pending_changes == 11  # 10 inserts, 1 update: still pending
    replica.push()
    assert _rows(turso_server) == _local(replica)
    assert replica.stats().pending_changes == 0


def test_tail_rows_replayed_by_a_pull_are_logged_and_the_tail_starts_above_them(turso_server, replica):
    replica.executemany("INSERT INTO t VALUES (?, 'local')", [(i,) for i in range(100, 110)])
    replica.commit()
    turso_server.db_sql("INSERT INTO t VALUES (50, 'server')")
    assert replica.pull() is True
    assert _frontier(replica) == 109 and tail.count(replica) == 0 and _logged(replica) == 10
    turso_server.db_sql("INSERT INTO t VALUES (51, 'server')")
    assert replica.pull() is True  # a second pull replays them again: none lost
    assert replica.stats().pending_changes == 10
    replica.push()
    assert _rows(turso_server) == _local(replica)


def test_rowid_reuse_after_deleting_the_largest_row(turso_server, replica):
    replica.execute("DELETE FROM t WHERE id = 10")  # the frontier row: logged
    replica.execute("INSERT INTO t(v) VALUES ('reused')")  # rowid 10 again, <= F: logged
    replica.commit()
    assert replica.execute("SELECT id FROM t WHERE v = 'reused'").fetchone() == (10,)
    replica.execute("INSERT INTO t(v) VALUES ('tail')")  # 11: the tail
    replica.execute("DELETE FROM t WHERE id = 11")  # gone before any push: nothing to send
    replica.execute("INSERT INTO t(v) VALUES ('tail again')")  # 11 again
    replica.commit()
    replica.push()
    assert _rows(turso_server) == _local(replica)
    assert dict(_rows(turso_server))["10"] == "reused" and dict(_rows(turso_server))["11"] == "tail again"


def test_insert_or_replace_and_updates_moving_a_rowid_across_the_frontier(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v, u UNIQUE)")
    turso_server.db_sql("INSERT INTO t SELECT value, 's', 'u' || value FROM generate_series(1, 10)")
    turso_server.db_sql("CREATE TABLE r(v, u UNIQUE)")  # no primary key: the rowid is the key
    turso_server.db_sql("INSERT INTO r SELECT 's', 'u' || value FROM generate_series(1, 10)")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("INSERT OR REPLACE INTO t VALUES (3, 'replaced', 'u3')")  # a synced row
    conn.execute("INSERT OR REPLACE INTO t VALUES (50, 'replaces 4', 'u4')")  # deletes 4 (logged), tail 50
    conn.execute("UPDATE t SET id = 60 WHERE id = 5")  # synced row moved into the tail: both keys logged
    conn.execute("INSERT INTO t VALUES (70, 'tail', 'u70')")
    conn.execute("DELETE FROM t WHERE id = 7")
    conn.execute("UPDATE t SET id = 7 WHERE id = 70")  # a tail row moved below the frontier: logged
    conn.commit()
    conn.execute("DELETE FROM t WHERE id = 6")
    conn.execute("UPDATE t SET id = 6 WHERE id = 60")  # back below the frontier
    conn.execute("INSERT OR REPLACE INTO r(rowid, v, u) VALUES (40, 'replaces rowid 2', 'u2')")
    conn.execute("UPDATE r SET rowid = 41 WHERE rowid = 7")
    conn.commit()
    conn.push()
    assert turso_server.db_sql("SELECT id, v, u FROM t ORDER BY id") == \
        [[str(a), b, c] for a, b, c in conn.execute("SELECT id, v, u FROM t ORDER BY id")]
    assert turso_server.db_sql("SELECT rowid, v, u FROM r ORDER BY rowid") == \
        [[str(a), b, c] for a, b, c in conn.execute("SELECT rowid, v, u FROM r ORDER BY rowid")]
    conn.close()


def test_a_wal_replica_keeps_a_tail_and_pushes_it(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("INSERT INTO t VALUES (1, 's')")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    conn.executemany("INSERT INTO t VALUES (?, 'w')", [(i,) for i in range(2, 502)])
    conn.commit()
    assert _logged(conn) == 0 and conn.stats().pending_changes == 500
    turso_server.db_sql("INSERT INTO t VALUES (1000, 'server')")
    assert conn.pull() is True
    assert conn.stats().pending_changes == 500
    conn.push()
    assert _rows(turso_server) == _local(conn)
    conn.close()


def test_a_table_created_locally_and_without_rowid_tables(turso_server, replica):
    replica.execute("CREATE TABLE n(id INTEGER PRIMARY KEY, v)")
    replica.execute("CREATE TABLE w(a TEXT PRIMARY KEY, v) WITHOUT ROWID")
    replica.execute("CREATE TABLE p(a TEXT PRIMARY KEY, v)")  # a primary key and a rowid
    replica.commit()
    replica.push()  # their triggers: tails for n and p, none for w
    replica.executemany("INSERT INTO n VALUES (?, 'n')", [(i,) for i in range(1, 6)])
    replica.executemany("INSERT INTO w VALUES (?, 'w')", [(str(i),) for i in range(5)])
    replica.executemany("INSERT INTO p VALUES (?, 'p')", [(str(i),) for i in range(5)])
    replica.commit()
    w = replica.execute(f"SELECT id FROM {capture.TABLES} WHERE name = 'w'").fetchone()[0]
    assert replica.execute(f"SELECT t, COUNT(*) FROM {capture.LOG} GROUP BY t").fetchall() == [(w, 5)]
    assert tail.count(replica) == 10
    replica.execute("UPDATE p SET a = 'renamed' WHERE a = '1'")  # a tail row's key changed: sent as it is
    replica.commit()
    replica.push()
    assert _rows(turso_server, "n") == _local(replica, "n")
    for t in ("w", "p"):
        assert turso_server.db_sql(f"SELECT a, v FROM {t} ORDER BY a") == \
            [list(r) for r in replica.execute(f"SELECT a, v FROM {t} ORDER BY a")]


def _server_transactions(proxy):
    return [b for b in proxy.records if b"BEGIN IMMEDIATE" in b.request_body]


def test_a_push_with_tail_rows_is_one_batch_up_to_them(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("INSERT INTO t SELECT value, 's' FROM generate_series(1, 10)")
    path = str(tmp_path / "r.db")
    with FaultProxy(turso_server.url) as proxy:
        plain = turso_dbapi.connect(proxy.base_url, local_path=path)  # no threshold: tails on
        for i in range(1, 4):  # T1..T3: each an update of a synced row and a tail insert
            plain.execute("UPDATE t SET v = 'u' WHERE id = ?", (i,))
            plain.execute("INSERT INTO t VALUES (?, 'tail')", (100 + i,))
            plain.commit()
        assert tail.count(plain) == 3
        conn = turso_dbapi.connect(path, push_operations_threshold=1)  # folds them: tails off
        assert tail.count(conn) == 0 and not capture.tails_enabled(conn)
        proxy.clear()
        conn.push()
        # the inserts' transactions are unknown once folded: a cut between T1 and T2 could
        # send T1's update without its insert, so the three go in one server transaction
        assert len(_server_transactions(proxy)) == 1
        for i in range(1, 4):  # logged with their marks now
            conn.execute("UPDATE t SET v = 'again' WHERE id = ?", (100 + i,))
            conn.execute("INSERT INTO t VALUES (?, 'new')", (200 + i,))
            conn.commit()
        proxy.clear()
        conn.push()
        assert len(_server_transactions(proxy)) == 3
        assert _rows(turso_server) == _local(conn)
        conn.close()
        plain.close()


def test_with_a_threshold_autocommit_inserts_are_cut_at_their_transactions(turso_server, tmp_path):
    """The issue's rule for every kind of change, inserts included: a connection with
    push_operations_threshold keeps no tails (tail.py EXACT BATCHES), so 30 single-row
    transactions with threshold 10 are 3 server transactions of 10 rows each."""
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("INSERT INTO t SELECT value, 's' FROM generate_series(1, 10)")
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), push_operations_threshold=10)
        assert not capture.tails_enabled(conn)
        for i in range(30):
            conn.execute("INSERT INTO t(v) VALUES (?)", (f"row{i}",))
            conn.commit()
        assert tail.count(conn) == 0  # every insert logged, with its transaction's mark
        proxy.clear()
        result = conn.push()
        batches = [[s["stmt"] for s in json.loads(r.request_body)["requests"][0]["batch"]["steps"]
                    if s["stmt"]["sql"].startswith('INSERT INTO "t"')] for r in _server_transactions(proxy)]
        assert result.batches == 3 and [len(b) for b in batches] == [10, 10, 10]
        assert _rows(turso_server) == _local(conn)
        conn.close()


def test_a_push_without_a_threshold_turns_the_tails_on_again(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("INSERT INTO t SELECT value, 's' FROM generate_series(1, 10)")
    path = str(tmp_path / "r.db")
    exact = turso_dbapi.connect(turso_server.url, local_path=path, push_operations_threshold=5)
    exact.executemany("INSERT INTO t(v) VALUES (?)", [("a",)] * 20)
    exact.commit()
    assert _frontier(exact) is None and tail.count(exact) == 0
    exact.close()
    plain = turso_dbapi.connect(path)  # a connect without a threshold changes nothing
    assert not capture.tails_enabled(plain)
    plain.push()  # ... its push does: the tails start above the rows
    assert capture.tails_enabled(plain) and _frontier(plain) == 30
    plain.executemany("INSERT INTO t(v) VALUES (?)", [("b",)] * 20)
    plain.commit()
    assert tail.count(plain) == 20  # unlogged again: the cheap path
    plain.push()
    assert _rows(turso_server) == _local(plain)
    plain.close()


def test_an_alter_table_folds_the_tail_first(turso_server, replica):
    replica.executemany("INSERT INTO t VALUES (?, 'tail')", [(i,) for i in range(20, 25)])
    replica.commit()
    replica.execute("ALTER TABLE t ADD COLUMN extra")
    replica.execute("INSERT INTO t VALUES (30, 'after', 1)")
    replica.commit()
    assert _frontier(replica) == 24 and tail.count(replica) == 1
    keys = [c.key for c in changes.collect(replica, 0).rows]
    assert keys == [(i,) for i in range(20, 25)] + [(30,)]
    replica.push()
    assert _rows(turso_server) == _local(replica)


def test_a_replica_of_the_previous_version_is_upgraded_keeping_its_log(turso_server, replica, tmp_path):
    path = str(tmp_path / "r.db")
    ic = internal.connect(path, replica._replica.conn_id)  # version 2: no WHEN, no frontier
    ic.execute("BEGIN IMMEDIATE")
    with capture.Writable(ic):
        for i, in ic.execute(f"SELECT id FROM {capture.TABLES}").fetchall():
            capture.drop_triggers(ic, i)
            capture.create_triggers(ic, i, capture.table_info(ic, "t"), None)
    ic.execute(f"UPDATE {capture.STATE} SET value = 2 WHERE key = 'version'")
    ic.execute("COMMIT")
    ic.execute("INSERT INTO t VALUES (11, 'logged by version 2')")
    ic.execute("INSERT INTO t VALUES (12, 'logged by version 2')")
    ic.close()
    replica.close()
    conn = turso_dbapi.connect(path)
    try:
        assert not capture.outdated(conn) and _frontier(conn) == 12
        assert [k for (k,) in conn.execute(f"SELECT k FROM {capture.LOG} ORDER BY id")] == [11, 12]
        conn.execute("INSERT INTO t VALUES (13, 'tail')")
        conn.commit()
        assert _logged(conn) == 2 and conn.stats().pending_changes == 3
        assert conn.push().rows == 3
        assert _rows(turso_server) == _local(conn)
    finally:
        conn.close()
