"""pull() of OUR client against OUR server: refusal rules, coherence across connections and
processes, partial replicas with server writes between pulls, crash recovery."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import turso_dbapi
from turso_dbapi.sync import apply as pull_apply, metadata as sync_meta

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout


def rows_table(server, n=300):
    """n rows with a 1 KiB blob each (about n/3 pages) and a counter v, equal in every row."""
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, x BLOB)")
    server.db_sql(f"INSERT INTO t SELECT value, 0, randomblob(1024) FROM generate_series(1, {n})")


def server_rows(server):
    return [(int(i), int(n), h) for i, n, h in
            server.db_sql("SELECT id, length(x), hex(substr(x, 1, 12)) FROM t ORDER BY id")]


def local_rows(conn):
    return conn.execute("SELECT id, length(x), hex(substr(x, 1, 12)) FROM t ORDER BY id").fetchall()


def test_pull_keeps_local_changes_by_replaying_them_on_the_new_revision(turso_server, tmp_path):
    rows_table(turso_server, 10)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("INSERT INTO t VALUES (1000, 5, x'00')")
    conn.execute("UPDATE t SET v = 9 WHERE id = 2")
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 1")
    assert conn.pull() is True
    assert conn.stats().revision == turso_server.revision and conn.stats().pull_gen == 1
    # the server's update everywhere, the local insert and the local update (last writer) on top
    assert conn.execute("SELECT id, v FROM t WHERE id IN (1, 2, 1000) ORDER BY id").fetchall() == [
        (1, 1), (2, 9), (1000, 5)]
    assert conn.stats().pending_changes == 2  # still unpushed, with new log ids
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_pull_refuses_inside_a_transaction(turso_server, tmp_path):
    rows_table(turso_server, 10)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("BEGIN")
    conn.execute("SELECT COUNT(*) FROM t").fetchall()
    with pytest.raises(turso_dbapi.OperationalError, match="inside a transaction"):
        conn.pull()
    conn.rollback()


def test_pull_waits_for_readers_of_other_connections_and_fails_cleanly(turso_server, tmp_path, monkeypatch):
    rows_table(turso_server, 30)
    path = str(tmp_path / "r.db")
    a = turso_dbapi.connect(turso_server.url, local_path=path, journal_mode="delete")
    b = turso_dbapi.connect(path, isolation_level=None)
    b.execute("BEGIN")
    assert b.execute("SELECT MIN(v), MAX(v) FROM t").fetchall() == [(0, 0)]
    turso_server.db_sql("UPDATE t SET v = v + 1")
    monkeypatch.setattr(pull_apply, "LOCK_TIMEOUT", 0.2)
    with pytest.raises(turso_dbapi.OperationalError, match="could not lock"):
        a.pull()
    assert not os.path.exists(pull_apply.stage_path(path))
    assert b.execute("SELECT MIN(v), MAX(v) FROM t").fetchall() == [(0, 0)]  # still its snapshot
    b.execute("COMMIT")
    assert a.stats().pull_gen == 0
    assert a.pull() is True
    assert b.execute("SELECT MIN(v), MAX(v) FROM t").fetchall() == [(1, 1)]  # next transaction: new


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_a_pull_waits_for_locks_as_long_as_the_connections_timeout_says(turso_server, tmp_path, mode):
    """connect(timeout=) is how long sqlite3 waits for another connection's lock; a pull's
    apply waits as long (the default, like sqlite3's, is 5 s). A writer holds its write
    transaction for 1 s: a pull with timeout=0.2 fails at once and changes nothing, one with
    timeout=10 waits for it and lands."""
    rows_table(turso_server, 30)
    path = str(tmp_path / "r.db")
    for timeout, lands in ((0.2, False), (10, True)):
        a = turso_dbapi.connect(turso_server.url, local_path=path, journal_mode=mode, timeout=timeout)
        holder = turso_dbapi.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # the write lock (rollback: RESERVED; WAL: the WAL's)
        holder.execute("INSERT INTO t(v) VALUES (-1)")
        turso_server.db_sql("UPDATE t SET v = v + 1")
        release = threading.Timer(1.0, holder.execute, ("COMMIT",))
        release.start()
        t0 = time.perf_counter()
        try:
            if lands:
                assert a.pull() is True
                assert time.perf_counter() - t0 >= 0.8  # it waited for the writer
            else:
                with pytest.raises(turso_dbapi.OperationalError, match=r"could not lock the replica .* within 0.2 s"):
                    a.pull()
                assert time.perf_counter() - t0 < 0.9  # not the writer's whole second
                assert not os.path.exists(pull_apply.stage_path(path))
        finally:
            release.join()
            holder.close()
        a.close()
    check = turso_dbapi.connect(path)
    assert check.execute("SELECT COUNT(*) FROM t WHERE v = -1").fetchone() == (2,)  # both writes kept
    check.close()


def test_other_connections_see_old_or_new_never_a_mix(turso_server, tmp_path):
    rows_table(turso_server, 300)
    path = str(tmp_path / "r.db")
    puller = turso_dbapi.connect(turso_server.url, local_path=path)
    readers = [turso_dbapi.connect(path, check_same_thread=False) for _ in range(2)]
    stop = threading.Event()
    seen, bad = set(), []

    def read(conn):
        while not stop.is_set():
            (lo, hi, n), = conn.execute("SELECT MIN(v), MAX(v), COUNT(*) FROM t").fetchall()
            if lo != hi or n != 300:
                bad.append((lo, hi, n))
            seen.add(lo)

    threads = [threading.Thread(target=read, args=(c,)) for c in readers]
    for t in threads:
        t.start()
    try:
        for _ in range(5):
            turso_server.db_sql("UPDATE t SET v = v + 1")  # every row, every page, one commit
            assert puller.pull() is True
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert bad == []
    assert max(seen) == 5 and len(seen) >= 3
    for c in readers:
        assert c.execute("SELECT MIN(v), MAX(v) FROM t").fetchall() == [(5, 5)]


_READER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import turso_dbapi
    conn = turso_dbapi.connect(sys.argv[2])
    print("ready", flush=True)
    seen, bad = set(), 0
    deadline = time.time() + 60
    while time.time() < deadline:
        (lo, hi, n), = conn.execute("SELECT MIN(v), MAX(v), COUNT(*) FROM t").fetchall()
        bad += lo != hi or n != 300
        seen.add(lo)
        if lo == int(sys.argv[3]):
            break
    print("seen", len(seen), "bad", bad, "last", lo, flush=True)
""")


