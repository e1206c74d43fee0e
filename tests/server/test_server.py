"""Reference server contract (spec §2.6, §8): pull-updates semantics, time travel,
selectors, revisions from pipeline writes, ranged GET, auth, concurrency, CLI."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap
from support._proto_oracle import PullUpdatesRequestPB
from support.turso_server import rev_no

from turso_dbapi.protocol import roaring
from turso_dbapi.server import ReferenceServer
from turso_dbapi.server.sql_series import rewrite
from turso_dbapi.protocol.sync_wire import PullUpdatesRequest, parse_response

PAGE = 4096


def pull(server, **fields):
    r = server.pull_updates(PullUpdatesRequest(**fields).encode())
    assert r.status_code == 200, r.text
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert "Content-Encoding" not in r.headers
    header, pages = parse_response(r.content)
    ids = [p.page_id for p in pages]
    assert len(ids) == len(set(ids))
    return header, {p.page_id: p.encoded_page for p in pages}


def materialize(pages, db_size, base=None):
    """Apply pages onto ``base`` (bytes) and cut to db_size pages, like a client does."""
    buf = bytearray((base or b"").ljust(db_size * PAGE, b"\0")[: db_size * PAGE])
    for pid, data in pages.items():
        assert pid < db_size
        buf[pid * PAGE : (pid + 1) * PAGE] = data
    return bytes(buf)


def query(tmp_path, image, sql):
    path = tmp_path / f"img{random.randrange(1 << 30)}.db"
    path.write_bytes(image)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_empty_server(turso_server):
    r = turso_server.pull_updates(b"")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/protobuf"
    assert r.content == bytes.fromhex("07 0a 01 30 1a 00 40 01")  # rev "0", db_size 0, raw, PAGES
    header, pages = pull(turso_server, server_pages_selector=roaring.serialize(range(0, 32)))
    assert (header.server_revision, header.db_size, pages) == ("0", 0, {})
    turso_server.db_sql("SELECT 1")  # read-only: no new revision
    assert turso_server.revision == "0"
    assert requests.get(turso_server.url + "/").status_code == 404


def test_full_bootstrap_matches_file_and_pipeline_writes_make_revisions(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    assert rev_no(turso_server.revision) == 1
    turso_server.db_sql("INSERT INTO t SELECT value, randomblob(600) FROM generate_series(1, 300)")
    assert rev_no(turso_server.revision) == 2
    header, pages = pull(turso_server)
    assert header.server_revision == turso_server.revision and header.protocol == 1
    assert re.fullmatch(r"[0-9a-f]{16}-2", header.server_revision)  # the history id, then 2
    with open(turso_server.db_path, "rb") as f:
        data = f.read()
    assert header.db_size == len(data) // PAGE and sorted(pages) == list(range(header.db_size))
    assert materialize(pages, header.db_size) == data
    assert query(tmp_path, data, "SELECT count(*) FROM t") == [(300,)]


def test_time_travel_and_incremental_pulls(turso_server, tmp_path):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    srv.db_sql("INSERT INTO t SELECT value, randomblob(500) FROM generate_series(1, 400)")
    images = {}
    for step in range(8):
        h, pages = pull(srv)
        images[h.server_revision] = materialize(pages, h.db_size)
        if step == 3:
            srv.db_sql("DELETE FROM t WHERE id > 50")
            srv.db_sql("VACUUM")  # the database shrinks
        else:
            srv.db_sql(
                f"INSERT INTO t SELECT value + {1000 * (step + 1)}, randomblob(700) FROM generate_series(1, 60)"
            )
            srv.db_sql(f"UPDATE t SET x = randomblob(400) WHERE id % 7 = {step}")
    latest = srv.revision
    h, pages = pull(srv)
    images[latest] = materialize(pages, h.db_size)
    revs = sorted(images, key=rev_no)
    assert len(revs) == 9 and len({len(i) for i in images.values()}) > 2

    rng = random.Random(7)
    for rev in revs:
        image = images[rev]
        size = len(image) // PAGE
        # whole snapshot at an old revision
        h, pages = pull(srv, server_revision=rev)
        assert (h.server_revision, h.db_size) == (rev, size)
        assert materialize(pages, size) == image
        # random page sets (array containers), some beyond db_size: those are omitted
        ids = rng.sample(range(size + 20), 12)
        h, pages = pull(srv, server_revision=rev, server_pages_selector=roaring.serialize(ids))
        assert sorted(pages) == sorted(i for i in ids if i < size)
        assert all(pages[i] == image[i * PAGE : (i + 1) * PAGE] for i in pages)
        # a range (run container, cookie 12347)
        h, pages = pull(
            srv, server_revision=rev, server_pages_selector=BitMap(range(2, size + 5)).serialize()
        )
        assert sorted(pages) == list(range(2, size))
    # incremental: pages of (r_c, r_s] applied onto r_c give r_s exactly
    for rc, rs in [(revs[0], revs[-1]), (revs[2], revs[5]), (revs[4], revs[6]), (revs[3], revs[4])]:
        h, pages = pull(srv, client_revision=rc, server_revision=rs)
        assert materialize(pages, h.db_size, images[rc]) == images[rs]
    h, pages = pull(srv, client_revision=revs[5], server_revision=revs[6])
    assert 0 < len(pages) < h.db_size  # only what changed, not a resend
    h, pages = pull(srv, client_revision=latest)
    assert (h.server_revision, pages) == (latest, {})
    assert query(tmp_path, images[revs[4]], "SELECT count(*) FROM t") == [(50,)]


def test_selector_edge_cases(turso_server):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(3000) FROM generate_series(1, 20)")
    h, _ = pull(turso_server)
    size = h.db_size
    empty = bytes.fromhex("3a 30 00 00 00 00 00 00")  # prefix < 4096: selects nothing
    assert pull(turso_server, server_pages_selector=empty)[1] == {}
    far = roaring.serialize([size, size + 1, 1 << 20, (1 << 32) - 1])
    h2, pages = pull(turso_server, server_pages_selector=far)
    assert pages == {} and h2.db_size == size
    huge = BitMap()
    huge.add_range(0, 1 << 32)
    huge.run_optimize()
    assert sorted(pull(turso_server, server_pages_selector=huge.serialize())[1]) == list(
        range(size)
    )
    bitmap_container = roaring.serialize(range(0, 2 * 4100, 2))  # > 4096 members: bitmap
    assert sorted(pull(turso_server, server_pages_selector=bitmap_container)[1]) == list(
        range(0, size, 2)
    )


def test_request_errors(turso_server):
    turso_server.db_sql("CREATE TABLE t(x)")
    r = turso_server.pull_updates(PullUpdatesRequest(encoding=1).encode())
    assert r.status_code == 500 and "zstd" in r.text
    r = turso_server.pull_updates(PullUpdatesRequest(stream_kind=1).encode())
    assert r.status_code == 400 and "MVCC" in r.text
    assert turso_server.pull_updates(b"\x0a\x05ab").status_code == 400  # truncated protobuf
    r = turso_server.pull_updates(
        PullUpdatesRequest(server_pages_selector=b"\x3a\x30\x00").encode()
    )
    assert r.status_code == 400 and "selector" in r.text
    r = turso_server.pull_updates(PullUpdatesRequest(server_revision="999").encode())
    assert r.status_code == 400 and "unknown server revision" in r.text
    # unparseable revisions fall back like the Rust server: latest / full resend
    h, pages = pull(turso_server, server_revision="g1:o7", client_revision="nope")
    assert h.server_revision == turso_server.revision and len(pages) == h.db_size
    # a client revision from another history (ahead of the server) gets a full resend
    h, pages = pull(turso_server, client_revision="12345")
    assert len(pages) == h.db_size
    # the request as Google's protobuf encodes it (field order, defaults) is understood
    oracle = PullUpdatesRequestPB(server_revision="1", server_pages_selector=roaring.serialize([0]))
    h, pages = parse_response(turso_server.pull_updates(oracle.SerializeToString()).content)
    assert [p.page_id for p in pages] == [0]
    assert requests.post(turso_server.url + "/nope", data=b"").status_code == 404
    r = requests.post(turso_server.url + "/v2/pipeline", data=b"{not json")
    assert r.status_code == 400
    r = requests.post(turso_server.url + "/v2/pipeline", json={"requests": [{"type": "sequence"}]})
    assert r.status_code == 400


def test_pipeline_cannot_disable_the_wal_log(turso_server):
    out = turso_server.pipeline(
        {"requests": [{"type": "execute", "stmt": {"sql": "PRAGMA journal_mode=DELETE"}}]}
    )
    assert out["results"][0]["type"] == "error"
    assert turso_server.db_sql("PRAGMA journal_mode") == [["wal"]]
    for sql in ("ATTACH 'other.db' AS o", "VACUUM INTO 'copy.db'"):  # no other files
        out = turso_server.pipeline({"requests": [{"type": "execute", "stmt": {"sql": sql}}]})
        assert (
            "not authorized" in out["results"][0]["error"]["message"]
            or "denied" in out["results"][0]["error"]["message"]
        )


def test_open_transaction_is_rolled_back_and_not_a_revision(turso_server):
    turso_server.db_sql("CREATE TABLE t(x)")
    rev = turso_server.revision
    out = turso_server.pipeline(
        {
            "requests": [
                {"type": "execute", "stmt": {"sql": "BEGIN"}},
                {
                    "type": "execute",
                    "stmt": {
                        "sql": "INSERT INTO t SELECT randomblob(5000) FROM generate_series(1, 2000)"
                    },
                },
            ]
        }
    )
    assert turso_server.revision == rev  # the transaction stays open on its stream
    assert turso_server.db_sql("SELECT count(*) FROM t") == [["0"]]
    closed = turso_server.pipeline({"baton": out["baton"], "requests": [{"type": "close"}]})
    assert closed["baton"] is None  # closing the stream rolled the transaction back
    turso_server.db_sql("INSERT INTO t VALUES (1)")
    assert rev_no(turso_server.revision) == rev_no(rev) + 1
    assert turso_server.db_sql("SELECT count(*) FROM t") == [["1"]]


def test_restart_keeps_history_and_logs_offline_changes(turso_server_factory, tmp_path):
    srv = turso_server_factory()
    srv.db_sql("CREATE TABLE t(x)")
    srv.db_sql("INSERT INTO t VALUES ('r2')")
    h2, pages2 = pull(srv)
    path = srv.db_path
    srv.stop()
    conn = sqlite3.connect(path)  # a change made while the server was down
    conn.execute("INSERT INTO t VALUES ('offline')")
    conn.commit()
    conn.close()
    srv2 = turso_server_factory(db_path=path)
    assert rev_no(srv2.revision) == 3 and srv2.revision[:16] == h2.server_revision[:16]  # same history
    h, pages = pull(srv2, server_revision=h2.server_revision)
    assert pages == pages2
    h, pages = pull(srv2, client_revision=h2.server_revision)
    img = materialize(pages, h.db_size, materialize(pages2, h2.db_size))
    assert query(tmp_path, img, "SELECT x FROM t") == [("r2",), ("offline",)]
    srv2.stop()
    srv3 = turso_server_factory(db_path=path)  # nothing changed: no new revision
    assert srv3.revision == srv2.revision


def test_refuses_other_page_sizes(tmp_path):
    path = str(tmp_path / "big.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=8192")
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="8192-byte pages"):
        ReferenceServer(path)
    new = str(tmp_path / "new.db")
    ReferenceServer(new).stop()
    conn = sqlite3.connect(new)
    assert conn.execute("PRAGMA page_size").fetchone() == (4096,)


def test_ranged_get(turso_server):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 50)")
    with open(turso_server.db_path, "rb") as f:
        data = f.read()
    url = turso_server.url + "/server.db"
    r = requests.get(url, headers={"Range": "bytes=4096-8191"})
    assert r.status_code == 206 and r.content == data[4096:8192]
    assert r.headers["Content-Range"] == f"bytes 4096-8191/{len(data)}"
    etag = r.headers["ETag"]
    assert requests.get(url, headers={"Range": "bytes=-100"}).content == data[-100:]
    assert requests.get(url, headers={"Range": f"bytes={len(data) - 10}-"}).content == data[-10:]
    full = requests.get(url)
    assert (
        full.status_code == 200
        and full.content == data
        and full.headers["Accept-Ranges"] == "bytes"
    )
    r = requests.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    head = requests.head(url)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
    turso_server.db_sql("INSERT INTO t VALUES (1)")
    r = requests.get(url, headers={"Range": "bytes=0-99", "If-Range": etag})
    assert r.status_code == 200 and r.headers["ETag"] != etag  # stale validator: whole file
    assert requests.get(url, headers={"Range": "bytes=0-99", "If-Match": etag}).status_code == 412


def test_auth(turso_server_factory):
    srv = turso_server_factory(auth_token="tok-123")
    srv.db_sql("CREATE TABLE t(x)")  # the fixture sends the token
    for headers in (
        {},
        {"Authorization": "Bearer tok-12"},
        {"Authorization": "tok-123"},
        {"Authorization": "Bearer tok-1234"},
    ):
        assert (
            requests.post(srv.url + "/pull-updates", data=b"", headers=headers).status_code == 401
        )
        assert requests.get(srv.url + "/x.db", headers=headers).status_code == 401
        r = requests.post(srv.url + "/v2/pipeline", json={"requests": []}, headers=headers)
        assert r.status_code == 401 and "tok" not in r.text
    ok = requests.post(
        srv.url + "/pull-updates", data=b"", headers={"Authorization": "Bearer tok-123"}
    )
    assert ok.status_code == 200
    with requests.Session() as s:  # an unread body after a 401 must not poison keep-alive
        body = PullUpdatesRequest(server_revision="1").encode() * 50
        assert s.post(srv.url + "/pull-updates", data=body).status_code == 401
        r = s.post(srv.url + "/pull-updates", data=b"", headers={"Authorization": "Bearer tok-123"})
        assert r.status_code == 200


def test_long_poll(turso_server):
    turso_server.db_sql("CREATE TABLE t(x)")
    rev = turso_server.revision
    t0 = time.monotonic()
    h, pages = pull(turso_server, client_revision=rev, long_poll_timeout_ms=300)
    assert time.monotonic() - t0 >= 0.28 and (h.server_revision, pages) == (rev, {})
    timer = threading.Timer(0.3, turso_server.db_sql, ["INSERT INTO t VALUES (1)"])
    timer.start()
    t0 = time.monotonic()
    h, pages = pull(turso_server, client_revision=rev, long_poll_timeout_ms=20_000)
    timer.join()
    assert time.monotonic() - t0 < 10 and rev_no(h.server_revision) == rev_no(rev) + 1 and pages


def test_concurrent_readers_and_writers_see_consistent_snapshots(turso_server, tmp_path):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    srv.db_sql("INSERT INTO t SELECT value, randomblob(800) FROM generate_series(1, 200)")
    seen, errors = [], []

    def reader():
        try:
            with requests.Session() as s:
                for _ in range(6):
                    r = s.post(srv.url + "/pull-updates", data=b"")
                    seen.append(parse_response(r.content))
        except Exception as exc:
            errors.append(exc)

    def writer(k):
        try:
            with requests.Session() as s:
                for i in range(8):
                    body = {
                        "requests": [
                            {
                                "type": "execute",
                                "stmt": {
                                    "sql": f"INSERT INTO t SELECT value + {100000 * (k + 1) + 1000 * i}, randomblob(900) FROM generate_series(1, 20)"
                                },
                            }
                        ]
                    }
                    assert s.post(srv.url + "/v2/pipeline", json=body).status_code == 200
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [
        threading.Thread(target=writer, args=(k,)) for k in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert srv.db_sql("SELECT count(*) FROM t") == [[str(200 + 2 * 8 * 20)]]
    for header, pages in seen:
        image = materialize({p.page_id: p.encoded_page for p in pages}, header.db_size)
        again = pull(srv, server_revision=header.server_revision)[1]
        assert image == materialize(again, header.db_size)
    header, pages = seen[-1]
    n = query(
        tmp_path,
        materialize({p.page_id: p.encoded_page for p in pages}, header.db_size),
        "SELECT count(*) FROM t",
    )[0][0]
    assert 200 <= n <= 520 and (n - 200) % 20 == 0


def test_cli_serves_and_shuts_down_cleanly(tmp_path):
    db = str(tmp_path / "cli.db")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "turso_dbapi.server",
            db,
            "--port",
            "0",
            "--auth-token",
            "cli-token",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line).group(0)
        assert requests.get(url + "/").status_code == 401
        assert (
            requests.get(url + "/", headers={"Authorization": "Bearer cli-token"}).status_code
            == 404
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "cli-token" not in out + err + line
    bad = str(tmp_path / "bad.db")
    with open(bad, "wb") as f:
        f.write(b"not a database at all" * 10)
    res = subprocess.run(
        [sys.executable, "-m", "turso_dbapi.server", bad, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2 and "not a SQLite database" in res.stderr
    assert not os.path.exists(bad + "-revlog")


def test_http_range_client_reads_the_served_db(turso_server, tmp_path):
    """The package's own HTTP range reader works against the server's plain GET route."""
    import turso_dbapi

    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    turso_server.db_sql("INSERT INTO t SELECT value, randomblob(500) FROM generate_series(1, 3000)")
    con = turso_dbapi.connect(turso_server.url + "/server.db", partial=True)
    try:
        assert con.execute("SELECT count(*), sum(length(x)) FROM t").fetchall() == [(3000, 1500000)]
    finally:
        con.close()


def test_page_log_lookups_use_indexes_not_history_scans(tmp_path):
    from turso_dbapi.server import page_log

    log = page_log.PageLog(str(tmp_path / "log.db"))
    try:
        for rev in range(1, 41):  # page 1 rewritten at every revision, others once
            pages = {1: bytes([rev]) * PAGE}
            if rev == 1:
                pages.update({p: bytes([p % 251]) * PAGE for p in range(2, 200)})
            log.append(pages, 199)
        with log.reader() as conn:
            for sql, args in ((page_log.SEEK_SQL, (1, 0, 7)), (page_log.CHANGED_SQL, (5, 9))):
                plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
                assert "USING COVERING INDEX" in plan or "USING INDEX" in plan, plan
                assert "SCAN versions" not in plan.replace("USING", ""), plan
        size, plan = log.plan(0, 7, [(0, 1)])
        assert size == 199 and [pid for pid, _ in plan] == [0]
        assert [data for _, data in log.read(plan)] == [bytes([7]) * PAGE]
        size, plan = log.plan(10, 20, None)  # only page 1 changed in (10, 20]
        assert [(pid, data[:1]) for pid, data in log.read(plan)] == [(0, bytes([20]))]
    finally:
        log.close()


def test_blocked_checkpoint_loses_nothing(turso_server, tmp_path):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    srv.db_sql("INSERT INTO t SELECT value, randomblob(700) FROM generate_series(1, 100)")
    reader = sqlite3.connect(srv.db_path)  # another process's reader pins the WAL
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (100,)
    revs = []
    for i in range(3):
        srv.db_sql(
            f"INSERT INTO t SELECT value + {1000 * (i + 1)}, randomblob(900) FROM generate_series(1, 30)"
        )
        srv.db_sql(f"UPDATE t SET x = zeroblob({i + 1}) WHERE id % 3 = {i}")
        revs.append(srv.revision)
    assert os.path.getsize(srv.db_path + "-wal") > 0  # the checkpoint really was blocked
    h, pages = pull(srv)
    image = materialize(pages, h.db_size)
    got = query(tmp_path, image, "SELECT count(*), sum(length(x)) FROM t")[0]
    want = srv.db_sql("SELECT count(*), sum(length(x)) FROM t")[0]
    assert [str(v) for v in got] == want
    r = requests.get(srv.url + "/server.db")  # GET serves the revision, not the stale file
    assert r.content == image
    mid = pull(srv, server_revision=revs[0])[0]  # every intermediate revision is still there
    assert mid.server_revision == revs[0]
    reader.rollback()
    reader.close()
    srv.db_sql("INSERT INTO t VALUES (99999, 'after')")
    assert os.path.getsize(srv.db_path + "-wal") == 0  # checkpointed once unblocked
    h, pages = pull(srv)
    with open(srv.db_path, "rb") as f:  # WAL empty: the file is the whole current state
        assert materialize(pages, h.db_size) == f.read()


@pytest.mark.parametrize("checkpoint", [False, True])
def test_writes_by_another_process_become_revisions(turso_server, tmp_path, checkpoint):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    srv.db_sql("INSERT INTO t SELECT value, randomblob(500) FROM generate_series(1, 200)")
    h1, p1 = pull(srv)
    other = sqlite3.connect(srv.db_path, isolation_level=None)
    other.execute(
        rewrite("INSERT INTO t SELECT value + 500, randomblob(800) FROM generate_series(1, 50)")
    )
    other.execute("UPDATE t SET x = 'changed elsewhere' WHERE id = 7")
    if checkpoint:  # its frames are gone from the WAL: found by comparing pages
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other.close()
    h2, p2 = pull(srv, client_revision=h1.server_revision)
    assert rev_no(h2.server_revision) == rev_no(h1.server_revision) + 1 and 0 < len(p2) < h2.db_size
    image = materialize(p2, h2.db_size, materialize(p1, h1.db_size))
    assert query(tmp_path, image, "SELECT count(*), (SELECT x FROM t WHERE id = 7) FROM t") == [
        (250, "changed elsewhere")
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=48))
def test_random_request_bodies_are_400_never_500(turso_server_factory, body):
    srv = _shared_fuzz_server(turso_server_factory)
    r = srv.pull_updates(body)
    assert r.status_code in (200, 400), (r.status_code, r.text)
    if r.status_code == 200:
        parse_response(r.content)


_FUZZ: list = []


def _shared_fuzz_server(factory):
    # hypothesis reuses the function-scoped fixture across examples: start one server
    # (the factory object itself is kept, so a new test run never matches a stopped one)
    if not _FUZZ or _FUZZ[0] is not factory:
        srv = factory()
        srv.db_sql("CREATE TABLE t(x)")
        srv.db_sql("INSERT INTO t VALUES (1)")
        _FUZZ[:] = [factory, srv]
    return _FUZZ[1]


def test_failure_mid_stream_truncates_instead_of_corrupting(turso_server, monkeypatch):
    from turso_dbapi.errors import ProtocolError

    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(3000) FROM generate_series(1, 40)")
    real_read = turso_server.server.db.log.read

    def failing_read(plan):
        for i, item in enumerate(real_read(plan)):
            if i == 5:
                raise OSError("disk went away")
            yield item

    monkeypatch.setattr(turso_server.server.db.log, "read", failing_read)
    r = requests.post(turso_server.url + "/pull-updates", data=b"", stream=True)
    assert r.status_code == 200
    body = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in r.iter_content(65536):
            body += chunk
    assert len(body) < int(r.headers["Content-Length"])
    with pytest.raises(ProtocolError):  # a client reports a short body, never bad pages
        parse_response(body)
    monkeypatch.undo()
    assert pull(turso_server)[0].db_size > 5  # the server carries on
    r = requests.post(turso_server.url + "/pull-updates", data=b"", headers={"Content-Length": "x"})
    assert r.status_code == 400
