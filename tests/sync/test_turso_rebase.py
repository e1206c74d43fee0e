"""pull() with unpushed local changes: set aside, apply, replay (spec §6.5-6.6), against OUR
reference server; last writer wins, the conflict hook, partial replicas, a shrinking
server, pages only the replica allocated, readers in another process, a push racing a pull."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import turso_dbapi

pytestmark = pytest.mark.usefixtures("new_replica_mode")  # every test in both journal modes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rows_table(server, n=300):
    """n rows of ~1 KiB (about 3 per page) and a counter v."""
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, x BLOB)")
    server.db_sql(f"INSERT INTO t SELECT value, 0, randomblob(1000) FROM generate_series(1, {n})")


def vs(conn, ids):
    q = ",".join("?" * len(ids))
    return dict(conn.execute(f"SELECT id, v FROM t WHERE id IN ({q})", ids).fetchall())


def test_rebase_last_writer_wins_per_row_and_nothing_is_lost(turso_server, tmp_path):
    rows_table(turso_server, 60)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("UPDATE t SET v = 100 WHERE id = 1")  # both change row 1: local replays last
    conn.execute("DELETE FROM t WHERE id = 2")  # server updates 2, local deletes it: deleted
    conn.execute("UPDATE t SET v = 300 WHERE id = 3")  # server deletes 3, local updates: back
    conn.execute("INSERT INTO t VALUES (1000, 7, x'01')")
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 5 WHERE id IN (1, 2, 10)")
    turso_server.db_sql("DELETE FROM t WHERE id = 3")
    assert conn.pull() is True
    assert vs(conn, [1, 2, 3, 10, 1000]) == {1: 100, 3: 300, 10: 5, 1000: 7}
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    # still pending (rebased), then pushed: the server converges to the same rows
    assert conn.stats().pending_changes == 4
    conn.push()
    assert dict((int(a), int(b)) for a, b in turso_server.db_sql("SELECT id, v FROM t WHERE id IN (1,2,3,10,1000)")) \
        == {1: 100, 3: 300, 10: 5, 1000: 7}
    assert conn.pull() is True  # our own push comes back: nothing replayed twice, nothing lost
    assert conn.stats().pending_changes == 0
    assert vs(conn, [1, 2, 3, 10, 1000]) == {1: 100, 3: 300, 10: 5, 1000: 7}


def test_local_ddl_survives_a_rebase_and_is_pushed_later(turso_server, tmp_path):
    rows_table(turso_server, 10)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes VALUES (1, 'kept')")
    conn.execute("ALTER TABLE t ADD COLUMN tag TEXT")
    conn.execute("UPDATE t SET tag = 'local' WHERE id = 4")
    conn.execute("CREATE INDEX t_tag ON t(tag)")
    conn.commit()
    turso_server.db_sql("CREATE TABLE theirs(a)")
    turso_server.db_sql("INSERT INTO theirs VALUES (42)")
    assert conn.pull() is True
    assert conn.execute("SELECT * FROM notes").fetchall() == [(1, "kept")]
    assert conn.execute("SELECT id, tag FROM t WHERE tag IS NOT NULL").fetchall() == [(4, "local")]
    assert conn.execute("SELECT a FROM theirs").fetchall() == [(42,)]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 't_tag'").fetchall() == [("t_tag",)]
    conn.push()
    assert turso_server.db_sql("SELECT * FROM notes") == [["1", "kept"]]
    assert turso_server.db_sql("SELECT id, tag FROM t WHERE tag IS NOT NULL") == [["4", "local"]]
    # a second pull (our DDL is on the server now) keeps one copy of everything
    turso_server.db_sql("INSERT INTO notes VALUES (2, 'server')")
    assert conn.pull() is True
    assert conn.execute("SELECT * FROM notes ORDER BY id").fetchall() == [(1, "kept"), (2, "server")]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_on_conflict_sees_rows_both_sides_changed_and_decides(turso_server, tmp_path):
    rows_table(turso_server, 300)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("UPDATE t SET v = 1 WHERE id IN (10, 150, 290)")  # 150: only local changes it
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 2 WHERE id IN (10, 290)")
    seen = []

    def decide(c):
        seen.append((c.table, c.key, c.local["v"], c.server["v"]))
        if c.key == (10,):
            return "server"
        return dict(c.local, v=c.local["v"] + c.server["v"])  # a merge

    assert conn.pull(on_conflict=decide) is True
    assert sorted(seen) == [("t", (10,), 1, 2), ("t", (290,), 1, 2)]
    assert vs(conn, [10, 150, 290]) == {10: 2, 150: 1, 290: 3}
    conn.push()
    assert turso_server.db_sql("SELECT id, v FROM t WHERE id IN (10, 150, 290) ORDER BY id") == [
        ["10", "2"], ["150", "1"], ["290", "3"]]


def test_a_replayed_row_the_new_revision_rejects_goes_to_the_hook_and_the_pull_completes(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("INSERT INTO users VALUES (1, 'same@x')")
    conn.commit()
    turso_server.db_sql("INSERT INTO users VALUES (2, 'same@x')")  # taken on the server meanwhile
    errors = []

    def decide(c):
        errors.append(c.error)
        return dict(c.local, email="renamed@x") if c.error else "local"

    assert conn.pull(on_conflict=decide) is True
    failures = [e for e in errors if e]  # (row 1 shares its page with the server's row 2: one
    assert len(failures) == 1 and "UNIQUE" in failures[0]  # plain call too, page granularity)
    assert conn.execute("SELECT id, email FROM users ORDER BY id").fetchall() == [(1, "renamed@x"), (2, "same@x")]


def test_partial_rebase_fetches_what_the_replay_needs_and_the_server_may_shrink(turso_server, tmp_path):
    rows_table(turso_server, 600)
    turso_server.db_sql("CREATE INDEX t_v ON t(v)")
    path = str(tmp_path / "p.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path, bootstrap_prefix=16 * 1024, segment_size=4096)
    # a local update reads only the row's table pages and the v index; the replay's upsert
    # rewrites every index entry of the row, in the NEW revision
    conn.execute("UPDATE t SET x = x'ff' WHERE id = 500")
    conn.execute("INSERT INTO t VALUES (5000, 9, zeroblob(3000))")  # grows the file locally
    conn.commit()
    grown = conn._replica.store.logical_size
    turso_server.db_sql("UPDATE t SET v = id % 7 WHERE id > 550")
    assert conn.pull() is True
    rep = conn._replica
    assert conn.execute("SELECT v, length(x) FROM t WHERE id IN (500, 5000, 600) ORDER BY id").fetchall() == [
        (0, 1), (600 % 7, 1000), (9, 3000)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    print("misses inside the lock:", rep.last_apply_misses, "grown:", grown)
    # the server shrinks (rows deleted, VACUUM): pages past its new end are simply absent
    conn.push()
    turso_server.db_sql("DELETE FROM t WHERE id BETWEEN 50 AND 590")
    turso_server.db_sql("VACUUM")
    conn.execute("UPDATE t SET v = 77 WHERE id = 5")
    conn.commit()
    assert conn.pull() is True
    size = int(turso_server.db_sql("PRAGMA page_count")[0][0])
    assert conn.stats().db_size_pages == size
    assert conn.execute("SELECT COUNT(*), SUM(v = 77) FROM t").fetchall() == [(60, 1)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_pages_only_the_replica_allocated_are_dropped_before_the_replay(turso_server, tmp_path):
    rows_table(turso_server, 30)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    store = conn._replica.store
    synced_pages = store.remote_pages
    conn.execute("CREATE TABLE big(b)")
    conn.execute("INSERT INTO big SELECT zeroblob(4000) FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3)")
    conn.execute("DROP TABLE big")  # the file keeps its local growth (free pages)
    conn.commit()
    assert store.logical_size > synced_pages * 4096
    turso_server.db_sql("UPDATE t SET v = 1 WHERE id = 1")
    assert conn.pull() is True
    # the new revision's size, plus only what the replay itself wrote (the capture tables)
    assert store.remote_pages == int(turso_server.db_sql("PRAGMA page_count")[0][0])
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'big'").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


_READER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import turso_dbapi
    conn = turso_dbapi.connect(sys.argv[2])
    print("ready", flush=True)
    seen, bad, reads = set(), 0, 0
    deadline = time.time() + 60
    while time.time() < deadline:
        (lo, hi, n, mine), = conn.execute(  # one statement: one read transaction
            "SELECT MIN(CASE WHEN id < 1000 THEN v END), MAX(CASE WHEN id < 1000 THEN v END), "
            "COUNT(*), SUM(id >= 1000 AND v = -1) FROM t").fetchall()
        reads += 1
        bad += lo != hi or n != 300 + int(sys.argv[4]) or mine != int(sys.argv[4])
        seen.add(lo)
        if lo == int(sys.argv[3]):
            break
    print("seen", len(seen), "reads", reads, "bad", bad, "last", lo, flush=True)
""")


