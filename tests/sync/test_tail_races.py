"""The unpushed tail (sync/tail.py) under races: a push racing a pull (spec 6.6), writers
between push's fold and its collect, a WAL pull's side replay, and a seeded random walk of
all of them against a model. Shared helpers: support/tail_cases.py."""

from __future__ import annotations

import json

import pytest

import turso_dbapi
from support import tail_cases
from turso_dbapi.sync import push as sync_push, tail


_rows = tail_cases.server_rows
_local = tail_cases.local_rows


@pytest.fixture
def replica(turso_server, tmp_path):
    yield from tail_cases.seeded_replica(turso_server, str(tmp_path / "r.db"))


def test_a_tail_row_a_racing_push_sent_then_deleted_after_the_pull_is_deleted_on_the_server(
        turso_server, replica, tmp_path):
    # The pull's snapshot predates a push that sent row 1000 (spec 6.6): the replay puts
    # the row back above the snapshot's largest rowid. Were it in a tail, its delete would
    # log nothing and the server would keep it (and the next pull bring it back).
    path = str(tmp_path / "r.db")
    replica.execute("INSERT INTO t VALUES (1000, 'local')")
    replica.commit()
    turso_server.db_sql("UPDATE t SET v = 'server' WHERE id = 1")
    rep = replica._replica
    real = rep.source.changes_since

    def changes_then_push(*args, **kw):  # the network phase of the pull, then a push lands
        reply = real(*args, **kw)
        other = turso_dbapi.connect(path)
        other.push()
        other.close()
        return reply

    rep.source.changes_since = changes_then_push
    assert replica.pull() is True
    rep.source.changes_since = real
    assert dict(_rows(turso_server))["1000"] == "local"
    replica.execute("DELETE FROM t WHERE id = 1000")
    replica.commit()
    replica.push()
    assert replica.pull() is True
    assert "1000" not in dict(_rows(turso_server))
    assert replica.execute("SELECT COUNT(*) FROM t WHERE id = 1000").fetchone() == (0,)
    assert _rows(turso_server) == _local(replica)


def test_a_delete_made_during_a_push_racing_a_pull_reaches_the_server(turso_server, replica, tmp_path, monkeypatch):
    # The pull's snapshot predates a push that sent row 1000; the row was deleted while
    # that push was on the network. The replay deletes a row the snapshot does not hold -
    # no trigger fires - yet the server has it: the delete must stay pending, or the next
    # pull brings the row back.
    path = str(tmp_path / "r.db")
    replica.execute("INSERT INTO t VALUES (1000, 'local')")
    replica.commit()
    turso_server.db_sql("UPDATE t SET v = 'server' WHERE id = 1")
    deleter = turso_dbapi.connect(path)
    real_call, calls = sync_push.Pipeline.call, []

    def call(self, steps, what):
        if "BEGIN IMMEDIATE" in json.dumps(steps[:1]) and not calls:
            calls.append(1)
            deleter.execute("DELETE FROM t WHERE id = 1000")
            deleter.commit()
        return real_call(self, steps, what)

    rep = replica._replica
    real = rep.source.changes_since

    def changes_then_push(*args, **kw):
        reply = real(*args, **kw)
        other = turso_dbapi.connect(path)
        other.push()
        other.close()
        return reply

    monkeypatch.setattr(sync_push.Pipeline, "call", call)
    monkeypatch.setattr(rep.source, "changes_since", changes_then_push)
    assert replica.pull() is True
    monkeypatch.undo()
    assert calls and dict(_rows(turso_server))["1000"] == "local"  # the racing push landed
    assert replica.execute("SELECT COUNT(*) FROM t WHERE id = 1000").fetchone() == (0,)
    replica.push()
    assert replica.pull() is True
    assert replica.execute("SELECT COUNT(*) FROM t WHERE id = 1000").fetchone() == (0,)
    assert _rows(turso_server) == _local(replica)
    deleter.close()


