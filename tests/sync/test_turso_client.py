"""OUR client against OUR reference server: spec §7.3's scenarios (push excepted).

Where pyturso has a byte bound, the same scenario runs with pyturso in the same test on
the same server and ours must receive no more than it did (and stay within pyturso's own
test bound).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from support._threads import run_threads

import turso_dbapi
from turso_dbapi.sync import metadata as sync_meta

try:
    import turso.sync as turso_sync
except ImportError:  # the comparisons need pyturso; our own checks still run
    turso_sync = None

ROWS3 = "INSERT INTO t VALUES ('hello'), ('turso'), ('sync')"
KB = 1024


def blobs(server, n):
    server.db_sql("CREATE TABLE t(x)")
    server.db_sql(f"INSERT INTO t SELECT randomblob(1024) FROM generate_series(1, {n})")


def pyturso_prefix(tmp_path, server, name, **partial):
    """pyturso's partial client on the same server, or None without pyturso."""
    if turso_sync is None:
        return None
    opts = turso_sync.PartialSyncOpts(
        bootstrap_strategy=turso_sync.PartialSyncPrefixBootstrap(length=128 * KB), **partial)
    return turso_sync.connect(str(tmp_path / name), remote_url=server.url,
                              partial_sync_experimental=opts)


def test_bootstrap(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql(ROWS3)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "local.db"))
    assert conn.execute("SELECT * FROM t").fetchall() == [("hello",), ("turso",), ("sync",)]
    st = conn.stats()
    assert st.revision == turso_server.revision
    assert st.requests == 1 and st.network_sent_bytes == 0  # full bootstrap: an empty body
    assert st.network_received_bytes > 2 * 4096 and st.pages_fetched == st.db_size_pages
    assert st.partial is False and st.last_push_unix_time is None
    assert abs(st.last_pull_unix_time - time.time()) < 60
    # the replica is in rollback-journal mode although the server's page 1 says WAL
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with open(tmp_path / "local.db", "rb") as f:
        assert f.read(20)[18:20] == b"\x01\x01"


def test_pull(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql(ROWS3)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "local.db"))
    turso_server.db_sql("INSERT INTO t VALUES ('pull works')")
    assert conn.execute("SELECT * FROM t").fetchall() == [("hello",), ("turso",), ("sync",)]
    assert conn.pull() is True
    assert conn.execute("SELECT * FROM t").fetchall() == [
        ("hello",), ("turso",), ("sync",), ("pull works",)]
    assert conn.pull() is False
    st = conn.stats()
    assert st.revision == turso_server.revision and st.pull_gen == 1


@pytest.fixture
def proxy_for():
    """``proxy_for(server_url)``: a FaultProxy in front of a reference server."""
    from support.faultproxy import FaultProxy

    started = []

    def make(url, latency=0.0):
        proxy = FaultProxy(url, latency=latency).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


def test_request_headers_and_auth(turso_server_factory, proxy_for, tmp_path):
    srv = turso_server_factory(auth_token="s3cret")
    srv.db_sql("CREATE TABLE t(x)")
    proxy = proxy_for(srv.url)
    calls = []

    def token():
        calls.append(1)
        return "s3cret"

    conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), auth_token=token,
                               client_name="my-app", partial=True)
    srv.db_sql("INSERT INTO t VALUES (1)")
    assert conn.pull() is True
    assert len(calls) == len(proxy.records) >= 2  # a callable token is evaluated per request
    for rec in proxy.records:
        assert rec.method == "POST" and rec.path == "/pull-updates"
        assert rec.headers["content-type"] == "application/protobuf"
        assert rec.headers["accept-encoding"] == "application/protobuf"
        assert rec.headers["user-agent"] == "my-app"
        assert rec.headers["authorization"] == "Bearer s3cret"
    meta_text = open(str(tmp_path / "r.db") + "-tdbsync.json").read()
    assert "s3cret" not in meta_text and "s3cret" not in repr(conn.stats())
    with pytest.raises(turso_dbapi.RemoteError) as err:
        turso_dbapi.connect(srv.url, local_path=str(tmp_path / "bad.db"), auth_token="wrong")
    assert "status=401" in str(err.value) and "wrong" not in str(err.value)