def test_readers_in_another_process_see_old_or_new_never_a_mix_during_rebases(turso_server, tmp_path):
    rows_table(turso_server, 300)
    path = str(tmp_path / "r.db")
    puller = turso_dbapi.connect(turso_server.url, local_path=path)
    local_rows = 20
    puller.executemany("INSERT INTO t VALUES (?, -1, x'00')", [(1000 + i,) for i in range(local_rows)])
    puller.commit()
    rounds = 4
    child = subprocess.Popen([sys.executable, "-c", _READER, ROOT, path, str(rounds), str(local_rows)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    for _ in range(rounds):
        turso_server.db_sql("UPDATE t SET v = v + 1 WHERE id < 1000")
        assert puller.pull() is True  # every round replays the 20 local rows
        time.sleep(0.1)
    out, err = child.communicate(timeout=90)
    assert child.returncode == 0, err
    words = out.split()
    assert words[words.index("bad") + 1] == "0" and words[-1] == str(rounds), out


def test_a_push_racing_a_pull_never_goes_back_in_time(turso_server, tmp_path):
    """§6.6: the pull's snapshot may predate a push that ran meanwhile; the replay floor comes
    from the snapshot, so the pushed-but-not-yet-pulled rows are replayed, not lost."""
    rows_table(turso_server, 10)
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    conn.execute("INSERT INTO t VALUES (1000, 1, x'00')")
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 2 WHERE id = 1")
    rep = conn._replica
    real = rep.source.changes_since
    pushed = threading.Event()

    def changes_then_push(*args, **kw):  # the network phase of the pull, then a push lands
        reply = real(*args, **kw)
        other = turso_dbapi.connect(path)  # a second connection of the replica pushes
        other.push()
        other.close()
        pushed.set()
        return reply

    rep.source.changes_since = changes_then_push
    assert conn.pull() is True
    assert pushed.is_set()
    assert turso_server.db_sql("SELECT v FROM t WHERE id = 1000") == [["1"]]  # the push landed
    # the snapshot the pull applied predates that push: the row is replayed, not lost
    assert conn.execute("SELECT v FROM t WHERE id IN (1, 1000) ORDER BY id").fetchall() == [(2,), (1,)]
    rep.source.changes_since = real
    assert conn.pull() is True  # now the snapshot has it; still exactly one row
    assert conn.execute("SELECT COUNT(*) FROM t WHERE id = 1000").fetchall() == [(1,)]


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_a_local_writer_is_never_blocked_by_the_network_of_a_pull(turso_server, tmp_path, mode):
    """A pull against a server behind a 500 ms proxy: the writer waits at most for the local
    apply (lock, switch, replay), never for the network. Its worst latency is printed. Both
    journal modes: WAL (a new replica's default) and rollback (``journal_mode="delete"``)."""
    from support.faultproxy import FaultProxy

    rows_table(turso_server, 200)
    path = str(tmp_path / "r.db")
    with FaultProxy(turso_server.url, latency=0.5) as proxy:
        puller = turso_dbapi.connect(proxy.base_url, local_path=path, journal_mode=mode)
        writer = turso_dbapi.connect(path, check_same_thread=False)
        assert writer.execute("PRAGMA journal_mode").fetchone() == (mode,)
        puller.executemany("INSERT INTO t VALUES (?, -1, x'00')", [(5000 + i,) for i in range(200)])
        puller.commit()
        turso_server.db_sql("UPDATE t SET v = 1 WHERE id < 100")
        stop = threading.Event()
        latencies = []

        def write():
            i = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                writer.execute("INSERT INTO t VALUES (?, 2, x'02')", (100000 + i,))
                writer.commit()
                latencies.append(time.perf_counter() - t0)
                i += 1
                time.sleep(0.005)

        thread = threading.Thread(target=write)
        thread.start()
        t0 = time.perf_counter()
        assert puller.pull() is True
        pull_s = time.perf_counter() - t0
        time.sleep(0.1)
        stop.set()
        thread.join(10)
    worst = max(latencies)
    print(f"{mode}: pull {pull_s:.3f} s over a 500 ms proxy; {len(latencies)} writer commits, "
          f"worst {worst * 1000:.1f} ms")
    assert pull_s > 0.5  # a round trip of 500 ms at least: the network was slow
    assert worst < 0.5  # the writer never waited for a round trip
    written = len(latencies)
    assert puller.execute("SELECT count(*) FROM t WHERE id >= 100000").fetchone() == (written,)
    assert puller.execute("SELECT count(*) FROM t WHERE id BETWEEN 5000 AND 5199 AND v = -1").fetchone() == (200,)


def test_without_a_hook_a_replayed_row_the_new_revision_rejects_is_skipped_and_the_rest_replayed(
        turso_server, tmp_path, caplog):
    turso_server.db_sql("CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"u{i}@x") for i in range(1, 6)])
    conn.commit()
    turso_server.db_sql("INSERT INTO users VALUES (100, 'u3@x')")  # taken on the server meanwhile
    with caplog.at_level("WARNING", logger="turso_dbapi"):
        assert conn.pull() is True
    assert conn.execute("SELECT id FROM users ORDER BY id").fetchall() == [(1,), (2,), (4,), (5,), (100,)]
    assert any("cannot be replayed" in r.getMessage() for r in caplog.records)
