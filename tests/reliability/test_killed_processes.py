"""The kill -9 campaign, bounded: a process is SIGKILLed at chosen points (tests/support/
_crash_worker.py HOOKS) and at seeded random points of pulls (with unpushed local changes
to replay), pushes, lazy fetches (Turso and HTTP ranges) and local writes.

After every kill the replica reopens with ``integrity_check`` ok, holds the old or the new
revision (never a mix), has lost no committed local write (nor doubled one), and is not
wedged: the next pull or push works, and a push finished after a kill sends every row
exactly once. Add a kill point to ``HOOKS`` or an entry to the lists below. About 30 s.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import subprocess
import sys

import pytest

import turso_dbapi
from turso_dbapi.sync import metadata as sync_meta

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "support", "_crash_worker.py")
ROWS = 300
SEED = 14

# Chosen points of a pull (see _crash_worker.HOOKS): while staging, once staged, after the
# pending apply is recorded, in the middle of the apply, after the metadata switch.
PULL_POINTS = ["stage.add:1", "stage.add:40", "stage.finish:1", "rebase.prepare:1", "rebase.extract:1", "meta.save:1",
               "apply.put:1", "apply.put:30", "rebase.replay:1", "meta.save:2"]
PUSH_POINTS = ["tail.fold:1", "push.fold:1", "push.batch:1"]  # (local rows: the unpushed tail)
# Every step of a bootstrap (sync/bootstrap.py): its claim, the pages, the capture install
# (inside its transaction), the one flush, the final metadata (the commit point).
BOOTSTRAP_POINTS = ["meta.save:1", "bootstrap.pages:1", "capture.install:1", "store.sync:1", "meta.publish:1"]
FETCH_POINTS = ["fetch.put:1", "fetch.put:9", "fetch.put:40"]


def run_worker(operation: str, kill_at: str, target: str, local_path: str = "") -> tuple:
    cmd = [sys.executable, WORKER, ROOT, operation, kill_at, target] + ([local_path] if local_path else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode in (0, -9), proc.stderr
    if ":" in kill_at and not kill_at.startswith("after"):
        assert proc.returncode == -9, f"kill point {kill_at} never reached: {proc.stdout} {proc.stderr}"
    return proc.returncode, proc.stdout


def random_points(n: int, low: float, high: float, seed: int = SEED) -> list:
    """Timer points: SIGKILL after a random delay in [low, high) seconds."""
    rng = random.Random(seed)
    return [f"after:{rng.uniform(low, high):.3f}" for _ in range(n)]


def random_hook_points(n: int, hooks: list, calls: int, seed: int = SEED) -> list:
    """Random points in the sequence of hooked calls (always reached, unlike a timer)."""
    rng = random.Random(seed)
    return [f"{rng.choice(hooks)}:{rng.randint(1, calls)}" for _ in range(n)]


def elapsed(out: str) -> float:
    return float(out.split("done")[1].split()[0])


def fill(server) -> None:
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, x BLOB)")
    server.db_sql(f"INSERT INTO t SELECT value, 0, randomblob(1200) FROM generate_series(1, {ROWS})")
    server.db_sql("CREATE TABLE mine(n INTEGER PRIMARY KEY, pad BLOB)")  # local writes go here


def write_locally(path: str, count: int) -> set:
    """Commit ``count`` rows of ``mine`` in the replica; their keys."""
    con = turso_dbapi.connect(path)
    keys = {con.execute("INSERT INTO mine(pad) VALUES (randomblob(700))").lastrowid for _ in range(count)}
    con.commit()
    con.close()
    return keys


def local_keys(con) -> set:
    return {n for (n,) in con.execute("SELECT n FROM mine")}


def new_revision(server) -> None:
    """Every row's v moves by one and every page changes: a pull stages the whole file."""
    server.db_sql("UPDATE t SET v = v + 1, x = randomblob(1200)")