def test_another_process_sees_old_or_new_never_a_mix(turso_server, tmp_path):
    rows_table(turso_server, 300)
    path = str(tmp_path / "r.db")
    puller = turso_dbapi.connect(turso_server.url, local_path=path)
    rounds = 4
    child = subprocess.Popen([sys.executable, "-c", _READER, ROOT, path, str(rounds)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    for _ in range(rounds):
        turso_server.db_sql("UPDATE t SET v = v + 1")
        assert puller.pull() is True
        time.sleep(0.1)
    out, err = child.communicate(timeout=90)
    assert child.returncode == 0, err
    words = out.split()
    assert words[words.index("bad") + 1] == "0" and words[-1] == str(rounds), out


def test_partial_replica_with_server_writes_between_pulls(turso_server, tmp_path):
    rows_table(turso_server, 600)  # ~200 pages; the prefix holds 8 of them
    path = str(tmp_path / "p.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path, bootstrap_prefix=32 * 1024,
                               segment_size=8192)
    assert conn.execute("SELECT COUNT(*) FROM t WHERE id < 5").fetchall() == [(4,)]
    fetched_before = conn.stats().pages_fetched
    # round 1: changes at both ends, an insert that grows the file
    turso_server.db_sql("UPDATE t SET x = randomblob(1024) WHERE id IN (2, 300, 599)")
    turso_server.db_sql("INSERT INTO t SELECT value, 0, randomblob(1024) FROM generate_series(601, 700)")
    assert conn.pull() is True
    rev1 = conn.stats().revision
    assert rev1 == turso_server.revision
    # lazy fetches now pin the latest synced revision (see sync.replica's docstring)
    assert conn._replica.source.current_pin() == rev1  # what the next lazy fetch uses
    # round 2: more writes on the server before this replica reads anything
    turso_server.db_sql("DELETE FROM t WHERE id BETWEEN 100 AND 200")
    turso_server.db_sql("UPDATE t SET v = 7 WHERE id > 650")
    assert conn.pull() is True
    assert conn.stats().pages_fetched > fetched_before
    # pages never fetched before the pulls read right (at the pinned revision)
    assert local_rows(conn) == server_rows(turso_server)
    assert conn.execute("SELECT COUNT(*) FROM t WHERE v = 7").fetchall() == [(50,)]
    # round 3: the server shrinks; the replica follows without fetching dropped pages
    turso_server.db_sql("DELETE FROM t WHERE id > 50")
    turso_server.db_sql("VACUUM")
    assert conn.pull() is True
    assert conn.stats().db_size_pages == int(turso_server.db_sql("PRAGMA page_count")[0][0])
    assert local_rows(conn) == server_rows(turso_server)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    # a fresh replica opened by path (new process-level source) agrees as well
    assert local_rows(turso_dbapi.connect(path)) == server_rows(turso_server)


def test_empty_pull_records_the_revision_and_time(turso_server, tmp_path):
    rows_table(turso_server, 3)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    meta = sync_meta.load(str(tmp_path / "r.db"))
    meta.last_pull_unix_time = 1  # pretend the last pull was long ago
    sync_meta.save(str(tmp_path / "r.db"), meta)
    assert conn.pull() is False
    st = conn.stats()
    assert st.last_pull_unix_time > 1 and st.pull_gen == 0 and st.revision == turso_server.revision


_CRASHING_PULL = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import turso_dbapi
    from turso_dbapi.sync import apply as pull_apply
    conn = turso_dbapi.connect(sys.argv[2])
    real_put = conn._replica.store.put_synced_many  # the apply stores its pages in batches
    def dying_put(buf, pgnos, offsets, **k):
        real_put(buf, pgnos[:3], offsets[:3], **k)
        os._exit(3)  # the process dies in the middle of the apply: 3 pages stored
    conn._replica.store.put_synced_many = dying_put
    conn.pull()
""")


def test_crash_during_apply_is_redone_at_the_next_open(turso_server, tmp_path):
    rows_table(turso_server, 300)
    path = str(tmp_path / "r.db")
    turso_dbapi.connect(turso_server.url, local_path=path, journal_mode="delete").close()
    reader = turso_dbapi.connect(path)  # stays open across the other process's crash
    assert reader.execute("SELECT MIN(v), MAX(v) FROM t").fetchall() == [(0, 0)]
    turso_server.db_sql("UPDATE t SET v = 9, x = randomblob(1024)")
    proc = subprocess.run([sys.executable, "-c", _CRASHING_PULL, ROOT, path], capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 3, proc.stderr
    assert sync_meta.load(path).pending_pull is not None and os.path.exists(pull_apply.stage_path(path))
    # the open reader's next statement finishes the dead puller's apply: never a mix
    assert reader.execute("SELECT MIN(v), MAX(v) FROM t").fetchall() == [(9, 9)]
    assert sync_meta.load(path).pending_pull is None
    reader.close()
    conn = turso_dbapi.connect(path)
    assert sync_meta.load(path).pending_pull is None and not os.path.exists(pull_apply.stage_path(path))
    assert conn.execute("SELECT MIN(v), MAX(v) FROM t").fetchall() == [(9, 9)]
    assert local_rows(conn) == server_rows(turso_server)
    assert conn.stats().revision == turso_server.revision and conn.stats().pull_gen == 1
    assert conn.pull() is False


_DYING_APPLY = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import turso_dbapi
    from turso_dbapi.sync import pull_end
    conn = turso_dbapi.connect(sys.argv[2])
    store = conn._replica.store
    assert store.read_page(1)[100] == 0x05, "the schema must span pages (page 1 an interior page)"
    if sys.argv[3] == "torn-replay":
        def torn(*a, **k):
            # The replay's commit (journal_mode=MEMORY: the apply is redone, not rolled back)
            # was cut by the crash: page 1, written first, is new (its schema and in-header
            # size); the other pages it wrote are not, nor has the file grown to that size.
            zero, ps, p = bytes(store.page_size), store.page_size, store.first_local(2)
            while p:
                assert store._lib.tdb_store_write(store._p, 0, zero, ps, (p - 1) * ps) == 0
                p = store.first_local(p + 1)
            assert store._lib.tdb_store_truncate(store._p, store.remote_size) == 0
            os._exit(3)
        pull_end.finish = torn  # after the replay's commit, before the metadata switch
    else:  # "shrunk": the synced layer got its new (smaller) size and pages, page 1 not yet
        real_put = store.put_synced
        def put_synced(pgno, *a, **k):
            if pgno == 1 and k.get("overwrite"):
                os._exit(3)
            return real_put(pgno, *a, **k)
        store.put_synced = put_synced
    conn.pull()
""")


@pytest.mark.parametrize("death", ["torn-replay", "shrunk"])
def test_an_apply_that_died_leaving_a_torn_replica_is_redone_without_sqlite_reading_it(turso_server, tmp_path,
                                                                                       death):
    """The redo of a pending rollback-mode apply must not let SQLite read the replica before
    it is whole again. The crash campaign once died inside the replay's commit: page 1 (its
    schema, its in-header size) new, the rest not; the redo's first statements (PRAGMA
    journal_mode loads the schema; BEGIN EXCLUSIVE checks the in-header size against the
    file's) failed with 'database disk image is malformed' at every open. Likewise a pull of
    a shrunk database that died before its page 1: the old page 1 is larger than the file."""
    rows_table(turso_server, 300)
    for i in range(4):  # with their capture triggers the schema spans pages, as in the campaign
        turso_server.db_sql(f"CREATE TABLE u{i}(id INTEGER PRIMARY KEY, a TEXT, b BLOB)")
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path, journal_mode="delete")
    conn.executemany("INSERT INTO t VALUES (?, 1, randomblob(900))", [(10000 + i,) for i in range(200)])
    conn.commit()
    conn.close()
    if death == "shrunk":
        turso_server.db_sql("DELETE FROM t WHERE id BETWEEN 30 AND 9999")
        turso_server.db_sql("VACUUM")
        turso_server.db_sql("UPDATE t SET v = 9 WHERE id < 10000")
    else:
        turso_server.db_sql("UPDATE t SET v = 9 WHERE id < 10000")
    server_count = int(turso_server.db_sql("SELECT count(*) FROM t")[0][0])
    proc = subprocess.run([sys.executable, "-c", _DYING_APPLY, ROOT, path, death], capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 3, proc.stderr
    assert sync_meta.load(path).pending_pull is not None
    conn = turso_dbapi.connect(path)  # redoes the apply and the replay
    assert sync_meta.load(path).pending_pull is None and not os.path.exists(pull_apply.stage_path(path))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("SELECT count(*), min(v), max(v) FROM t WHERE id < 10000").fetchall() == [
        (server_count, 9, 9)]
    assert conn.execute("SELECT count(*), min(v) FROM t WHERE id >= 10000").fetchall() == [(200, 1)]
    assert conn.stats().pending_changes == 200 and conn.stats().revision == turso_server.revision
    conn.push()
    assert turso_server.db_sql("SELECT count(*) FROM t WHERE id >= 10000") == [["200"]]


def test_a_stage_left_before_the_apply_began_is_discarded(turso_server, tmp_path):
    rows_table(turso_server, 30)
    path = str(tmp_path / "r.db")
    turso_dbapi.connect(turso_server.url, local_path=path).close()
    pull_apply.write_stage(path, "999", 1, {1: b"\0" * 4096})  # a crash right after staging
    conn = turso_dbapi.connect(path)
    assert not os.path.exists(pull_apply.stage_path(path))
    assert conn.execute("SELECT COUNT(*) FROM t").fetchall() == [(30,)]
    turso_server.db_sql("UPDATE t SET v = 2")
    assert conn.pull() is True and conn.execute("SELECT MAX(v) FROM t").fetchall() == [(2,)]


def test_journal_mode_wal_switches_the_replica_and_pull_keeps_working(turso_server, tmp_path):
    # issue 17: apps switch to WAL at start-up; on a replica it really switches (WAL replicas:
    # tests/sync/test_wal_replica.py)
    rows_table(turso_server, 10)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    for spelling in ("WAL", "wal", "w", "Wa"):  # SQLite takes any prefix of a mode's name
        assert conn.execute(f"PRAGMA journal_mode={spelling}").fetchall() == [("wal",)]
    turso_server.db_sql("UPDATE t SET v = 3")
    assert conn.pull() is True
    assert conn.execute("SELECT MAX(v) FROM t").fetchall() == [(3,)]
    assert conn.execute("PRAGMA journal_mode = delete").fetchall() == [("delete",)]  # and back
    turso_server.db_sql("UPDATE t SET v = 4")
    assert conn.pull() is True
    assert conn.execute("SELECT MAX(v) FROM t").fetchall() == [(4,)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.parametrize("mode", ["rollback", "wal"])
def test_a_large_pull_streams_to_disk_and_a_cut_reply_starts_over(tmp_path, mode):
    import tracemalloc

    import requests
    from support.faultproxy import FaultProxy

    # the server in its own process, so tracemalloc sees only the client
    server = subprocess.Popen([sys.executable, "-m", "turso_dbapi.server", str(tmp_path / "s.db"),
                               "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = server.stdout.readline().split(" at ", 1)[1].split()[0]

        def sql(text):
            body = {"requests": [{"type": "execute", "stmt": {"sql": text}}]}
            assert requests.post(url + "/v2/pipeline", json=body, timeout=60).json()["results"][0]["type"] == "ok"

        sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, x BLOB)")
        # WAL: the pull commits its frames to the WAL (sync/wal_apply.py), streamed too
        conn = turso_dbapi.connect(url, local_path=str(tmp_path / "r.db"), partial=True,
                                   journal_mode="wal" if mode == "wal" else "delete")
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal" if mode == "wal" else "delete",)]
        sql("INSERT INTO t SELECT value, 1, randomblob(1000) FROM generate_series(1, 8000)")
        tracemalloc.start()
        try:
            assert conn.pull() is True
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        print(f"\n{mode}: Python memory peak of a pull of ~8 MB of pages: {peak} bytes")
        assert peak < 2_000_000, peak  # ~8 MB of pages went to the stage file, not to memory
        assert conn.execute("SELECT COUNT(*), SUM(v), SUM(LENGTH(x)) FROM t").fetchall() == [(8000, 8000, 8_000_000)]
        with FaultProxy(url) as proxy:  # (the proxy holds whole replies: not in the memory figure)
            other = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "o.db"), partial=True)
            if mode == "wal":
                other.execute("PRAGMA journal_mode=WAL")
            sql("UPDATE t SET v = 2, x = randomblob(1000) WHERE id % 2 = 0")
            proxy.inject("truncate", times=1)  # the pull's reply is cut: retried from scratch
            assert other.pull() is True
            cut = [i for i, r in enumerate(proxy.records) if r.fault == "truncate"]
            # the cut request, then the same one again, whole (WAL mode fetches more after it)
            assert len(cut) == 1 and proxy.records[cut[0] + 1].fault is None
            assert proxy.records[cut[0] + 1].path == proxy.records[cut[0]].path
        assert other.execute("SELECT COUNT(*), SUM(v) FROM t").fetchall() == [(8000, 12000)]
        assert other.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        server.terminate()
        server.wait(10)


def _replica_with_a_damaged_pending_stage(turso_server, path):
    """A replica whose metadata says a pull is pending, with bit rot in the staged page."""
    rows_table(turso_server, 10)
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    pull_apply.write_stage(path, "77", 3, {2: b"\1" * 4096})
    meta = sync_meta.load(path)
    meta.pending_pull = {"revision": "77", "db_size": 3}
    sync_meta.save(path, meta)
    with open(pull_apply.stage_path(path), "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    return conn


def test_a_damaged_stage_of_a_pending_apply_is_reported(turso_server, tmp_path):
    path = str(tmp_path / "r.db")
    conn = _replica_with_a_damaged_pending_stage(turso_server, path)
    with pytest.raises(turso_dbapi.OperationalError, match="staged pages are missing or damaged"):
        conn.pull()


_LONG_READER = textwrap.dedent("""
    import sqlite3, sys
    sys.path.insert(0, sys.argv[1])
    import turso_dbapi
    path = sys.argv[2]
    conn = turso_dbapi.connect(path, timeout=0.3)
    # a plain sqlite3 connection through the VFS: no Python layer of ours per statement
    raw = sqlite3.connect(f"file:{path}?vfs=turso_dbapi", uri=True, timeout=0.3)
    sql = "SELECT MIN(v), MAX(v), COUNT(*) FROM t"
    print("ready", conn.execute(sql).fetchall(), raw.execute(sql).fetchall(), flush=True)
    for line in sys.stdin:
        try:
            print("raw", raw.execute(sql).fetchall(), "conn", conn.execute(sql).fetchall(), flush=True)
        except sqlite3.OperationalError as exc:
            print("error", exc, flush=True)
""")


def test_a_reader_in_another_process_never_sees_a_mix_after_a_killed_puller(turso_server, tmp_path):
    from turso_dbapi.sync import bootstrap

    rows_table(turso_server, 300)
    path = str(tmp_path / "r.db")
    turso_dbapi.connect(turso_server.url, local_path=path, journal_mode="delete").close()
    reader = subprocess.Popen([sys.executable, "-c", _LONG_READER, ROOT, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().split() == ["ready", "[(0,", "0,", "300)]", "[(0,", "0,", "300)]"]
        turso_server.db_sql("UPDATE t SET v = 9, x = randomblob(1024)")
        proc = subprocess.run([sys.executable, "-c", _CRASHING_PULL, ROOT, path], capture_output=True,
                              text=True, timeout=90)
        assert proc.returncode == 3, proc.stderr  # killed with the synced layer half switched
        assert sync_meta.load(path).pending_pull is not None

        def ask() -> str:
            reader.stdin.write("go\n")
            reader.stdin.flush()
            return reader.stdout.readline().strip()

        # while the pull lock is held (as by a live puller), readers wait: busy, never a mix
        with bootstrap.pull_lock(path) as held:
            assert held
            assert ask() == "error database is locked"
        assert sync_meta.load(path).pending_pull is not None
        # then the reader's next read transaction (the raw connection's, first) finishes the apply
        assert ask() == "raw [(9, 9, 300)] conn [(9, 9, 300)]"
        assert sync_meta.load(path).pending_pull is None
        assert not os.path.exists(pull_apply.stage_path(path))
    finally:
        reader.stdin.close()
        reader.wait(30)
    assert reader.returncode == 0, reader.stderr.read()
    conn = turso_dbapi.connect(path)
    assert local_rows(conn) == server_rows(turso_server) and conn.stats().pull_gen == 1


def test_a_user_authorizer_does_not_change_what_journal_mode_wal_does(turso_server, tmp_path):
    rows_table(turso_server, 10)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    seen = []

    def mine(action, arg1, arg2, db, source):
        seen.append(action)
        return turso_dbapi.SQLITE_OK

    conn.set_authorizer(mine)  # no authorizer of ours decides what the pragma does
    assert conn.execute("PRAGMA journal_mode=WAL").fetchall() == [("wal",)] and seen
    turso_server.db_sql("UPDATE t SET v = 3")
    assert conn.pull() is True
    assert conn.execute("SELECT MAX(v) FROM t").fetchall() == [(3,)]
    conn.set_authorizer(lambda *a: turso_dbapi.SQLITE_DENY)
    with pytest.raises(turso_dbapi.DatabaseError, match="not authorized"):
        conn.execute("SELECT 1")


def test_a_dead_pullers_apply_that_cannot_be_finished_fails_reads_with_the_cause(turso_server, tmp_path):
    from turso_dbapi.storage import apply_flag

    path = str(tmp_path / "r.db")
    conn = _replica_with_a_damaged_pending_stage(turso_server, path)
    apply_flag.ApplyFlag(conn._replica.store).set()  # as a puller that died mid-apply leaves it
    for _ in range(2):  # every read transaction tries again, none reads a half-applied state
        with pytest.raises(turso_dbapi.OperationalError, match="staged pages are missing or damaged"):
            conn.execute("SELECT COUNT(*) FROM t")
    assert apply_flag.ApplyFlag(conn._replica.store).is_set() and sync_meta.load(path).pending_pull is not None


def test_a_rolled_back_transaction_that_spilled_pages_does_not_block_pull(turso_server, tmp_path):
    """Issue 14.6: a transaction larger than the page cache writes pages to the file before
    it ends; its rollback writes the old bytes back. Nothing changed, so pull() must run."""
    rows_table(turso_server, 30)
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    conn.execute("PRAGMA cache_size=5")
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET x = randomblob(1024)")  # every page of t
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
                 "INSERT INTO t SELECT i + 1000, 9, randomblob(3000) FROM n")
    assert conn.stats().local_writes > 0  # it spilled
    conn.rollback()
    assert os.path.getsize(path + "-tdblocal") > 0
    turso_server.db_sql("UPDATE t SET v = 7")
    assert conn.pull() is True
    assert conn.execute("SELECT count(*), min(v), max(v) FROM t").fetchone() == (30, 7, 7)
    assert local_rows(conn) == server_rows(turso_server)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.stats().pending_changes == 0  # nothing of the rolled-back transaction is kept


def test_a_committed_local_change_survives_a_pull_after_a_rolled_back_spill(turso_server, tmp_path):
    rows_table(turso_server, 30)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.execute("PRAGMA cache_size=5")
    conn.execute("UPDATE t SET v = 3 WHERE id = 30")
    conn.commit()
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET x = randomblob(1024)")
    conn.rollback()
    turso_server.db_sql("UPDATE t SET v = 7")
    assert conn.pull() is True  # the committed change is replayed (last writer wins)
    assert conn.execute("SELECT v, count(*) FROM t GROUP BY v ORDER BY v").fetchall() == [(3, 1), (7, 29)]
    assert conn.stats().pending_changes == 1
