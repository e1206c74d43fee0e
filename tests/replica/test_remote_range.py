"""turso_dbapi.connect(url, partial=True) against a real nginx (and the fault proxy).

Request counts are exact: they are compared with the nginx access log and with what the
same query costs through a FileSource on the same file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support._threads import run_threads
from support.databases import make_database
from support.faultproxy import is_fetch
from support._lazy_replica import QUERIES, Lazy

import turso_dbapi
from turso_dbapi.errors import RemoteChangedError, RemoteError

ROOT = Path(__file__).resolve().parents[2]  # the checkout (tests/<room>/this file)


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Every test gets its own user cache directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fast(**kw):
    kw.setdefault("partial", True)
    kw.setdefault("retries", 2)
    kw.setdefault("http_timeout", 5.0)
    return kw


@pytest.mark.parametrize("name", ["p1024", "p4096", "p65536", "wal"])
def test_results_equal_sqlite3_on_the_local_file(served_databases, databases, name):
    con = turso_dbapi.connect(served_databases[name], **_fast())
    ref = sqlite3.connect(databases[name])
    for sql in QUERIES:
        assert con.execute(sql).fetchall() == ref.execute(sql).fetchall(), sql
    st = con.stats()
    con.close()  # its background read-ahead threads end here, not whenever GC finds them
    assert st.bytes_received <= os.path.getsize(databases[name]) * 1.05  # nothing fetched twice
    assert st.page_size == ref.execute("PRAGMA page_size").fetchone()[0]


def test_exact_request_counts_open_lookup_repeat_and_reopen(nginx, databases, tmp_path):
    src = databases["p4096"]
    nginx.place("counts.db", src)
    url = nginx.url("counts.db")
    before = len(nginx.access_log_lines())
    one_page = {"segment_size": 4096, "readahead_max": 4096}  # no readahead: countable
    con = turso_dbapi.connect(url, **_fast(**one_page))
    assert con.stats().requests == 1  # header-only open
    assert nginx.access_log_lines()[before:] == ["GET /counts.db range=bytes=0-4095 status=206 bytes=4096"]

    sql = "SELECT * FROM items WHERE id = 1234"
    ref_rows = sqlite3.connect(src).execute(sql).fetchall()
    assert con.execute(sql).fetchall() == ref_rows
    # the same lookup through a FileSource: the pages it needs beyond page 1 (open gave it)
    lazy = Lazy(src, tmp_path / "oracle", **one_page)
    lazy.connect().execute(sql).fetchall()
    oracle_pages = sorted(p for b in lazy.source.fetch_log for p in b if p != 1)
    runs = sum(1 for i, p in enumerate(oracle_pages) if i == 0 or p != oracle_pages[i - 1] + 1)
    st = con.stats()
    assert st.requests == 1 + runs
    assert st.bytes_received == 4096 + 4096 * len(oracle_pages)

    assert con.execute(sql).fetchall() == ref_rows
    assert con.stats().requests == st.requests  # repeat: no new request

    code = ("import sys, turso_dbapi\n"
            "c = turso_dbapi.connect(sys.argv[1], partial=True, segment_size=4096, readahead_max=4096)\n"
            "rows = c.execute(sys.argv[2]).fetchall()\n"
            "print(c.stats().requests, len(rows))\n")
    out = subprocess.run([sys.executable, "-c", code, url, sql], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", str(len(ref_rows))]  # reopen: the one revalidation only


def test_changed_remote_version_starts_a_fresh_cache(nginx, tmp_path, cache_home):
    v1 = make_database(tmp_path / "v1.db", rows=400, seed=1)
    v2 = make_database(tmp_path / "v2.db", rows=500, seed=2)
    nginx.place("ver.db", v1)
    a = turso_dbapi.connect(nginx.url("ver.db"), **_fast())
    assert a.execute("SELECT count(*) FROM items").fetchone() == (400,)
    nginx.place("ver.db", v2)
    b = turso_dbapi.connect(nginx.url("ver.db"), **_fast())
    ref = sqlite3.connect(v2)
    for sql in QUERIES:
        assert b.execute(sql).fetchall() == ref.execute(sql).fetchall(), sql
    assert a._replica.path != b._replica.path
    assert len(list(cache_home.glob("turso_dbapi/*/db"))) == 2
    for d in [cache_home / "turso_dbapi", *cache_home.glob("turso_dbapi/*/")]:
        assert d.stat().st_mode & 0o077 == 0, d  # private: cached pages are data


def test_changed_version_with_local_path_replaces_the_cache(nginx, tmp_path):
    v1 = make_database(tmp_path / "v1.db", rows=300, seed=3)
    v2 = make_database(tmp_path / "v2.db", rows=350, seed=4)
    nginx.place("lp.db", v1)
    local = str(tmp_path / "mine" / "replica.db")
    code = ("import sys, turso_dbapi\n"
            "c = turso_dbapi.connect(sys.argv[1], partial=True, local_path=sys.argv[2])\n"
            "print(c.execute('SELECT count(*) FROM items').fetchone()[0])\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = [sys.executable, "-c", code, nginx.url("lp.db"), local]
    assert subprocess.run(run, capture_output=True, text=True, env=env, timeout=60).stdout.strip() == "300"
    nginx.place("lp.db", v2)
    assert subprocess.run(run, capture_output=True, text=True, env=env, timeout=60).stdout.strip() == "350"


def test_file_replaced_mid_session_raises_remote_changed_not_disk_io(nginx, tmp_path):
    v1 = make_database(tmp_path / "m1.db", rows=1500, seed=5)
    nginx.place("mid.db", v1)
    con = turso_dbapi.connect(nginx.url("mid.db"), **_fast(segment_size=4096))
    assert con.execute("SELECT name FROM items WHERE id = 1").fetchone() == ("item-00000001",)
    nginx.place("mid.db", make_database(tmp_path / "m2.db", rows=1500, seed=6))
    with pytest.raises(RemoteChangedError) as info:
        con.execute("SELECT sum(length(body)) FROM docs").fetchall()
    assert isinstance(info.value, sqlite3.OperationalError)
    assert "mid.db" in str(info.value) and "disk I/O" not in str(info.value)
    # what was cached is still whole and of one version
    assert con.execute("SELECT name FROM items WHERE id = 1").fetchone() == ("item-00000001",)


@pytest.mark.parametrize("fault,kw", [("reset", {}), ("status", {"status": 503}), ("truncate", {}),
                                      ("bad_range", {})])
def test_transient_fetch_faults_are_retried_and_the_cache_stays_sound(fault_proxy, nginx, databases, fault, kw):
    nginx.place("faults.db", databases["p4096"])
    con = turso_dbapi.connect(fault_proxy.url("/faults.db"), **_fast())
    fault_proxy.inject(fault, times=1, when=is_fetch, **kw)
    ref = sqlite3.connect(databases["p4096"])
    sql = "SELECT id, length(body) FROM docs ORDER BY id"
    assert con.execute(sql).fetchall() == ref.execute(sql).fetchall()
    assert con.stats().retries >= 1
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()  # its read-ahead threads end here, not whenever GC finds them


def test_persistent_failure_raises_remote_error_and_the_connection_recovers(fault_proxy, nginx, databases):
    nginx.place("down.db", databases["p4096"])
    con = turso_dbapi.connect(fault_proxy.url("/down.db"), **_fast(retries=1))
    fault_proxy.inject("status", status=500, times=None, when=is_fetch)
    with pytest.raises(RemoteError) as info:
        con.execute("SELECT count(*) FROM items").fetchall()
    assert info.value.status == 500 and "down.db" in str(info.value)
    fault_proxy.clear_faults()
    assert con.execute("SELECT count(*) FROM items").fetchone() == (1500,)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()


def test_server_ignoring_range_on_fetch_is_a_clear_error_never_a_wrong_page(fault_proxy, nginx, databases):
    nginx.place("r200.db", databases["p4096"])
    con = turso_dbapi.connect(fault_proxy.url("/r200.db"), **_fast())
    fault_proxy.inject("full200", times=None, when=is_fetch)
    with pytest.raises(RemoteError, match="Range"):
        con.execute("SELECT count(*) FROM docs").fetchall()
    fault_proxy.clear_faults()
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_partial_false_downloads_everything_at_connect(served_databases, databases):
    con = turso_dbapi.connect(served_databases["p1024"], partial=False)
    st = con.stats()
    size = os.path.getsize(databases["p1024"])
    assert st.pages_fetched + 4 == size // 1024  # open() brought the first 4096 bytes
    assert st.bytes_received <= size * 1.05
    for sql in QUERIES:
        con.execute(sql).fetchall()
    assert con.stats().requests == st.requests  # everything local now


def test_options_from_the_query_string_and_debug_log_per_fetch(nginx, databases, caplog):
    nginx.place("qs.db", databases["p4096"])
    caplog.set_level(logging.DEBUG, logger="turso_dbapi")
    con = turso_dbapi.connect(nginx.url("qs.db") + "?partial=true&segment_size=8k&prefetch=1")
    con.execute("SELECT * FROM items WHERE id = 99").fetchall()
    assert con._replica.handler.readahead.segment_pages == 2
    assert con._replica.handler.prefetch is True
    assert any("fetched" in r.getMessage() and "qs.db" in r.getMessage() for r in caplog.records)


def test_threads_each_with_a_remote_connection(served_databases, databases):
    url = served_databases["p1024"]
    ref = sqlite3.connect(databases["p1024"], check_same_thread=False)
    expected = dict(ref.execute("SELECT id, name || hex(payload) FROM items").fetchall())
    errors: list = []

    def worker(seed: int) -> None:
        try:
            con = turso_dbapi.connect(url, **_fast())
            for i in range(1 + seed, 1500, 37):
                row = con.execute("SELECT name || hex(payload) FROM items WHERE id = ?", (i,)).fetchone()
                if row[0] != expected[i]:
                    errors.append(i)
            con.close()
        except Exception as exc:  # reported below
            errors.append(exc)

    run_threads(worker, [(s,) for s in range(4)])
    assert errors == []


def test_local_connections_pay_nothing(tmp_path):
    con = turso_dbapi.connect(str(tmp_path / "plain.db"))
    assert type(con) is turso_dbapi.Connection
    assert type(con.cursor()) is sqlite3.Cursor


def test_closing_the_last_connection_closes_the_store_and_reopen_uses_the_cache(served_databases):
    url = served_databases["p4096"]
    a = turso_dbapi.connect(url, **_fast())
    b = turso_dbapi.connect(url, **_fast())
    sql = "SELECT name FROM items WHERE id = 321"
    assert a.execute(sql).fetchone() == b.execute(sql).fetchone()
    store = a._replica.store
    assert b._replica.store is store
    a.close()
    assert not store.closed  # b still reads through it
    assert b.execute("SELECT count(*) FROM kv").fetchone()[0] > 0
    b.close()
    assert store.closed
    # without its store, the replica file is refused, never served sparse
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        sqlite3.connect(f"file:{store.path}?vfs=turso_dbapi", uri=True).execute("SELECT 1 FROM items")
    c = turso_dbapi.connect(url, **_fast())
    assert c.execute(sql).fetchone() == ("item-00000321",)
    assert c.stats().requests == 1  # the revalidating open; pages came from the cache


@pytest.mark.parametrize("name", ["p4096", "wal"])  # a read transaction starts differently in WAL
def test_a_fetch_failing_during_iteration_is_logged_and_kept_but_never_lent_to_later_errors(
        fault_proxy, nginx, databases, caplog, name):
    """Iteration is the stdlib's own (no Python per row): a fetch failing there raises the
    plain "disk I/O error", but the cause is logged at WARNING with the URL, kept as
    stats().last_error, and never attached to a later statement's error."""
    from turso_dbapi.replica import base as remote

    nginx.place("iter.db", databases[name])
    con = turso_dbapi.connect(fault_proxy.url("/iter.db"),
                              **_fast(retries=1, segment_size=4096, readahead_max=4096))
    cur = con.execute("SELECT id, length(body) FROM docs ORDER BY id")
    assert cur.fetchone() is not None and con.stats().last_error is None
    fault_proxy.inject("status", status=500, times=None, when=is_fetch)
    with caplog.at_level(logging.WARNING, logger="turso_dbapi"):
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error") as info:
            for _row in cur:
                pass
    assert not isinstance(info.value, RemoteError)
    warned = [r for r in caplog.records if r.name == "turso_dbapi" and r.levelno == logging.WARNING]
    assert warned and "iter.db" in warned[-1].getMessage() and "500" in warned[-1].getMessage()
    assert "RemoteError" in con.stats().last_error and "500" in con.stats().last_error
    fault_proxy.clear_faults()
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] > 0
    # an I/O error now (say, of the local disk) has no cause on the Python side: the one the
    # iteration left must not be attached to it
    late = sqlite3.OperationalError("disk I/O error")
    late.sqlite_errorcode, late.sqlite_errorname = 266, "SQLITE_IOERR_READ"
    assert remote.real_cause(late, "x") is late
    # while a fetch failing under an execute is reported with its own, fresh cause
    fault_proxy.inject("status", status=503, times=None, when=is_fetch)
    with pytest.raises(RemoteError) as fresh:
        con.execute("SELECT sum(length(body)) FROM docs").fetchall()
    assert fresh.value.status == 503
    fault_proxy.clear_faults()
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_only_io_errors_consume_a_kept_cause_on_every_python_version(tmp_path):
    """3.11+ tells an I/O error by sqlite_errorcode, 3.9/3.10 by SQLite's message."""
    from turso_dbapi import errors

    con = sqlite3.connect(str(tmp_path / "x.db"))
    with pytest.raises(sqlite3.OperationalError) as other:
        con.execute("SELECT * FROM nowhere")
    io = sqlite3.OperationalError("disk I/O error")
    assert errors.is_io_error_by_message(io) and not errors.is_io_error_by_message(other.value)
    if sys.version_info >= (3, 11):
        io.sqlite_errorcode = 266  # SQLITE_IOERR_READ
        assert errors.is_io_error_by_code(io) and not errors.is_io_error_by_code(other.value)
        assert errors.is_io_error is errors.is_io_error_by_code
    else:
        assert errors.is_io_error is errors.is_io_error_by_message


def test_after_remote_changed_the_same_process_reopens_the_path_once_closed(nginx, tmp_path):
    """A stored RemoteChangedError (conn.stats().last_error, the cursor's exception) must
    not keep the failed statement, hence the C store, alive: close() + gc frees the path."""
    import gc

    nginx.place("again.db", make_database(tmp_path / "a1.db", rows=1500, seed=7))
    local = str(tmp_path / "again" / "replica.db")
    con = turso_dbapi.connect(nginx.url("again.db"), local_path=local, **_fast(segment_size=4096))
    cur = con.cursor()
    assert cur.execute("SELECT count(*) FROM items").fetchone() == (1500,)
    nginx.place("again.db", make_database(tmp_path / "a2.db", rows=1600, seed=8))
    try:
        cur.execute("SELECT sum(length(body)) FROM docs").fetchall()
    except RemoteChangedError as exc:
        kept = exc  # a caller may well keep the exception
    assert "RemoteChangedError" in con.stats().last_error
    con.close()
    del cur, con
    gc.collect()
    again = turso_dbapi.connect(nginx.url("again.db"), local_path=local, **_fast())
    assert again.execute("SELECT count(*) FROM items").fetchone() == (1600,)
    assert "again.db" in str(kept)
    again.close()