def test_a_wal_pull_rebuilds_rather_than_catch_up_a_tail_changed_during_its_side_replay(
        turso_server, tmp_path, monkeypatch):
    # A catch-up replays only what was logged since the extraction: a tail row deleted
    # meanwhile logs nothing, so a replay file holding tail rows is built again instead
    # (or the deleted row would come back with the pull's commit).
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("INSERT INTO t SELECT value, 's' FROM generate_series(1, 10)")
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchall() == [("wal",)]
    conn.executemany("INSERT INTO t VALUES (?, 'tail')", [(i,) for i in range(20, 25)])
    conn.commit()
    writer = turso_dbapi.connect(path)
    turso_server.db_sql("UPDATE t SET v = 'server' WHERE id = 2")
    builds = tail_cases.commit_after_first_side_replay(monkeypatch, writer, [
        "DELETE FROM t WHERE id = 20", "UPDATE t SET v = 'changed' WHERE id = 21",
        "INSERT INTO t VALUES (30, 'new')"])
    assert conn.pull() is True
    got = dict(conn.execute("SELECT id, v FROM t WHERE id >= 20"))
    assert got == {21: "changed", 22: "tail", 23: "tail", 24: "tail", 30: "new"}
    assert len(builds) == 2
    assert conn.execute("SELECT v FROM t WHERE id = 2").fetchone() == ("server",)
    assert conn.stats().pending_changes == 5
    conn.push()
    assert _rows(turso_server) == _local(conn)
    writer.close()
    conn.close()


def test_a_rebuilt_wal_replay_asks_on_conflict_once_per_conflict(turso_server, tmp_path, monkeypatch):
    """The replay is built twice (a tail row deleted during the first side replay); the
    conflict of row 2, met by both builds, reaches the hook once and its decision holds."""
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("INSERT INTO t SELECT value, 's' FROM generate_series(1, 10)")
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    conn.execute("UPDATE t SET v = 'local' WHERE id = 2")
    conn.executemany("INSERT INTO t VALUES (?, 'tail')", [(i,) for i in range(20, 23)])
    conn.commit()
    writer = turso_dbapi.connect(path)
    turso_server.db_sql("UPDATE t SET v = 'server' WHERE id = 2")
    builds = tail_cases.commit_after_first_side_replay(monkeypatch, writer, ["DELETE FROM t WHERE id = 20"])
    asked = []

    def decide(c):  # (the tail rows share row 2's page, which the pull brought: asked too)
        asked.append((c.key, c.local and c.local["v"], c.server and c.server["v"]))
        return dict(c.local, v="merged") if c.key == (2,) else "local"

    assert conn.pull(on_conflict=decide) is True
    assert len(builds) == 2
    assert sorted(asked) == sorted(set(asked)) and ((2,), "local", "server") in asked
    assert dict(conn.execute("SELECT id, v FROM t WHERE id = 2 OR id >= 20")) == {
        2: "merged", 21: "tail", 22: "tail"}
    writer.close()
    conn.close()


@pytest.mark.parametrize("every", [False, True])
def test_rows_inserted_between_the_fold_and_the_collect_are_folded_not_sent_from_the_tail(
        turso_server, replica, tmp_path, monkeypatch, every):
    # A row sent from the tail would stay in it: deleting it afterwards would log nothing
    # and the server would keep it. ``every``: a writer inserts after every fold, so the
    # last attempt folds and collects under the lock.
    other = turso_dbapi.connect(str(tmp_path / "r.db"))
    real, inserted = sync_push._fold, []

    def fold_then_insert(ic, tails=None):
        real(ic, tails)
        if every or not inserted:
            other.execute("INSERT INTO t VALUES (?, 'window')", (100 + len(inserted),))
            other.commit()
            inserted.append(1)

    monkeypatch.setattr(sync_push, "_fold", fold_then_insert)
    replica.execute("INSERT INTO t VALUES (50, 'tail')")
    replica.commit()
    replica.push()
    monkeypatch.undo()
    sent = {i for i, _ in _rows(turso_server)}
    assert "50" in sent and "100" in sent
    # push's fold, then one per collect that found rows: the last collect folded under the lock
    assert len(inserted) == (sync_push.FOLD_ATTEMPTS if every else 1)
    assert {str(i) for (i,) in replica.execute("SELECT id FROM t WHERE id >= 100")} <= sent
    replica.execute("DELETE FROM t WHERE id >= 100")  # logged: they are below the frontier now
    replica.commit()
    replica.push()
    assert _rows(turso_server) == _local(replica)
    assert tail.count(replica) == 0
    other.close()


