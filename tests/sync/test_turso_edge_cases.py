"""Protocol edge cases (spec §1.3, §2.6, §2.7, §9) for OUR client.

The reference server never sends malformed replies, so those cases use a tiny HTTP
server that answers ``/pull-updates`` with bodies built by ``sync_wire``'s encoder (a
real socket and real HTTP, only the bytes are scripted). Everything else runs against
the reference server.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import turso_dbapi
from turso_dbapi.protocol import sync_wire
from turso_dbapi.errors import ProtocolError, RemoteError
from turso_dbapi.sources.turso import TursoSyncSource
from turso_dbapi.protocol.sync_wire import PageData, PullUpdatesResponseHeader, ZstdEncoding

PAGE = bytes(range(256)) * 16
# Page 1 must carry a database header (page size 4096, payload fractions 64/32/32) and a
# B-tree header at offset 100 (an empty leaf table): other bytes are refused as page 1.
PAGE1 = (b"SQLite format 3\x00\x10\x00\x01\x01\x00\x40\x20\x20" + bytes(76)
         + b"\x0d\x00\x00\x00\x00\x10\x00\x00").ljust(4096, b"\x00")


class _Scripted(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.server.reply  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def scripted():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def source_for(httpd, **opts):
    return TursoSyncSource(f"http://127.0.0.1:{httpd.server_address[1]}", {"retries": 0, **opts},
                           pinned_revision="5")


def body(header, pages=()):
    return sync_wire.encode_response(header, pages)


@pytest.mark.parametrize("reply, match", [
    ((500, b"boom: database on fire"), "status=500, body='boom: database on fire'"),
    ((403, b"forbidden"), "status=403"),
    ((200, b""), "no header returned"),
    ((200, body(PullUpdatesResponseHeader("5", 3), [PageData(0, PAGE)])[:-10]), "bad /pull-updates reply"),
    ((200, body(PullUpdatesResponseHeader("5", 3, raw_encoding=False, zstd_encoding=ZstdEncoding(3)),
                [PageData(0, PAGE)])), "zstd encoding is not supported"),
    ((200, body(PullUpdatesResponseHeader("5", 3, stream_kind=1))), "MVCC logical log"),
    ((200, body(PullUpdatesResponseHeader("5", 3, apply_mode=1))), "replace-base"),
    ((200, body(PullUpdatesResponseHeader("5", 3), [PageData(0, PAGE[:1024])])), "unexpected size"),
    ((200, body(PullUpdatesResponseHeader("5", 0), [PageData(0, PAGE)])), "db_size 0"),
])
def test_bad_replies_raise_clear_errors(scripted, reply, match):
    scripted.reply = reply
    src = source_for(scripted)
    with pytest.raises(RemoteError, match=match) as err:
        src.fetch([1, 2])
    assert "127.0.0.1" in str(err.value)  # which server


def test_a_server_may_not_omit_pages_inside_its_size(scripted):
    scripted.reply = (200, body(PullUpdatesResponseHeader("5", 3), [PageData(0, PAGE1)]))
    with pytest.raises(ProtocolError, match=r"omitted page\(s\) \[2\]"):
        source_for(scripted).fetch([1, 2])
    # pages at or past db_size may be omitted: absent, never an error (§2.6)
    scripted.reply = (200, body(PullUpdatesResponseHeader("5", 1), [PageData(0, PAGE1)]))
    assert list(source_for(scripted).fetch([1, 2, 3])) == [1]


def test_page_one_is_switched_to_rollback_journal_mode(scripted):
    wal_page1 = bytearray(PAGE1)
    wal_page1[18] = wal_page1[19] = 2
    scripted.reply = (200, body(PullUpdatesResponseHeader("5", 2), [PageData(0, bytes(wal_page1)),
                                                                     PageData(1, PAGE)]))
    pages = source_for(scripted).fetch([1, 2])
    assert pages[1][18:20] == b"\x01\x01" and pages[1][:18] == PAGE1[:18] and pages[1][20:] == PAGE1[20:]
    assert pages[2] == PAGE


def test_prefix_below_one_page_is_rounded_up(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(1024) FROM generate_series(1, 100)")
    sent = turso_server.stats["pages_sent"]
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"), bootstrap_prefix=100)
    assert turso_server.stats["pages_sent"] - sent == 1  # exactly the header page
    assert conn.stats().pages_fetched == 1
    assert conn.execute("SELECT COUNT(*) FROM t").fetchall() == [(100,)]


def test_selected_pages_beyond_the_server_size_are_absent(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    small = turso_server.revision
    turso_server.db_sql("INSERT INTO t SELECT randomblob(1024) FROM generate_series(1, 100)")
    src = TursoSyncSource(turso_server.url, {}, pinned_revision=small)
    got = src.fetch([1, 2, 3, 50, 500])  # at the small revision only pages 1-2 exist
    assert sorted(got) == [1, 2]
    # and through a replica pinned to that revision: neighbours past the end, no crash
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"), partial=True,
                               segment_size=1024 * 1024)
    assert conn.execute("SELECT COUNT(*) FROM t").fetchall() == [(100,)]


def test_empty_server(turso_server, tmp_path):
    assert turso_server.revision == "0"
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)
    # only the change-capture machinery (reserved sqlite_ names): no user object
    assert conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_tdb\\_%' ESCAPE '\\'"
                        ).fetchall() == []
    assert list(conn.iterdump()) == ["BEGIN TRANSACTION;", "COMMIT;"]
    st = conn.stats()
    assert st.revision == "0" and st.db_size_pages == 0
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t VALUES (1), (2)")
    assert conn.pull() is True
    assert conn.execute("SELECT SUM(x) FROM t").fetchall() == [(3,)]
    assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]


def test_server_failure_during_a_lazy_fetch_leaves_the_connection_usable(turso_server, tmp_path):
    from support.faultproxy import FaultProxy

    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(1024) FROM generate_series(1, 300)")
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), partial=True,
                                   bootstrap_prefix=8192, retries=0)
        proxy.inject("status", status=503, times=None)
        with pytest.raises(turso_dbapi.OperationalError) as err:
            conn.execute("SELECT SUM(LENGTH(x)) FROM t").fetchall()
        assert "503" in str(err.value) and "127.0.0.1" in str(err.value)
        proxy.clear_faults()
        assert conn.execute("SELECT SUM(LENGTH(x)) FROM t").fetchall() == [(300 * 1024,)]


def test_reopen_needs_metadata_or_url(tmp_path):
    with pytest.raises(turso_dbapi.ProgrammingError, match="apply to remote databases"):
        turso_dbapi.connect(str(tmp_path / "nothing.db"), protocol="turso")


def test_partial_without_strategy_bootstraps_page_1_alone(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(1024) FROM generate_series(1, 300)")
    # issue 13: a segment (here 64 KiB) at bootstrap cost a cold point lookup ~10x its pages;
    # segment_size is the readahead's, not a bootstrap size
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"), partial=True,
                               segment_size=64 * 1024)
    assert conn.stats().pages_fetched == 1 and conn.stats().requests == 1
    assert conn.execute("select count(*) from t").fetchone() == (300,)


_DIES_BEFORE_METADATA = """
import os, sys
sys.path.insert(0, sys.argv[1])
import turso_dbapi
from turso_dbapi.sync import metadata as sync_meta
sync_meta.publish = lambda *a, **k: os._exit(4)  # the process dies right before the commit point
turso_dbapi.connect(sys.argv[2], local_path=sys.argv[3])
"""


def test_a_crash_before_the_metadata_means_bootstrap_again(turso_server, tmp_path):
    import os
    import subprocess
    import sys

    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t VALUES (1), (2)")
    path = str(tmp_path / "r.db")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", _DIES_BEFORE_METADATA, root, turso_server.url, path],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert os.path.exists(path) and '"bootstrapping":true' in open(path + "-tdbsync.json").read()
    turso_server.db_sql("INSERT INTO t VALUES (3)")
    conn = turso_dbapi.connect(turso_server.url, local_path=path)  # bootstraps again, fresh
    assert conn.execute("SELECT SUM(x) FROM t").fetchall() == [(6,)]
    assert conn.stats().requests == 1


def test_a_full_bootstrap_streams_into_the_store(turso_server, tmp_path):
    import tracemalloc

    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 8000)")
    tracemalloc.start()
    try:
        conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert conn.stats().network_received_bytes > 8_000_000
    assert peak < 4_000_000  # the ~8 MB body never sits in memory whole (server included)
    assert conn.execute("SELECT COUNT(*), SUM(LENGTH(x)) FROM t").fetchall() == [(8000, 8_000_000)]


def test_a_bootstrap_cut_mid_body_is_retried_from_scratch(turso_server, tmp_path):
    from support.faultproxy import FaultProxy

    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 500)")
    with FaultProxy(turso_server.url) as proxy:
        proxy.inject("truncate", times=1)
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"))
        st = conn.stats()
        assert [r.fault for r in proxy.records] == ["truncate", None]
        assert st.requests == 2 and st.retries == 1
        assert conn.execute("SELECT COUNT(*), SUM(LENGTH(x)) FROM t").fetchall() == [(500, 500_000)]
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_page_the_selector_did_not_ask_for_is_refused(scripted):
    # §2.6: the server restricts its pages to the selector; one outside it is refused
    # before anything is stored (a hostile page id would otherwise grow the sidecar).
    scripted.reply = (200, body(PullUpdatesResponseHeader("5", 9), [PageData(0, PAGE1), PageData(7, PAGE)]))
    with pytest.raises(ProtocolError, match="page_id 7 was not asked for"):
        source_for(scripted).fetch([1, 2])