def state(con) -> tuple:
    """(v, rows) after checking integrity and that one revision is visible (all v equal)."""
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    lo, hi, n = con.execute("SELECT min(v), max(v), count(*) FROM t").fetchone()
    assert lo == hi, f"a mix of two revisions: v from {lo} to {hi}"
    return lo, n


def test_a_pull_killed_at_any_point_leaves_the_old_or_the_new_revision(turso_server, tmp_path):
    fill(turso_server)
    path = str(tmp_path / "r.db")
    turso_dbapi.connect(turso_server.url, local_path=path, journal_mode="delete").close()
    pages = int(turso_server.db_sql("PRAGMA page_count")[0][0])
    v = 0
    new_revision(turso_server)
    took = elapsed(run_worker("pull", "never", path)[1])  # how long a pull takes here
    v += 1
    points = (PULL_POINTS + random_hook_points(4, ["stage.add", "apply.put"], pages)
              + random_points(3, 0.0, took))
    mine = set()
    for point in points:
        mine |= write_locally(path, 2)  # unpushed local changes: the pull replays them
        new_revision(turso_server)
        run_worker("pull", point, path)
        con = turso_dbapi.connect(path)
        got, n = state(con)
        assert got in (v, v + 1) and n == ROWS, point
        assert local_keys(con) == mine, point  # no committed local write lost (or doubled)
        con.pull()  # not wedged: the next pull reaches the new revision
        assert state(con) == (v + 1, ROWS) and local_keys(con) == mine, point
        con.close()
        v += 1


@pytest.mark.parametrize("kill_at", FETCH_POINTS + random_hook_points(3, ["fetch.put"], 60))
def test_a_lazy_read_killed_mid_fetch_heals_on_reopen(turso_server, tmp_path, kill_at):
    fill(turso_server)
    want = [tuple(int(c) for c in row) for row in
            turso_server.db_sql("SELECT count(*), sum(v), sum(length(x)) FROM t")]
    path = str(tmp_path / "p.db")
    run_worker("scan", kill_at, turso_server.url, path)  # bootstraps one segment, then scans
    con = turso_dbapi.connect(path)
    assert con.execute("SELECT count(*), sum(v), sum(length(x)) FROM t").fetchall() == want
    assert state(con) == (0, ROWS)
    con.close()


@pytest.mark.parametrize("kill_at", FETCH_POINTS[1:] + random_hook_points(2, ["fetch.put"], 60, SEED + 1))
def test_a_range_scan_killed_mid_fetch_heals_on_reopen(nginx, tmp_path, kill_at):
    src = tmp_path / "src.db"
    s = sqlite3.connect(src)
    s.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, x BLOB)")
    s.executemany("INSERT INTO t VALUES (?, 0, randomblob(1200))", [(i,) for i in range(1, ROWS + 1)])
    s.commit()
    want = s.execute("SELECT count(*), sum(length(x)), sum(hex(substr(x, 1, 2)) > '8') FROM t").fetchall()
    s.close()
    nginx.place("crash.db", src)
    path = str(tmp_path / "cache.db")
    run_worker("scan", kill_at, nginx.url("crash.db"), path)
    con = turso_dbapi.connect(nginx.url("crash.db"), local_path=path, partial=True)
    assert con.execute("SELECT count(*), sum(length(x)), sum(hex(substr(x, 1, 2)) > '8') FROM t").fetchall() == want
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


def test_a_push_killed_at_any_point_is_finished_by_the_next_push_exactly_once(turso_server, tmp_path):
    fill(turso_server)
    path = str(tmp_path / "p.db")
    turso_dbapi.connect(turso_server.url, local_path=path).close()
    mine = set()
    for point in PUSH_POINTS + random_points(3, 0.0, 0.3):
        mine |= write_locally(path, 3)
        run_worker("push", point, path)
        con = turso_dbapi.connect(path)
        assert local_keys(con) == mine, point
        con.push()  # the high-water row says what the killed push committed
        con.close()
        on_server = [int(n) for (n,) in turso_server.db_sql("SELECT n FROM mine")]
        assert sorted(on_server) == sorted(mine), point  # every row once, none lost