@pytest.mark.parametrize("wal,threshold", [(False, None), (True, 3)])
def test_random_local_work_with_pushes_pulls_and_server_writes_converges(turso_server, tmp_path, monkeypatch,
                                                                        wal, threshold):
    # Seeded random walk: local transactions of inserts (above and below the frontier),
    # updates, deletes, rowid moves and INSERT OR REPLACE; pushes (some with another
    # connection writing while the batch is on the network) and pulls; the server writes its
    # own rows (negative ids: they never move the frontier) meanwhile. Only local writes
    # touch positive ids, so after every local commit their state is the model: a pull must
    # leave it as it is (nothing lost, nothing resurrected), and at the end the server and
    # the replica hold it. TURSO_DBAPI_TAIL_SEED / TURSO_DBAPI_TAIL_STEPS vary the walk
    # (41 seeds x 150 steps and 10 x 500 passed, both parametrizations). With a threshold
    # this connection's pushes turn the tails off and ``other``'s turn them on again.
    import os
    import random

    rng = random.Random(int(os.environ.get("TURSO_DBAPI_TAIL_SEED", "7")))
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    turso_server.db_sql("INSERT INTO t SELECT value, 's' FROM generate_series(1, 20)")
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path, push_operations_threshold=threshold,
                               journal_mode="wal" if wal else "delete")
    assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal" if wal else "delete",)]
    other = turso_dbapi.connect(path, check_same_thread=False)  # (the mark read runs in a thread)
    real = sync_push.Pipeline.call
    step = [0]

    def snapshot(c):
        return dict(c.execute("SELECT id, v FROM t WHERE id > 0"))

    model = snapshot(conn)

    def local_op(c):
        ids = [i for (i,) in c.execute("SELECT id FROM t WHERE id > 0")]
        free = lambda: rng.choice([i for i in range(1, max(ids + [0]) + 30) if i not in set(ids)])  # noqa: E731
        step[0] += 1
        op = rng.choice(["auto", "auto", "explicit", "update", "delete", "move", "replace"])
        if op == "auto" or not ids:
            c.execute("INSERT INTO t(v) VALUES (?)", (f"a{step[0]}",))
        elif op == "explicit":
            c.execute("INSERT INTO t VALUES (?, ?)", (free(), f"e{step[0]}"))
        elif op == "update":
            c.execute("UPDATE t SET v = ? WHERE id = ?", (f"u{step[0]}", rng.choice(ids)))
        elif op == "delete":
            c.execute("DELETE FROM t WHERE id = ?", (rng.choice(ids),))
        elif op == "move":
            c.execute("UPDATE t SET id = ? WHERE id = ?", (free(), rng.choice(ids)))
        else:
            c.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (rng.choice(ids + [free()]), f"r{step[0]}"))

    def call(self, steps, what):  # a batch on the network, or the mark read racing the collect
        if rng.random() < 0.4:
            for _ in range(rng.randint(1, 3)):
                local_op(other)
            other.commit()
            model.clear()
            model.update(snapshot(other))
        return real(self, steps, what)

    changes_since = conn._replica.source.changes_since

    def pull_network(*args, **kw):  # sometimes a push lands after the pull's snapshot (spec 6.6)
        reply = changes_since(*args, **kw)
        if rng.random() < 0.5:
            other.push()
        return reply

    monkeypatch.setattr(sync_push.Pipeline, "call", call)
    monkeypatch.setattr(conn._replica.source, "changes_since", pull_network)
    server_id = 0
    for _ in range(int(os.environ.get("TURSO_DBAPI_TAIL_STEPS", "150"))):
        r = rng.random()
        if r < 0.12:
            conn.push()
        elif r < 0.22:
            conn.pull()
            assert snapshot(conn) == model
        elif r < 0.32:
            server_id -= 1
            turso_server.db_sql(f"INSERT INTO t VALUES ({server_id}, 'server')")
            turso_server.db_sql(f"UPDATE t SET v = 'server again' WHERE id = {rng.randint(server_id, -1)}")
        else:
            for _ in range(rng.randint(1, 4)):
                local_op(conn)
            conn.commit()
            model = snapshot(conn)
    monkeypatch.undo()
    conn.push()
    conn.pull()
    assert snapshot(conn) == model
    assert _rows(turso_server) == _local(conn)
    assert conn.stats().pending_changes == 0
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    other.close()
    conn.close()
