"""WAL replicas across processes (issue 17): readers in 3 processes x 2 threads during
repeated pulls, server writes, local writes and checkpoints of every mode see old or new
revisions, never a mix; the check does catch a mix (an apply broken on purpose); kill -9
during the apply leaves an intact replica with the old or the new revision and every
committed local change.

``TURSO_DBAPI_WAL_CRASH_TRIALS`` sets the timer-kill trials of the campaign (default 4; the
README reports a hand run of more)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import turso_dbapi
from turso_dbapi.storage import wal_writer
from turso_dbapi.sync import metadata as sync_meta

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "support", "_crash_worker.py")
TRIALS = int(os.environ.get("TURSO_DBAPI_WAL_CRASH_TRIALS", "4"))

# Every server revision: all rows of t share v, and log holds one row per step (v = 1..v).
CHECK = ("SELECT (SELECT MIN(v) FROM t), (SELECT MAX(v) FROM t), (SELECT COUNT(*) FROM log), "
         "(SELECT COALESCE(MAX(v), 0) FROM log)")


def server_tables(server, n=200):
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, x BLOB)")
    server.db_sql(f"INSERT INTO t SELECT value, 0, randomblob(1024) FROM generate_series(1, {n})")
    server.db_sql("CREATE TABLE log(v INTEGER, pad BLOB)")
    server.db_sql("CREATE TABLE mine(n INTEGER PRIMARY KEY, pad BLOB)")  # local writes go here
    server.db_sql("CREATE TRIGGER step AFTER UPDATE OF v ON t WHEN new.id = 1 "
                  "BEGIN INSERT INTO log VALUES (new.v, randomblob(3000)); END")


def server_step(server):
    server.db_sql("UPDATE t SET v = v + 1, x = randomblob(1024)")  # one revision, every leaf


def consistent(row) -> bool:
    return row[0] == row[1] == row[2] == row[3]


_READER = textwrap.dedent("""
    import json, os, sys, threading
    sys.path.insert(0, sys.argv[1])
    import turso_dbapi
    path, stop, checkpoints = sys.argv[2], sys.argv[3], sys.argv[4] != "0"
    CHECK = sys.argv[5]
    MODES = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"] if sys.argv[4] == "1" else ["PASSIVE"]
    out = {"reads": 0, "mixed": [], "errors": [], "seen": [], "checkpoints": 0}
    lock = threading.Lock()
    parent = os.getppid()  # a test killed before its finally (a timeout) leaves no reader spinning

    def run(k):
        conn = turso_dbapi.connect(path, isolation_level=None, timeout=30)
        n = 0
        while not os.path.exists(stop) and os.getppid() == parent:
            try:
                conn.execute("BEGIN")
                a = conn.execute(CHECK).fetchone()
                b = conn.execute(CHECK).fetchone()  # the same snapshot, whatever a pull did
                conn.execute("COMMIT")
                with lock:
                    out["reads"] += 1
                    if a != b or not (a[0] == a[1] == a[2] == a[3]):
                        out["mixed"].append([list(a), list(b)])
                    if a[0] not in out["seen"]:
                        out["seen"].append(a[0])
                n += 1
                if checkpoints and k == 0 and n % 3 == 0:
                    conn.execute(f"PRAGMA wal_checkpoint({MODES[n // 3 % len(MODES)]})").fetchall()
                    with lock:
                        out["checkpoints"] += 1
            except Exception as exc:
                with lock:
                    out["errors"].append(repr(exc))
                try:
                    conn.execute("ROLLBACK")
                except Exception:
                    pass
        conn.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    for t in threads:
        t.join()
    print(json.dumps(out), flush=True)