def test_partial_sync_bounds(turso_server, tmp_path):
    blobs(turso_server, 2000)
    full = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "full.db"))
    assert full.execute("SELECT LENGTH(x) FROM t LIMIT 1").fetchall() == [(1024,)]
    assert full.stats().network_received_bytes > 2000 * KB
    assert full.execute("SELECT SUM(LENGTH(x)) FROM t").fetchall() == [(2000 * KB,)]

    part = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "part.db"),
                               partial=True, bootstrap_prefix=128 * KB)
    assert part.execute("SELECT LENGTH(x) FROM t LIMIT 1").fetchall() == [(1024,)]
    ours = part.stats().network_received_bytes
    assert ours < 256 * 1034
    peer = pyturso_prefix(tmp_path, turso_server, "peer.db")
    if peer is not None:
        assert peer.execute("SELECT LENGTH(x) FROM t LIMIT 1").fetchall() == [(1024,)]
        assert ours <= peer.stats().network_received_bytes
    assert part.execute("SELECT SUM(LENGTH(x)) FROM t").fetchall() == [(2000 * KB,)]
    st = part.stats()
    assert st.network_received_bytes > 2000 * KB and st.partial
    if peer is not None:
        assert peer.execute("SELECT SUM(LENGTH(x)) FROM t").fetchall() == [(2000 * KB,)]
        # a full scan reads each page once: within 10% of pyturso's bytes, in fewer requests
        assert st.network_received_bytes <= 1.1 * peer.stats().network_received_bytes
    # the prefix went as a run container, lazy fetches as explicit arrays (§2.4)
    assert turso_server.stats.get("selector_cookie_12347", 0) >= 1
    assert turso_server.stats.get("selector_cookie_12346", 0) >= 1


def test_partial_sync_segment_size(turso_server, tmp_path):
    blobs(turso_server, 256)
    part = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "part.db"),
                               bootstrap_prefix=128 * KB, segment_size=4096)
    assert part.execute("SELECT LENGTH(x) FROM t LIMIT 1").fetchall() == [(1024,)]
    ours = part.stats().network_received_bytes
    assert ours < 196608
    peer = pyturso_prefix(tmp_path, turso_server, "peer.db", segment_size=4096)
    if peer is not None:
        peer.execute("SELECT LENGTH(x) FROM t LIMIT 1").fetchall()
        assert ours <= peer.stats().network_received_bytes
    assert part.execute("SELECT SUM(LENGTH(x)) FROM t").fetchall() == [(256 * KB,)]
    assert part.stats().network_received_bytes > 256 * KB


def test_partial_sync_prefetch(turso_server, tmp_path):
    blobs(turso_server, 2000)
    part = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "part.db"),
                               bootstrap_prefix=128 * KB, segment_size=4096, prefetch=True)
    assert part.execute("SELECT LENGTH(x) FROM t LIMIT 1").fetchall() == [(1024,)]
    ours = part.stats().network_received_bytes
    assert ours < 1200 * KB
    peer = pyturso_prefix(tmp_path, turso_server, "peer.db", segment_size=4096, prefetch=True)
    if peer is not None:
        peer.execute("SELECT LENGTH(x) FROM t LIMIT 1").fetchall()
        assert ours <= peer.stats().network_received_bytes
    assert part.execute("SELECT SUM(LENGTH(x)) FROM t").fetchall() == [(2000 * KB,)]
    assert part.stats().network_received_bytes > 2000 * KB


