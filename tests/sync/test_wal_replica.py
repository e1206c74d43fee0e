"""WAL replicas (issue 17): PRAGMA journal_mode=WAL switches a Turso replica to WAL, and a
pull commits into the WAL (sync/wal_apply.py, _native/wal_index.c): readers keep their
snapshot, new read transactions see the new revision, local changes are replayed,
checkpoints put pulled pages in the synced layer and local ones in the local layer."""

from __future__ import annotations

import os
import sqlite3
import struct

import pytest

import turso_dbapi
from support import tail_cases
from turso_dbapi.storage import wal_writer
from turso_dbapi.storage.pagestore import PG_LOCAL, PG_SYNCED
from turso_dbapi.storage.wal_index import WalIndex


def rows_table(server, n=300):
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, x BLOB)")
    server.db_sql(f"INSERT INTO t SELECT value, 0, randomblob(1024) FROM generate_series(1, {n})")


def wal_replica(server, tmp_path, n=300, **kw):
    rows_table(server, n)
    conn = turso_dbapi.connect(server.url, local_path=str(tmp_path / "r.db"), **kw)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchall() == [("wal",)]
    return conn


def shm_header(conn):
    """(mxFrame, nPage, nBackfill) of the wal-index, through the connection (never by
    opening -shm: closing that descriptor would drop this process's locks on it)."""
    st = wal_writer.read_state(conn)
    return st.mx_frame, st.n_page, st.n_backfill


def test_the_app_start_case_returns_wal_and_it_sticks(turso_server, tmp_path):
    conn = wal_replica(turso_server, tmp_path, 10)
    path = str(tmp_path / "r.db")
    conn.execute("SELECT COUNT(*) FROM t").fetchall()
    assert os.path.exists(path + "-wal") and os.path.exists(path + "-shm")
    conn.close()
    again = turso_dbapi.connect(path)
    assert again.execute("PRAGMA journal_mode").fetchall() == [("wal",)]