""")


def start_readers(path, stop, n=3, modes="1"):
    """``modes``: the checkpoints the first process runs: "1" every mode, "p" PASSIVE only."""
    procs = []
    for i in range(n):
        p = subprocess.Popen([sys.executable, "-c", _READER, ROOT, path, stop, modes if i == 0 else "0", CHECK],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    return procs


def stop_readers(procs, stop):
    open(stop, "w").close()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def wal_replica(server, path):
    conn = turso_dbapi.connect(server.url, local_path=path, timeout=30)  # a loaded machine
    assert conn.execute("PRAGMA journal_mode=WAL").fetchall() == [("wal",)]
    return conn


def run_campaign(server, path, steps, writer=False):
    """``writer``: a thread of this process also commits rows into ``mine`` all along, so
    pulls meet local commits between their side replay and their lock (caught up, or
    built again)."""
    conn = wal_replica(server, path)
    stop = path + ".stop"
    # With a writer committing all along, RESTART/TRUNCATE/FULL checkpoints (which hold the
    # write lock while they wait for readers) could starve it or the pull's lock for seconds:
    # SQLite's own contention, not the pull's; that variant checkpoints PASSIVE.
    procs = start_readers(path, stop, modes="p" if writer else "1")
    done, committed, failures = threading.Event(), [], []

    def write():
        w = turso_dbapi.connect(path, timeout=30)
        try:
            while not done.is_set():  # each row unique (a lost row's rowid may be reused)
                w.execute("INSERT INTO mine(pad) VALUES (?)", (f"w{len(committed)}",))
                w.commit()
                committed.append(f"w{len(committed)}")
                time.sleep(0.003)
        except Exception as exc:  # reported below
            failures.append(repr(exc))
        finally:
            w.close()

    thread = threading.Thread(target=write) if writer else None
    if thread is not None:
        thread.start()
    try:
        for _i in range(steps):
            server_step(server)
            conn.execute("INSERT INTO mine(pad) VALUES (randomblob(2000))")  # a local change to rebase
            conn.commit()
            assert conn.pull() is True
            time.sleep(0.15)
    finally:
        done.set()
        if thread is not None:
            thread.join()
        results = stop_readers(procs, stop)
    assert failures == []
    assert conn.execute(CHECK).fetchone() == (steps,) * 4
    assert conn.execute("SELECT COUNT(*) FROM mine").fetchone() == (steps + len(committed),)
    kept = {r[0] for r in conn.execute("SELECT pad FROM mine WHERE typeof(pad) = 'text'")}
    assert kept == set(committed), f"lost: {sorted(set(committed) - kept)[:10]}"
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    return results


@pytest.mark.parametrize("writer", [False, True], ids=["pulls", "pulls+local-writer"])
def test_readers_in_3_processes_x_2_threads_never_see_a_mix(turso_server, tmp_path, writer, monkeypatch):
    from turso_dbapi.sync import side_replay

    real_run, builds = side_replay.run, []
    monkeypatch.setattr(side_replay, "run", lambda *a, **k: builds.append(1) or real_run(*a, **k))
    server_tables(turso_server)
    steps = 8
    results = run_campaign(turso_server, str(tmp_path / "r.db"), steps, writer)
    print(f"\n{len(builds)} side replays for {steps} pulls")
    reads = sum(r["reads"] for r in results)
    mixed = [m for r in results for m in r["mixed"]]
    errors = [e for r in results for e in r["errors"]]
    seen = {v for r in results for v in r["seen"]}
    print(f"\n{reads} read transactions in 3 processes x 2 threads over {steps} pulls, "
          f"{results[0]['checkpoints']} checkpoints; revisions seen {sorted(seen)}; "
          f"mixed {len(mixed)}, errors {len(errors)}")
    assert mixed == [] and errors == []
    assert reads > 6 * steps and len(seen) > steps // 2  # the readers did run across the pulls


def test_the_mix_check_catches_an_apply_that_is_not_one_commit(turso_server, tmp_path, monkeypatch):
    # the same campaign with the apply broken on purpose: its frames in two commits, readers
    # let in between: they must see the half-applied revision
    real_append = wal_writer.append

    def two_commits(conn, replica, state, salts, frames, db_size, page_size):
        half = len(frames) // 2
        real_append(conn, replica, state, salts, frames[:half], db_size, page_size)
        conn.execute("COMMIT")  # let readers in between the two halves
        time.sleep(0.3)
        conn.execute("BEGIN IMMEDIATE")
        now = wal_writer.read_state(conn)  # a checkpoint may have restarted the WAL meanwhile
        return real_append(conn, replica, now, wal_writer.salts_for(now), frames[half:], db_size, page_size)

    monkeypatch.setattr(wal_writer, "append", two_commits)
    server_tables(turso_server)
    results = run_campaign(turso_server, str(tmp_path / "r.db"), 4)
    mixed = [m for r in results for m in r["mixed"]]
    assert mixed, "the readers' check saw no mix although the apply was split in two"


# -- kill -9 during the apply --------------------------------------------------------------


def crash_trial(factory, tmp, kill_at):
    server = factory()
    server_tables(server, 150)
    path = str(tmp / "r.db")
    conn = wal_replica(server, path)
    conn.executemany("INSERT INTO mine VALUES (?, randomblob(500))", [(i,) for i in range(1, 301)])
    conn.commit()
    reader = turso_dbapi.connect(path, isolation_level=None)  # holds the WAL open meanwhile
    reader.execute("BEGIN")
    assert reader.execute(CHECK).fetchone() == (0, 0, 0, 0)
    server_step(server)
    child = subprocess.Popen([sys.executable, WORKER, ROOT, "pull", kill_at, path],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = child.communicate(timeout=120)
    finished = "done" in out
    if finished:
        crash_trial.duration = float(out.split()[-1])
    assert finished or child.returncode == -signal.SIGKILL, err
    assert reader.execute(CHECK).fetchone() == (0, 0, 0, 0)  # its snapshot, whatever happened
    reader.execute("COMMIT")
    pending = (sync_meta.load(path).pending_pull is not None)
    with open(path + "-tdbmap", "rb") as f:
        flagged = f.read(68)[64:68] != bytes(4)  # the apply flag (pagestore.c rule (13))
    # its next read transaction: the old state or the one commit (an older version's
    # two-commit apply would first be finished by vfs.c rule (19): ``flagged``)
    crash_trial.first_read = reader.execute(CHECK).fetchone()
    assert crash_trial.first_read in ((0, 0, 0, 0), (1, 1, 1, 1))
    assert reader.execute("SELECT COUNT(*) FROM mine").fetchone() == (300,)
    assert not flagged  # a one-commit apply never sets the flag: nobody had to wait
    if pending and flagged:
        assert sync_meta.load(path).pending_pull is None
    after = turso_dbapi.connect(path)
    try:
        assert after.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        row = after.execute(CHECK).fetchone()
        assert row in ((0, 0, 0, 0), (1, 1, 1, 1)), row
        assert after.execute("SELECT COUNT(*), SUM(n) FROM mine").fetchone() == (300, 300 * 301 // 2)
        assert after.pull() in (True, False)
        assert after.execute(CHECK).fetchone() == (1, 1, 1, 1)
        assert after.execute("SELECT COUNT(*) FROM mine").fetchone() == (300,)
    finally:
        after.close()
        conn.close()
        reader.close()
    return "finished" if finished else ("pending" if pending else "not-started")


@pytest.mark.parametrize("kill_at", ["rebase.prepare:1", "rebase.replay:1", "wal.side:1", "meta.save:1",
                                     "wal.record:1", "wal.append:1", "meta.save:2"])
def test_kill_9_at_each_step_of_the_wal_apply(turso_server_factory, tmp_path, kill_at):
    landed = crash_trial(turso_server_factory, tmp_path, kill_at)
    assert landed != "finished"
    # killed once its one commit is in the WAL: the new state at once, else the old one
    new = kill_at in ("wal.append:1", "meta.save:2")
    assert crash_trial.first_read == ((1, 1, 1, 1) if new else (0, 0, 0, 0))
    assert landed == ("pending" if kill_at in ("meta.save:1", "wal.record:1", "wal.append:1") else "not-started")


def test_kill_9_at_random_points_of_a_wal_pull(turso_server_factory, tmp_path):
    rng = random.Random(int(os.environ.get("TURSO_DBAPI_CRASH_SEED", "0")) or None)
    landed = {}
    twin = tmp_path / "twin"
    twin.mkdir()
    assert crash_trial(turso_server_factory, twin, "never") == "finished"
    duration = crash_trial.duration  # the pull uncrashed: kills are drawn inside it
    for trial in range(TRIALS):
        tmp = tmp_path / f"trial{trial}"
        tmp.mkdir()
        where = crash_trial(turso_server_factory, tmp, f"after:{rng.uniform(0.0, duration):.4f}")
        landed[where] = landed.get(where, 0) + 1
    print(f"\nWAL pull: {TRIALS} kill -9 trials over {duration:.3f} s, landed: {landed}")


# -- no reader waits for an apply (one commit) ---------------------------------------------


def paused_pull(path, hook, seconds):
    """A pull in another process that stops ``seconds`` after the hook's call (the worker's
    ``pause:``); returns once it is paused there."""
    mark = path + ".paused"
    child = subprocess.Popen([sys.executable, WORKER, ROOT, "pull", f"pause:{hook}:{seconds}", path],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, TURSO_DBAPI_PAUSE_MARK=mark))
    deadline = time.monotonic() + 60
    while not os.path.exists(mark):
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise AssertionError(f"the pull never reached {hook}: {child.communicate()}")
        time.sleep(0.01)
    return child


PAUSE = 5.0  # seconds the puller stays inside its apply; a waiting reader would wait them out


@pytest.mark.parametrize("hook", ["wal.append:1", "wal.side:1"])
def test_a_read_transaction_started_inside_an_apply_with_local_changes_does_not_wait(turso_server, tmp_path, hook):
    # wal.append:1: the one commit is appended, the apply not ended (metadata, stage, the
    # write lock still held); wal.side:1: the replay was built off to the side, no lock yet
    server_tables(turso_server, 150)
    path = str(tmp_path / "r.db")
    conn = wal_replica(turso_server, path)
    conn.executemany("INSERT INTO mine VALUES (?, randomblob(500))", [(i,) for i in range(1, 101)])
    conn.commit()
    reader = turso_dbapi.connect(path, isolation_level=None, timeout=30)
    assert reader.execute(CHECK).fetchone() == (0, 0, 0, 0)
    server_step(turso_server)
    child = paused_pull(path, hook, PAUSE)
    try:
        t0 = time.perf_counter()
        reader.execute("BEGIN")
        row = reader.execute(CHECK).fetchone()
        mine = reader.execute("SELECT COUNT(*) FROM mine").fetchone()[0]
        reader.execute("COMMIT")
        took = time.perf_counter() - t0
        print(f"\n{hook}: a new read transaction took {took * 1e3:.1f} ms while the puller paused {PAUSE} s")
        assert took < 1.5
        # the old state with its local rows, or the new one with them replayed: never without
        assert (row, mine) == (((1, 1, 1, 1), 100) if hook.startswith("wal.append") else ((0, 0, 0, 0), 100))
        if hook.startswith("wal.side"):  # before the lock, a local writer does not wait either
            t0 = time.perf_counter()
            conn.execute("INSERT INTO mine VALUES (1000, x'00')")
            conn.commit()
            assert time.perf_counter() - t0 < 1.5
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert "done" in out, err
    expected = 101 if hook.startswith("wal.side") else 100  # that commit moved the replica: replanned
    assert reader.execute(CHECK).fetchone() == (1, 1, 1, 1)
    assert reader.execute("SELECT COUNT(*) FROM mine").fetchone() == (expected,)
    assert reader.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert sync_meta.load(path).pending_pull is None
    reader.close()
    conn.close()