def test_query_bootstrap(turso_server, tmp_path):
    blobs(turso_server, 50)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "q.db"),
                               bootstrap_query="SELECT * FROM t WHERE rowid = 7")
    # the server sends the pages the query reads (spec §2.6): that query needs nothing more,
    # the rest of the table arrives lazily
    assert conn.stats().partial and conn.stats().requests == 1
    assert len(conn.execute("SELECT * FROM t WHERE rowid = 7").fetchall()) == 1
    assert conn.stats().requests == 1
    assert conn.execute("SELECT COUNT(*) FROM t").fetchall() == [(50,)]
    assert conn.stats().requests > 1


def test_configuration_persistence_and_reopen_without_url(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql(ROWS3)
    path = str(tmp_path / "local.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path, partial=True, segment_size=8192)
    conn.close()
    meta = json.load(open(path + "-tdbsync.json"))
    assert "http://127.0.0.1" in meta["remote_url"] and meta["segment_size"] == 8192
    turso_server.db_sql("INSERT INTO t VALUES ('new')")
    before = turso_server.stats["pull_requests"]
    again = turso_dbapi.connect(path)  # no URL: the saved one; no network at open
    assert turso_server.stats["pull_requests"] == before
    assert again.stats().requests == 0
    assert again.execute("SELECT COUNT(*) FROM t").fetchall() == [(3,)]
    assert again.pull() is True
    assert again.execute("SELECT x FROM t ORDER BY rowid DESC LIMIT 1").fetchall() == [("new",)]
    assert sync_meta.load(path).segment_size == 8192


def test_concurrent_open_existing_replica(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t VALUES (42)")
    path = str(tmp_path / "local.db")
    turso_dbapi.connect(turso_server.url, local_path=path).close()
    for _ in range(3):
        errors, results = [], []

        def worker(errors=errors, results=results):
            try:
                c = turso_dbapi.connect(turso_server.url, local_path=path)
                results.append(c.execute("SELECT x FROM t").fetchall())
                c.close()
            except Exception as exc:  # collected, asserted below
                errors.append(exc)

        run_threads(worker, [()] * 8)
        assert errors == [] and results == [[(42,)]] * 8


_BOOTSTRAP_CHILD = """
import os, sys, time
import turso_dbapi
path, url, go = sys.argv[1:4]
while not os.path.exists(go):
    time.sleep(0.001)
try:
    conn = turso_dbapi.connect(url, local_path=path, partial=True)
    print("rows", conn.execute("SELECT count(*) FROM t").fetchall())
except Exception as e:  # allowed, as long as it is an exception and not a crash
    print("valid error", type(e).__name__, e)
"""


def test_two_processes_bootstrap_one_path(turso_server, tmp_path):
    blobs(turso_server, 500)
    path = str(tmp_path / "local.db")
    go = str(tmp_path / "go")
    procs = [subprocess.Popen([sys.executable, "-c", _BOOTSTRAP_CHILD, path, turso_server.url, go],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(0.5)
    open(go, "w").close()
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # with the bootstrap lock the second one opens the first one's replica: no error at all
    assert all(o[0].startswith("rows [(500,)]") for o in outs), outs
    assert len({sync_meta.load(path).client_unique_id}) == 1


def test_routing_option(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    from turso_dbapi.url import wants_turso

    assert wants_turso("libsql://db.example.com", {}) and wants_turso("turso://x", {})
    assert wants_turso("http://h:1", {}) and wants_turso("https://h/", {})
    assert not wants_turso("https://h/app.db", {})
    assert wants_turso("https://h/app.db", {"protocol": "turso"})
    assert not wants_turso("http://h:1", {"protocol": "range"})
    # protocol=turso in the query string reaches a URL with a path
    conn = turso_dbapi.connect(turso_server.url + "/?protocol=turso", local_path=str(tmp_path / "r.db"))
    assert conn.stats().revision == turso_server.revision
    with pytest.raises(turso_dbapi.ProgrammingError):
        turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "x.db"), protocol="bogus")