def test_a_writer_killed_at_random_points_loses_no_committed_row(turso_server, tmp_path):
    fill(turso_server)
    path = str(tmp_path / "w.db")
    turso_dbapi.connect(turso_server.url, local_path=path).close()
    committed: set = set()
    for point in random_points(4, 0.3, 0.9):
        _, out = run_worker("write", point, path)
        lines = out.split("\n")[:-1]  # complete lines: the kill may cut the last one
        committed.update(int(m.group(1)) for m in map(re.compile(r"committed (\d+)").fullmatch, lines) if m)
        con = turso_dbapi.connect(path)
        assert state(con) == (0, ROWS)
        have = {n for (n,) in con.execute("SELECT n FROM mine")}
        assert committed <= have, f"lost committed rows {sorted(committed - have)[:5]} ({point})"
        assert len(have - committed) <= 1  # at most the one committed as the process died
        committed = have
        con.close()
    assert len(committed) > 4


def test_a_transaction_killed_after_spilling_pages_is_rolled_back_and_pull_still_works(turso_server, tmp_path):
    fill(turso_server)
    path = str(tmp_path / "s.db")
    turso_dbapi.connect(turso_server.url, local_path=path, journal_mode="delete").close()
    _, out = run_worker("big-write", "never", path)
    assert "spilled" in out and int(out.split()[-1]) > 0  # it wrote pages before dying
    con = turso_dbapi.connect(path)
    assert state(con) == (0, ROWS)  # the hot journal rolled the transaction back
    new_revision(turso_server)
    assert con.pull() is True  # nothing committed locally: nothing blocks the pull
    assert state(con) == (1, ROWS)
    con.close()


def test_a_writer_killed_between_a_page_and_its_checksum_reopens_and_rolls_back(turso_server, tmp_path):
    """Page 1's new bytes are in the local layer, its CRC is the old one, the journal is hot:
    the open's header pre-read must not fail (pagestore.c rule (21)); the rollback heals it."""
    fill(turso_server)
    path = str(tmp_path / "t.db")
    turso_dbapi.connect(turso_server.url, local_path=path, journal_mode="delete").close()
    _, out = run_worker("torn-write", "never", path)
    assert "spilled" in out and os.path.exists(path + "-journal")  # died with a hot journal
    con = turso_dbapi.connect(path)  # was "disk I/O error"
    assert state(con) == (0, ROWS)  # rolled back: the old revision, integrity ok
    assert con.stats().crc_failures == 0  # page 1 was rewritten by the rollback, not refused
    con.execute("INSERT INTO mine(pad) VALUES (x'00')")
    con.commit()
    con.close()
    con = turso_dbapi.connect(path)
    assert state(con) == (0, ROWS) and local_keys(con) == {1}
    con.close()


@pytest.mark.parametrize("kill_at", BOOTSTRAP_POINTS)
def test_a_bootstrap_killed_at_any_step_is_done_again_by_the_next_open(turso_server, tmp_path, kill_at):
    """Before its final metadata a bootstrap is a cache: the next open (without the URL:
    the claim saved it) bootstraps afresh, installs capture once and works; after it, the
    replica is the one that was made."""
    fill(turso_server)
    path = str(tmp_path / "b.db")
    run_worker("bootstrap", kill_at, turso_server.url, path)
    before = sync_meta.load(path)
    finished = kill_at.startswith("meta.publish")
    assert before is not None and before.bootstrapping is not finished  # the claim comes first
    con = turso_dbapi.connect(path)
    after = sync_meta.load(path)
    assert not after.bootstrapping
    assert (after.client_unique_id == before.client_unique_id) is finished  # afresh, or kept
    assert state(con) == (0, ROWS)
    con.execute("INSERT INTO mine(pad) VALUES (x'01')")
    con.commit()
    assert con.stats().pending_changes == 1  # captured
    con.push()
    assert [[int(n)] for (n,) in turso_server.db_sql("SELECT count(*) FROM mine")] == [[1]]
    con.close()