def test_a_pull_commits_into_the_wal_and_readers_keep_their_snapshot(turso_server, tmp_path):
    conn = wal_replica(turso_server, tmp_path, 30)
    path = str(tmp_path / "r.db")
    reader = turso_dbapi.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT MIN(v), MAX(v), COUNT(*) FROM t").fetchall() == [(0, 0, 30)]
    turso_server.db_sql("UPDATE t SET v = v + 1")
    turso_server.db_sql("INSERT INTO t SELECT value, 1, randomblob(1024) FROM generate_series(31, 60)")
    mx_before = shm_header(conn)[0]
    assert conn.pull() is True  # no wait for the open read transaction
    mx_after, n_page, _ = shm_header(conn)
    assert mx_after > mx_before
    # the open read transaction still sees its snapshot, the next one the new revision
    assert reader.execute("SELECT MIN(v), MAX(v), COUNT(*) FROM t").fetchall() == [(0, 0, 30)]
    reader.execute("COMMIT")
    assert reader.execute("SELECT MIN(v), MAX(v), COUNT(*) FROM t").fetchall() == [(1, 1, 60)]
    assert conn.execute("SELECT MIN(v), MAX(v), COUNT(*) FROM t").fetchall() == [(1, 1, 60)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA page_count").fetchone()[0] == n_page
    assert conn.stats().revision == turso_server.revision


def wal_frames(path):
    """(page, commit size) of every committed frame of ``path``-wal, in order (read from the
    -wal as SQLite's recovery would: salts and checksums), and the WAL's salts."""
    with open(path + "-wal", "rb") as f:
        wal = WalIndex.from_bytes(f.read())
    return [struct.unpack_from(">II", wal.data, i * wal.frame_size) for i in range(wal.frames)], wal.salts


def test_a_pull_with_local_changes_is_exactly_one_commit_frame(turso_server, tmp_path):
    conn = wal_replica(turso_server, tmp_path, 60)
    path = str(tmp_path / "r.db")
    conn.execute("UPDATE t SET v = 5 WHERE id = 3")
    conn.execute("INSERT INTO t VALUES (1000, 6, x'01')")
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 1 WHERE id > 10")
    before, salts = wal_frames(path)
    assert conn.pull() is True
    after, salts_after = wal_frames(path)
    assert salts_after == salts and after[:len(before)] == before  # appended to the same WAL
    new = after[len(before):]
    assert [i for i, (_, size) in enumerate(new) if size] == [len(new) - 1]  # ONE commit frame
    # the synced pages are listed, then the replayed ones follow in the same commit (page 1
    # and the pages the replay rewrote come twice: synced version first, the later one wins)
    listed = wal_writer.SyncedFrames.load(path)
    mine = [e for e in listed.entries if e[0] > len(before)]
    assert [e[0] for e in mine] == list(range(len(before) + 1, len(before) + 1 + len(mine)))
    assert 0 < len(mine) < len(new)
    pages = [p for p, _ in new]
    assert pages.count(1) == 2 and pages[len(mine):] == sorted(pages[len(mine):])
    assert conn.execute("SELECT id, v FROM t WHERE id IN (3, 11, 1000) ORDER BY id").fetchall() == [
        (3, 5), (11, 1), (1000, 6)]
    assert conn.stats().pending_changes == 2  # the log is the replay's: both rows, unpushed
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_local_changes_are_replayed_on_the_new_revision(turso_server, tmp_path):
    conn = wal_replica(turso_server, tmp_path, 10)
    conn.execute("INSERT INTO t VALUES (1000, 5, x'00')")
    conn.execute("UPDATE t SET v = 9 WHERE id = 2")
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 1")
    assert conn.pull() is True
    assert conn.execute("SELECT id, v FROM t WHERE id IN (1, 2, 1000) ORDER BY id").fetchall() == [
        (1, 1), (2, 9), (1000, 5)]
    assert conn.stats().pending_changes == 2
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.push()
    assert turso_server.db_sql("SELECT id, v FROM t WHERE id IN (2, 1000) ORDER BY id") == [["2", "9"], ["1000", "5"]]
    assert conn.pull() is True
    assert conn.execute("SELECT id, v FROM t WHERE id IN (1, 2, 1000) ORDER BY id").fetchall() == [
        (1, 1), (2, 9), (1000, 5)]
    assert conn.stats().pending_changes == 0


@pytest.mark.parametrize("mode", ["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
def test_checkpoints_put_pulled_pages_in_the_synced_layer_and_local_ones_in_the_local(
        turso_server, tmp_path, mode):
    conn = wal_replica(turso_server, tmp_path, 60)
    store = conn._replica.store
    turso_server.db_sql("UPDATE t SET v = 7 WHERE id <= 20")
    assert conn.pull() is True
    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
    pulled = set()
    for p in range(2, store.remote_pages + 1):
        if store.state(p) & PG_SYNCED and not store.state(p) & PG_LOCAL:
            pulled.add(p)
    local = [p for p in range(2, store.remote_pages + 1) if store.state(p) & PG_LOCAL]
    # the table's leaves the server changed are synced pages now, never local changes
    leaves = {r[0] for r in conn.execute(
        "SELECT DISTINCT pageno FROM dbstat WHERE name = 't' AND pagetype = 'leaf'")} if _has_dbstat(conn) else set()
    assert not (leaves & set(local)) or not leaves
    conn.execute("UPDATE t SET v = 8 WHERE id = 50")
    conn.commit()
    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
    assert any(store.state(p) & PG_LOCAL for p in range(2, store.logical_size // 4096 + 1))
    assert conn.execute("SELECT COUNT(*) FROM t WHERE v = 7").fetchone() == (20,)
    assert conn.execute("SELECT v FROM t WHERE id = 50").fetchone() == (8,)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    turso_server.db_sql("UPDATE t SET v = 9 WHERE id > 55")
    assert conn.pull() is True
    assert conn.execute("SELECT v FROM t WHERE id IN (50, 56) ORDER BY id").fetchall() == [(8,), (9,)]
    del pulled


def _has_dbstat(conn):
    try:
        conn.execute("SELECT 1 FROM dbstat LIMIT 1").fetchall()
        return True
    except sqlite3.Error:
        return False


def test_a_partial_replica_reader_on_an_old_snapshot_reads_never_fetched_pages_as_of_its_snapshot(
        turso_server, tmp_path):
    conn = wal_replica(turso_server, tmp_path, 300, partial=True)
    path = str(tmp_path / "r.db")
    store = conn._replica.store
    reader = turso_dbapi.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT v FROM t WHERE id = 1").fetchall() == [(0,)]  # a few pages only
    absent = [p for p in range(1, store.remote_pages + 1) if not store.is_present(p)]
    assert len(absent) > 50  # most of the table was never fetched
    turso_server.db_sql("UPDATE t SET v = v + 1")  # every leaf changes
    assert conn.pull() is True
    # pages this snapshot never read are fetched now: as of ITS revision, never the new one
    assert reader.execute("SELECT MIN(v), MAX(v), COUNT(*) FROM t").fetchall() == [(0, 0, 300)]
    reader.execute("COMMIT")
    assert reader.execute("SELECT MIN(v), MAX(v), COUNT(*) FROM t").fetchall() == [(1, 1, 300)]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    assert conn.execute("SELECT MIN(v), MAX(v), COUNT(*) FROM t").fetchall() == [(1, 1, 300)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    turso_server.db_sql("UPDATE t SET v = v + 1 WHERE id > 150")
    assert conn.pull() is True
    assert conn.execute("SELECT MIN(v), MAX(v) FROM t").fetchall() == [(1, 2)]


def test_stats_report_the_wal_size(turso_server, tmp_path):
    conn = wal_replica(turso_server, tmp_path, 10)
    conn.execute("INSERT INTO t VALUES (1000, 5, x'00')")
    conn.commit()
    assert conn.stats().main_wal_size == os.path.getsize(str(tmp_path / "r.db") + "-wal") > 0


@pytest.mark.parametrize("mode", ["none", "PASSIVE", "TRUNCATE"])
def test_a_checkpoint_keeps_the_synced_version_of_a_page_a_local_frame_shadows(turso_server, tmp_path, mode):
    # the pull's frame of a leaf and the replay's frame of the same leaf are in the WAL; the
    # checkpoint writes only the last (local) one: the synced layer must still get the pulled
    # version, or the next pull reverts that leaf to the revision before (wal_index.c rule (9))
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    turso_server.db_sql("INSERT INTO t SELECT value, 0 FROM generate_series(1, 3000)")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    assert conn.execute("PRAGMA journal_mode=WAL").fetchall() == [("wal",)]
    other = turso_dbapi.connect(str(tmp_path / "r.db"))
    other.execute("SELECT 1 FROM t").fetchall()  # holds the WAL open: no checkpoint at closes
    conn.execute("UPDATE t SET v = 5 WHERE id = 2")  # a local change in the leaf of id 1
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 1 WHERE id = 1")
    assert conn.pull() is True
    if mode != "none":
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
    else:
        assert shm_header(conn)[2] == 0  # nothing backfilled: both frames in the WAL
    turso_server.db_sql("UPDATE t SET v = 7 WHERE id = 3000")  # another leaf
    assert conn.pull() is True
    assert conn.execute("SELECT id, v FROM t WHERE id IN (1, 2, 3000) ORDER BY id").fetchall() == [
        (1, 1), (2, 5), (3000, 7)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_on_conflict_decides_on_a_wal_replica(turso_server, tmp_path):
    conn = wal_replica(turso_server, tmp_path, 300)
    conn.execute("UPDATE t SET v = 1 WHERE id IN (10, 150, 290)")  # 150: only local changes it
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 2 WHERE id IN (10, 290)")
    seen = []

    def decide(c):
        seen.append((c.table, c.key, c.local["v"], c.server["v"]))
        return "server" if c.key == (10,) else dict(c.local, v=c.local["v"] + c.server["v"])

    assert conn.pull(on_conflict=decide) is True
    assert sorted(seen) == [("t", (10,), 1, 2), ("t", (290,), 1, 2)]
    assert dict(conn.execute("SELECT id, v FROM t WHERE id IN (10, 150, 290)").fetchall()) == {
        10: 2, 150: 1, 290: 3}


def test_a_partial_wal_replica_grows_locally_and_follows_a_server_that_shrinks(turso_server, tmp_path):
    rows_table(turso_server, 600)
    turso_server.db_sql("CREATE INDEX t_v ON t(v)")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "p.db"), partial=True,
                               bootstrap_prefix=16 * 1024, segment_size=4096)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchall() == [("wal",)]
    conn.execute("UPDATE t SET x = x'ff' WHERE id = 500")
    conn.execute("INSERT INTO t VALUES (5000, 9, zeroblob(3000))")  # grows the file locally
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = id % 7 WHERE id > 550")
    assert conn.pull() is True
    assert conn.execute("SELECT v, length(x) FROM t WHERE id IN (500, 5000, 600) ORDER BY id").fetchall() == [
        (0, 1), (600 % 7, 1024), (9, 3000)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
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
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    turso_server.db_sql("UPDATE t SET v = 3 WHERE id < 10")
    assert conn.pull() is True
    assert conn.execute("SELECT COUNT(*), SUM(v = 3 AND id < 10), SUM(v = 77) FROM t").fetchall() == [(60, 8, 1)]


class _Crash(Exception):
    pass


def test_an_older_versions_interrupted_two_commit_apply_is_redone_as_one_commit_before_anyone_reads(
        turso_server, tmp_path, monkeypatch):
    # What an older version's crash left: the local changes in the published replay file,
    # pending_pull without the one-commit marker, the apply flag set; the WAL may hold
    # anything from "nothing appended" to "pulled pages committed, replay not". The first
    # read transaction (vfs.c rule (19)) redoes it, as one commit.
    from turso_dbapi.storage.apply_flag import ApplyFlag
    from turso_dbapi.sync import internal, metadata as sync_meta, rebase, wal_apply

    conn = wal_replica(turso_server, tmp_path, 60)
    path = str(tmp_path / "r.db")
    reader = turso_dbapi.connect(path, isolation_level=None)
    conn.execute("UPDATE t SET v = 5 WHERE id = 3")
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 1 WHERE id > 10")

    def older_apply(store, replica, conn_id, display_url, staged, timeout, on_conflict, lock_error):
        ic = internal.connect(replica, conn_id)
        ic.execute("BEGIN IMMEDIATE")
        rebase.extract(ic, replica, store, display_url)
        meta = sync_meta.load(replica)
        meta.pending_pull = {"revision": staged.revision, "db_size": staged.db_size, "rebase": True}
        sync_meta.save(replica, meta)
        ApplyFlag(store).set()
        ic.execute("ROLLBACK")
        ic.close()
        raise _Crash()

    monkeypatch.setattr(wal_apply, "apply_wal", older_apply)
    with pytest.raises(_Crash):
        conn.pull()
    monkeypatch.undo()
    before, _ = wal_frames(path)
    assert conn._replica.store.apply_flag()
    assert reader.execute("SELECT id, v FROM t WHERE id IN (3, 11) ORDER BY id").fetchall() == [(3, 5), (11, 1)]
    after, _ = wal_frames(path)
    new = after[len(before):]
    assert [i for i, (_, size) in enumerate(new) if size] == [len(new) - 1]
    assert not conn._replica.store.apply_flag() and sync_meta.load(path).pending_pull is None
    assert not os.path.exists(path + "-tdbreplay")
    assert conn.stats().pending_changes == 1
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    reader.close()


@pytest.mark.parametrize("concurrent", ["row", "ddl", "tail-insert", "tail-delete"])
def test_a_local_commit_during_the_side_replay_is_caught_up_in_the_same_commit(
        turso_server, tmp_path, monkeypatch, concurrent):
    # A writer commits after the replay was built off to the side, before the pull's lock:
    # its changes are replayed on the side view (one build, one commit) - logged row changes,
    # and rows inserted into a table's unlogged tail (tail.py); a schema change, or a tail
    # row deleted (no log says so), cannot be caught up that way: the replay is built again.
    conn = wal_replica(turso_server, tmp_path, 60)
    path = str(tmp_path / "r.db")
    writer = turso_dbapi.connect(path)
    conn.execute("CREATE TABLE here(n INTEGER PRIMARY KEY, s TEXT)")
    conn.executemany("INSERT INTO here VALUES (?, ?)", [(i, f"a{i}") for i in range(1, 6)])
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 2 WHERE id = 1")
    assert conn.pull() is True  # its replay gave the table created here triggers and a tail
    conn.execute("UPDATE t SET v = 5 WHERE id = 3")
    conn.execute("INSERT INTO here VALUES (7, 'a7')")  # above its frontier: a tail row
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 1 WHERE id > 10")
    racing = ["UPDATE t SET v = 8 WHERE id IN (3, 12)",  # one the replay rewrote, one pulled
              "DELETE FROM t WHERE id = 4"]
    if concurrent == "ddl":
        racing.append("CREATE TABLE extra(a INTEGER PRIMARY KEY)")
    if concurrent.startswith("tail"):
        racing += ["INSERT INTO here VALUES (6, 'a6')", "UPDATE here SET s = 'b2' WHERE n = 2"]
    if concurrent == "tail-delete":  # a tail row the replay had: no log says it went
        racing.append("DELETE FROM here WHERE n = 7")
    builds = tail_cases.commit_after_first_side_replay(monkeypatch, writer, racing)
    before, _ = wal_frames(path)
    assert conn.pull() is True
    after, _ = wal_frames(path)
    assert len(builds) == (2 if concurrent in ("ddl", "tail-delete") else 1)
    new = after[len(before):]
    assert len([1 for _, size in new if size]) == 2  # the writer's commit, then the pull's one
    assert conn.execute("SELECT id, v FROM t WHERE id IN (3, 4, 11, 12) ORDER BY id").fetchall() == [
        (3, 8), (11, 1), (12, 8)]
    here = dict(conn.execute("SELECT n, s FROM here").fetchall())
    expected = {i: f"a{i}" for i in (1, 2, 3, 4, 5, 7)}
    if concurrent.startswith("tail"):
        expected.update({6: "a6", 2: "b2"})
    if concurrent == "tail-delete":
        del expected[7]
    assert here == expected
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.push()
    assert turso_server.db_sql("SELECT id, v FROM t WHERE id IN (3, 4, 12) ORDER BY id") == [["3", "8"], ["12", "8"]]
    assert {int(r[0]): r[1] for r in turso_server.db_sql("SELECT n, s FROM here")} == expected
    writer.close()


def test_a_connection_in_exclusive_locking_mode_makes_a_pull_fail_at_once_naming_it(turso_server, tmp_path):
    import time

    rows_table(turso_server, 20)
    path = str(tmp_path / "r.db")
    # a new replica is WAL; this connection reads nothing before the holder: a WAL-mode
    # connection that has read keeps a shared lock on the file, and the holder's first read
    # would then fail with "database is locked" (as on any WAL file, stdlib sqlite3 too)
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    holder = turso_dbapi.connect(path)
    assert holder.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall() == [("exclusive",)]
    holder.execute("SELECT COUNT(*) FROM t").fetchall()  # takes (and keeps) the file's lock
    turso_server.db_sql("UPDATE t SET v = 1")
    t0 = time.perf_counter()
    with pytest.raises(turso_dbapi.OperationalError, match=r"locking_mode=EXCLUSIVE \(this process\)"):
        conn.pull()
    assert time.perf_counter() - t0 < 3  # not the 5 s lock timeout
    assert not os.path.exists(path + "-tdbpull")  # the pull left no trace
    holder.close()
    assert conn.pull() is True
    assert conn.execute("SELECT MIN(v) FROM t").fetchone() == (1,)


def test_an_exclusive_holder_in_another_process_is_named_and_none_costs_no_proc_locks_read(
        turso_server, tmp_path, monkeypatch):
    """The probe of the store's descriptor (pagestore.c rule (23)) sees a holder of another
    process too; /proc/locks is read only then (for its PID), never on a pull nobody blocks."""
    import subprocess
    import sys

    from turso_dbapi.storage import file_locks

    rows_table(turso_server, 20)
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    reads = []
    real = file_locks.exclusive_holders
    monkeypatch.setattr(file_locks, "exclusive_holders", lambda p: reads.append(p) or real(p))
    turso_server.db_sql("UPDATE t SET v = 1")
    assert conn.pull() is True and reads == []  # nobody holds it: no /proc/locks read
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, turso_dbapi; c = turso_dbapi.connect(sys.argv[1]); "
         "c.execute('PRAGMA locking_mode=EXCLUSIVE'); c.execute('SELECT COUNT(*) FROM t').fetchall(); "
         "print('held', flush=True); sys.stdin.read()", path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        turso_server.db_sql("UPDATE t SET v = 2")
        with pytest.raises(turso_dbapi.OperationalError, match=rf"locking_mode=EXCLUSIVE \(process {holder.pid}\)"):
            conn.pull()
        assert reads  # asked for the PID
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert conn.pull() is True
    assert conn.execute("SELECT MIN(v) FROM t").fetchone() == (2,)


def test_a_wal_truncated_while_the_pull_reads_its_frames_makes_the_pull_plan_again(
        turso_server, tmp_path, monkeypatch):
    """Every frame checkpointed, the plan's read transaction ignores the WAL (SQLite's read
    lock 0), which does not keep another connection's TRUNCATE checkpoint from emptying it
    between the state the plan read and its frames: the plan sees a moved WAL and is built
    again (it used to fail: "shorter than its committed frames"; seen in a campaign)."""
    conn = wal_replica(turso_server, tmp_path, 60)
    path = str(tmp_path / "r.db")
    conn.execute("UPDATE t SET v = 3 WHERE id = 5")  # local frames in the WAL
    conn.commit()
    other = turso_dbapi.connect(path)
    other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # every frame backfilled
    turso_server.db_sql("UPDATE t SET v = 7 WHERE id = 50")
    real, truncated = wal_writer.read_state, []

    def read_then_truncate(c):
        state = real(c)
        if not truncated and state.mx_frame:
            assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
            truncated.append(state.mx_frame)
        return state

    monkeypatch.setattr(wal_writer, "read_state", read_then_truncate)
    assert conn.pull() is True
    assert truncated and os.path.getsize(path + "-wal") > 0  # emptied, then the pull's commit
    assert conn.execute("SELECT id, v FROM t WHERE id IN (5, 50) ORDER BY id").fetchall() == [(5, 3), (50, 7)]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    other.close()


def test_without_checkpoint_signals_pulled_pages_a_checkpoint_made_local_stay_right(turso_server, tmp_path, monkeypatch):
    # SQLite < 3.32 sends no SQLITE_FCNTL_CKPT_START: the VFS then classifies nothing and
    # every page a checkpoint writes is local (vfs.c rule (18)) - the very path it takes
    # when it cannot open -tdbwalsync, which is how this test makes SQLite's checkpoint
    # signal-less. The synced layer then still holds the OLD version of the pulled pages.
    from turso_dbapi.sync import wal_plan

    monkeypatch.setattr(wal_plan, "CKPT_SIGNALS", False)  # what the version check says there
    conn = wal_replica(turso_server, tmp_path, 60)
    path = str(tmp_path / "r.db")
    store = conn._replica.store
    conn.execute("UPDATE t SET v = 9 WHERE id = 60")
    conn.commit()
    turso_server.db_sql("UPDATE t SET v = 1 WHERE id <= 30")
    assert conn.pull() is True
    os.rename(path + "-tdbwalsync", path + ".hidden")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    assert shm_header(conn)[0] == 0  # every frame is in the database file (its local layer)
    local = [p for p in range(1, store.remote_pages + 1) if store.state(p) & PG_LOCAL]
    assert len(local) > 3
    turso_server.db_sql("UPDATE t SET v = 2 WHERE id > 50")
    assert conn.pull() is True
    assert conn.execute("SELECT v, COUNT(*) FROM t GROUP BY v ORDER BY v").fetchall() == [
        (0, 20), (1, 30), (2, 9), (9, 1)]  # rows 1-30 not back at 0; row 60: the local row wins
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.stats().pending_changes == 1
