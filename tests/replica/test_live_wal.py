"""Live databases over plain HTTP: db + -wal read as SQLite reads them, followed by pull().

Real nginx (tests/support/nginx.py) serves a WAL-mode database that a stdlib sqlite3
writer keeps open (tests/support/_live_db.py). Request counts come from nginx's access
log; the proof they check is in turso_dbapi/sources/live.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

import turso_dbapi
from turso_dbapi.errors import RemoteChangedError

from support._live_db import LiveDb


class Log:
    """nginx access-log lines from now on."""

    def __init__(self, nginx):
        self.nginx = nginx
        self.start = len(nginx.access_log_lines())

    def lines(self):
        return self.nginx.access_log_lines()[self.start:]

    def mark(self):
        self.start = len(self.nginx.access_log_lines())


def body_bytes(line: str) -> int:
    return int(line.rsplit("bytes=", 1)[1])


@pytest.fixture
def live(nginx, request):
    db = LiveDb(nginx, f"live-{request.node.name[:40]}.db")
    yield db
    db.close()


def connect(db, tmp_path, **kw):
    kw.setdefault("partial", True)
    return turso_dbapi.connect(db.url, local_path=str(tmp_path / "cache.db"), **kw)


@pytest.mark.parametrize("partial", [True, False])
def test_stale_read_case_returns_the_wal_rows(live, tmp_path, partial):
    # issue 12: 1000 rows checkpointed, 500 committed in the WAL; sqlite3 sees 1500
    assert live.count() == 1500 and live.wal_size() > 0
    live.settle()
    log = Log(live.nginx)
    con = connect(live, tmp_path, partial=partial)
    assert con.execute("select count(*) from t").fetchone() == (1500,)
    assert con.execute("select max(id) from t").fetchone() == (1500,)
    lines = log.lines()
    # the open, the whole WAL, the open's block again with If-Match (S1-S3); the 500 rows
    # are WAL pages; the open reads page 1 only (issue 13), so partial=True then reads the
    # table's root and two scan windows of the 69 KiB database, each confirmed by the WAL
    # after it (partial=False reads the header first, then the rest in one download request)
    assert [line.split(" range=")[0] for line in lines[:3]] == [
        f"GET /{live.name}", f"GET /{live.name}-wal", f"GET /{live.name}"]
    assert "range=bytes=0-4095 " in lines[0] and "range=bytes=0-4095 " in lines[2]  # one cacheable block
    assert body_bytes(lines[1]) == live.wal_size()
    # (partial=False: its download is a database read, confirmed by the WAL after it)
    assert con.stats().requests == len(lines) == (3 + 3 * 2 if partial else 5)
    con.close()


def test_pull_after_commits_fetches_only_the_new_wal_bytes(live, tmp_path):
    live.settle()
    con = connect(live, tmp_path)
    assert con.execute("select count(*) from t").fetchone() == (1500,)
    before_wal = live.wal_size()
    live.insert(200, per_commit=50)
    grown = live.wal_size() - before_wal
    log = Log(live.nginx)
    requests = con.stats().requests
    assert con.pull() is True
    lines = log.lines()
    assert len(lines) == 1 and con.stats().requests == requests + 1
    # the header's 4 KiB block and a 64 KiB window from the 4 KiB boundary below the last
    # frame we had (the 200 rows fit in it), as aligned blocks (wal_reader (5): cacheable)
    floor = before_wal // 4096 * 4096
    window = [(floor, floor + 4095), (floor + 4096, floor + 8191), (49152, 65535), (65536, 81919),
              (81920, 98303), (98304, 102399), (102400, 106495)]
    assert 40960 <= floor < 45056  # the blocks above are those of this WAL's size
    spec = ",".join(f"{a}-{b}" for a, b in [(0, 4095)] + window)
    assert f"GET /{live.name}-wal range=bytes={spec} status=206" in lines[0]
    # the new frames, the header's block, the part of the window's first block we had, and
    # the multipart framing (about 100 bytes a part)
    known = 4096 + before_wal - floor
    assert grown + known <= body_bytes(lines[0]) <= grown + known + 8 * 120
    log.mark()
    assert con.execute("select count(*), max(id) from t").fetchone() == (1700, 1700)
    assert log.lines() == []  # every changed page came with the frames
    assert con.pull() is False  # nothing new: one request, the header and nothing else
    assert len(log.lines()) == 1
    con.close()


def test_pull_sees_a_checkpoint_and_a_restarted_wal(live, tmp_path):
    live.settle()
    con = connect(live, tmp_path)
    assert con.execute("select count(*) from t").fetchone() == (1500,)
    live.insert(10)
    assert live.checkpoint("RESTART")[0] == 0
    live.insert(7)  # the first commit after RESTART starts a new generation (salt-1 + 1)
    live.settle()
    log = Log(live.nginx)
    assert con.pull() is True
    lines = [line.split(" status")[0] for line in log.lines()]
    # the tail read sees another header; then S1-S3 again (open, whole WAL, If-Match byte)
    assert f"GET /{live.name}-wal range=bytes=0-4095," in lines[0]
    assert [line.split(" range=")[0] for line in lines[1:]] == [
        f"GET /{live.name}", f"GET /{live.name}-wal", f"GET /{live.name}"]
    assert con.execute("select count(*), max(id) from t").fetchone() == (1517, 1517)
    con.close()


def test_pull_after_truncate_checkpoint_reads_the_file_alone(live, tmp_path):
    live.settle()
    con = connect(live, tmp_path)
    live.insert(5)
    live.checkpoint("TRUNCATE")  # the WAL is now empty: the file holds everything
    live.settle()
    assert live.wal_size() == 0
    assert con.pull() is True
    assert con.execute("select count(*) from t").fetchone() == (1505,)
    con.close()


def test_a_checkpoint_between_reads_is_never_mixed(live, tmp_path):
    # small segments: every page of the table is its own miss
    live.insert(3000)
    live.checkpoint("TRUNCATE")
    live.insert(10)
    live.settle()
    con = connect(live, tmp_path, segment_size=4096)
    cur = con.cursor()
    cur.execute("begin")
    assert cur.execute("select v from t where id = 1").fetchone() is not None
    # the writer commits and checkpoints everything: the file's pages move under us
    live.conn.execute("update t set v = 'changed'")
    live.checkpoint("TRUNCATE")
    with pytest.raises(RemoteChangedError, match="changed during this read transaction"):
        cur.execute("select count(*), min(v), max(v) from t").fetchone()
    if con.in_transaction:  # SQLite may have rolled back after the I/O error already
        cur.execute("rollback")
    # the next transaction takes the new snapshot by itself (no pull() call)
    assert con.execute("select count(*), min(v), max(v) from t").fetchone() == (4510, "changed", "changed")
    con.close()


def test_wal_absent_costs_one_request_until_pull(nginx, tmp_path):
    # an S3-style upload of a WAL-mode database without its -wal
    src = tmp_path / "src.db"
    w = sqlite3.connect(src)
    w.execute("pragma journal_mode=wal")
    w.execute("create table t(x)")
    w.executemany("insert into t values (?)", [(i,) for i in range(2000)])
    w.commit()
    w.execute("pragma wal_checkpoint(truncate)")
    data = src.read_bytes()
    w.close()
    assert data[18:20] == b"\x02\x02"
    nginx.place("nowal.db", data)
    log = Log(nginx)
    con = turso_dbapi.connect(nginx.url("nowal.db"), partial=True, local_path=str(tmp_path / "c.db"),
                              segment_size=4096)
    assert con.execute("select count(*) from t").fetchone() == (2000,)
    wal_lines = [line for line in log.lines() if "-wal" in line]
    assert len(wal_lines) == 1 and "status=404" in wal_lines[0]
    assert len(log.lines()) > 3  # page misses happened, none of them asked for the WAL
    log.mark()
    assert con.pull() is False  # the database again and one WAL probe
    assert [line.split(" range=")[0] for line in log.lines()] == ["GET /nowal.db", "GET /nowal.db-wal"]
    con.close()


def test_pull_of_a_plain_file_repins_to_the_new_version(nginx, tmp_path):
    def version(n):
        src = tmp_path / f"v{n}.db"
        w = sqlite3.connect(src)
        w.execute("create table t(x)")
        w.executemany("insert into t values (?)", [(i,) for i in range(n)])
        w.commit()
        w.close()
        return src.read_bytes()

    nginx.place("plain.db", version(5000))
    con = turso_dbapi.connect(nginx.url("plain.db"), partial=True, local_path=str(tmp_path / "c.db"),
                              segment_size=4096)
    assert con.execute("select x from t limit 1").fetchone() == (0,)
    log = Log(nginx)
    assert con.pull() is False
    assert len(log.lines()) == 1  # the open request again: same validator
    nginx.place("plain.db", version(3000))
    with pytest.raises(RemoteChangedError):  # a change seen mid-read is still an error
        con.execute("select sum(x) from t").fetchone()
    log.mark()
    assert con.pull() is True
    assert len(log.lines()) == 1  # rollback-journal database: no WAL request at all
    assert con.execute("select count(*), sum(x) from t").fetchone() == (3000, sum(range(3000)))
    assert con.stats().version.startswith("etag=")
    con.close()


def test_follow_pulls_at_the_start_of_a_read_transaction(live, tmp_path):
    live.settle()
    con = connect(live, tmp_path, follow=0)
    assert con.execute("select count(*) from t").fetchone() == (1500,)
    live.insert(3)
    assert con.execute("select count(*) from t").fetchone() == (1503,)  # no pull() call
    with con:  # inside a transaction the snapshot holds still
        con.execute("begin")
        assert con.execute("select count(*) from t").fetchone() == (1503,)
        live.insert(1)
        assert con.execute("select count(*) from t").fetchone() == (1503,)
    assert con.execute("select count(*) from t").fetchone() == (1504,)
    con.close()
    slow = turso_dbapi.connect(live.url + "?follow=3600000", partial=True, local_path=str(tmp_path / "s.db"))
    n = slow.execute("select count(*) from t").fetchone()[0]
    live.insert(1)
    log = Log(live.nginx)
    assert slow.execute("select count(*) from t").fetchone()[0] == n  # not due: no request
    assert log.lines() == []
    assert slow.pull() is True and slow.execute("select count(*) from t").fetchone()[0] == n + 1
    slow.close()


def test_torn_and_uncommitted_frames_are_ignored(live, tmp_path):
    live.settle()
    wal = open(live.wal_path, "rb").read()
    ps = 4096
    frame = 24 + ps
    committed = len(wal)
    # a transaction being written: its first frame is whole but not a commit frame, the
    # next one torn in the middle
    live.conn.execute("begin")
    live.conn.executemany("insert into t(v) values (?)", [("w" * 50,)] * 200)
    live.conn.execute("commit")
    grown = open(live.wal_path, "rb").read()
    assert len(grown) >= committed + 2 * frame
    first_new = grown[committed:committed + frame]
    assert int.from_bytes(first_new[4:8], "big") == 0  # not a commit frame
    with open(live.wal_path, "wb") as f:  # what nginx may serve mid-write
        f.write(grown[:committed] + first_new + grown[committed + frame:committed + frame + 100])
    con = connect(live, tmp_path)
    assert con.execute("select count(*) from t").fetchone() == (1500,)
    with open(live.wal_path, "wb") as f:
        f.write(grown)
    assert con.pull() is True
    assert con.execute("select count(*) from t").fetchone() == (1700,)
    con.close()


def test_a_wal_restarted_while_read_is_read_again(live, tmp_path):
    # frames of the NEXT generation (salt-1 + 1) after a prefix of this one: the writer
    # restarted the WAL while nginx streamed it; the snapshot is retried, then refused
    wal = bytearray(open(live.wal_path, "rb").read())
    frame = 24 + 4096
    third = 32 + 2 * frame
    salt1 = int.from_bytes(wal[16:20], "big")
    wal[third + 8:third + 12] = ((salt1 + 1) & 0xFFFFFFFF).to_bytes(4, "big")
    live.nginx.place("restarting.db", live.path.read_bytes())
    live.nginx.place("restarting.db-wal", bytes(wal))
    log = Log(live.nginx)
    with pytest.raises(RemoteChangedError, match="kept restarting its WAL"):
        turso_dbapi.connect(live.nginx.url("restarting.db"), partial=True, local_path=str(tmp_path / "r.db"))
    assert len([line for line in log.lines() if "-wal" in line]) == 4
    # salt-2 alone differs (an older generation's leftovers): the prefix is the state
    wal[third + 8:third + 12] = salt1.to_bytes(4, "big")
    wal[third + 12:third + 16] = b"\x00\x00\x00\x01"
    live.nginx.place("restarting.db-wal", bytes(wal))
    con = turso_dbapi.connect(live.nginx.url("restarting.db"), partial=True, local_path=str(tmp_path / "r2.db"))
    assert con.execute("select count(*) from t").fetchone()[0] < 1500  # the frames before
    con.close()


def test_fault_proxy_on_wal_requests(live, tmp_path, fault_proxy):
    live.settle()
    is_wal = lambda req: "-wal" in req.path  # noqa: E731
    fault_proxy.inject("truncate", when=is_wal, times=1)
    con = turso_dbapi.connect(fault_proxy.url(live.name), partial=True, local_path=str(tmp_path / "c.db"))
    assert con.execute("select count(*) from t").fetchone() == (1500,)
    assert con.stats().retries == 1  # the short WAL body was read again
    live.insert(5)
    # a server that answers the multi-range tail read with the whole file: single ranges
    # instead, from then on: the header's block and the 64 KiB block holding the WAL's end,
    # here one and the same (a WAL under 64 KiB): one request (wal_reader (5))
    assert live.wal_size() < 65536
    fault_proxy.clear()
    fault_proxy.inject("full200", when=is_wal, times=1)
    assert con.pull() is True
    assert [r.status for r in fault_proxy.records] == [200, 206]
    assert fault_proxy.records[1].range == "bytes=0-65535"
    assert con.execute("select count(*) from t").fetchone() == (1505,)
    live.insert(1)
    fault_proxy.clear()
    assert con.pull() is True and len(fault_proxy.records) == 1
    # 200 for a single range: an error that names the problem, nothing changed
    live.insert(1)
    fault_proxy.clear()
    fault_proxy.inject("full200", when=is_wal, times=None)
    with pytest.raises(turso_dbapi.OperationalError, match="ignored the Range header"):
        con.pull()
    assert con.execute("select count(*) from t").fetchone() == (1506,)
    fault_proxy.clear_faults()
    assert con.pull() is True and con.execute("select count(*) from t").fetchone() == (1507,)
    con.close()


def test_shell_pull(live, tmp_path):
    live.settle()
    script = ".pull\nselect count(*) from t;\n"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "turso_dbapi", live.url, "--partial"], input=script,
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "already up to date" in out.stdout and "1500" in out.stdout


def test_the_reference_server_image_has_no_wal_beside_it(turso_server_factory, tmp_path):
    # the reference server serves one whole revision at its file's name and 404 elsewhere;
    # its page 1 says WAL mode (the server's file is), so the client asks for the WAL once:
    # 404, then never
    def setup(path):
        w = sqlite3.connect(path)
        w.execute("pragma journal_mode=wal")
        w.execute("create table t(x)")
        w.executemany("insert into t values (?)", [(i,) for i in range(3000)])
        w.commit()
        w.close()

    srv = turso_server_factory(setup=setup)
    con = turso_dbapi.connect(srv.file_url, partial=True, local_path=str(tmp_path / "c.db"),
                              segment_size=4096, protocol="range")
    assert con.execute("select count(*), sum(x) from t").fetchone() == (3000, sum(range(3000)))
    assert con._replica.source.wal_absent
    assert con.stats().requests >= 3  # misses came, none of them for the WAL again
    requests = con.stats().requests
    assert con.pull() is False
    assert con.stats().requests == requests + 2  # the database again, one WAL probe
    con.close()


def test_a_restart_keeps_the_pages_the_old_frames_prove_unchanged(live, tmp_path):
    # W3/P2: after ONE restart the old generation's frames we never saw are still in the WAL
    # file past the (shorter) new generation: only their pages and the new ones are dropped
    live.insert(3000)
    live.checkpoint("TRUNCATE")
    live.insert(200, per_commit=20)  # ten commits: the WAL we see is longer than the next one
    live.settle()
    con = connect(live, tmp_path)
    assert con.execute("select count(*), sum(length(v)) from t").fetchone()[0] == 4700  # all cached
    live.conn.execute("update t set v = 'unseen' where id in (1, 2000, 4000)")  # frames we never see
    assert live.checkpoint("RESTART")[0] == 0
    live.insert(1)  # the new generation: one short commit
    live.settle()
    size = os.path.getsize(live.path)
    assert con.pull() is True
    log = Log(live.nginx)
    assert con.execute("select count(*), sum(v = 'unseen') from t").fetchone() == (4701, 3)
    refetched = sum(body_bytes(line) for line in log.lines() if "-wal " not in line)
    assert refetched < size / 10  # the pages of the 3 rows (and their segments), not the table
    con.close()


def test_more_than_one_restart_drops_the_cache(live, tmp_path):
    live.insert(3000)
    live.checkpoint("TRUNCATE")
    live.insert(10)
    live.settle()
    con = connect(live, tmp_path)
    assert con.execute("select count(*) from t").fetchone() == (4510,)
    for _ in range(2):  # two generations pass: the first one's frames cannot be known
        live.insert(1)
        assert live.checkpoint("RESTART")[0] == 0
    live.insert(1)
    live.settle()
    size = os.path.getsize(live.path)
    assert con.pull() is True
    log = Log(live.nginx)
    assert con.execute("select count(*), sum(length(v)) from t").fetchone()[0] == 4513
    assert sum(body_bytes(line) for line in log.lines() if "-wal " not in line) > size / 2  # again
    con.close()


def test_a_restarted_wal_s_leftovers_are_not_downloaded_again(live, tmp_path):
    live.insert(3000, per_commit=100)  # a WAL of about 40 frames, then RESTART: leftovers stay
    assert live.checkpoint("RESTART")[0] == 0
    live.insert(1)
    live.settle()
    assert live.wal_size() > 100 * 1024
    con = connect(live, tmp_path)
    assert con.execute("select count(*) from t").fetchone() == (4501,)
    log = Log(live.nginx)
    assert con.pull() is False
    (line,) = log.lines()
    assert body_bytes(line) < 70 * 1024  # the header's block and one window, not the old frames
    live.insert(2000, per_commit=2000)  # a commit larger than the window: two requests
    log.mark()
    assert con.pull() is True
    assert len(log.lines()) == 2
    assert con.execute("select count(*) from t").fetchone() == (6501,)
    con.close()


def test_a_live_connection_keeps_its_lock_between_statements_and_pulls_still_switch(live, tmp_path):
    """replica/live.py (X): SQLite's per-transaction lock, hot-journal check and change
    counter read are skipped between pulls (locking_mode=EXCLUSIVE); a pull lets go of the
    lock, switches, and takes it back, and the next statement sees the new state."""
    import threading

    from turso_dbapi.storage.vfs import replica_uri

    live.settle()
    con = connect(live, tmp_path)
    assert con.execute("select count(*) from t").fetchone() == (1500,)
    replica = con._replica
    other = sqlite3.connect(replica_uri(replica.store.path, replica.conn_id), uri=True, timeout=0,
                            isolation_level=None, check_same_thread=False)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN EXCLUSIVE")  # held between statements (without (X): free)
    live.insert(20)
    errors = []
    worker = threading.Thread(target=lambda: errors.append(pytest.raises(
        turso_dbapi.OperationalError, con.pull).value))
    worker.start()
    worker.join()
    assert errors and "own thread" in str(errors[0]) and "Nothing was changed" in str(errors[0])
    assert con.execute("select count(*) from t").fetchone() == (1500,)  # nothing changed
    assert con.pull() is True
    assert con.execute("select count(*), max(id) from t").fetchone() == (1520, 1520)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN EXCLUSIVE")  # held again after the pull
    con.close()
    other.execute("BEGIN EXCLUSIVE")  # closed: the lock went with it
    other.execute("ROLLBACK")
    other.close()
