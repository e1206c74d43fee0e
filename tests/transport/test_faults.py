"""Each injected fault gives a retried success or a clear error (source level, real nginx)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.faultproxy import FaultProxy, is_fetch, is_open

from turso_dbapi.errors import ProtocolError, RangeNotSupportedError, RemoteChangedError, RemoteError
from turso_dbapi.transport.http import Retry
from turso_dbapi.sources.range import HttpRangeSource

FAST = Retry(total=2, backoff_factor=0.001, backoff_max=0.01)


@pytest.fixture
def db(nginx, databases):
    """(file name in nginx, file bytes) of the 1 KiB-page database."""
    nginx.place("faults.db", databases["p1024"])
    return "faults.db", Path(databases["p1024"]).read_bytes()


def _page(data: bytes, pgno: int) -> bytes:
    return data[(pgno - 1) * 1024:pgno * 1024]


def _open(proxy: FaultProxy, name: str, **kw) -> HttpRangeSource:
    kw.setdefault("retry", FAST)
    kw.setdefault("http_timeout", 5.0)
    return HttpRangeSource(proxy.url(name), **kw)


@pytest.mark.parametrize("fault,params", [
    ("reset", {}),
    ("status", {"status": 500}),
    ("status", {"status": 502}),
    ("status", {"status": 429}),
    ("truncate", {}),
    ("bad_range", {}),
])
def test_one_transient_fault_on_a_fetch_is_retried_to_the_right_pages(fault_proxy, db, fault, params):
    name, data = db
    with _open(fault_proxy, name) as src:
        src.open()
        fault_proxy.clear()
        fault_proxy.inject(fault, when=is_fetch, **params)
        got = src.fetch([5, 6, 7, 8])  # one aligned 4 KiB block (range.py (9))
        assert got == {p: _page(data, p) for p in (5, 6, 7, 8)}
        assert src.stats.snapshot()["retries"] == 1
        assert fault_proxy.request_count == 2
        assert [r.fault for r in fault_proxy.records] == [fault, None]


@pytest.mark.parametrize("fault", ["reset", "truncate", "bad_range"])
def test_one_transient_fault_on_open_is_retried(fault_proxy, db, fault):
    name, data = db
    fault_proxy.inject(fault, when=is_open)
    with _open(fault_proxy, name) as src:
        assert src.open() == data[:4096]
        assert src.stats.snapshot()["requests"] == 2


@pytest.mark.parametrize("fault,params,error,text", [
    ("reset", {}, RemoteError, "connection failed"),
    ("status", {"status": 500}, RemoteError, "HTTP 500"),
    ("truncate", {}, RemoteError, "short body"),
    ("bad_range", {}, ProtocolError, "wrong Content-Range"),
])
def test_a_persistent_fault_is_a_clear_error_after_the_retries(fault_proxy, db, fault, params, error, text):
    name, _ = db
    with _open(fault_proxy, name) as src:
        src.open()
        fault_proxy.clear()
        fault_proxy.inject(fault, times=None, when=is_fetch, **params)
        with pytest.raises(error) as info:
            src.fetch([9])
        msg = str(info.value)
        assert text in msg and "after 3 attempts" in msg
        assert fault_proxy.url(name) in msg and "bytes=8192-9215" in msg
        assert fault_proxy.request_count == 3  # first attempt + retries=2


def test_server_answering_200_instead_of_206_is_refused_not_used(fault_proxy, db):
    name, _ = db
    with _open(fault_proxy, name) as src:
        src.open()
        fault_proxy.inject("full200", when=is_fetch)
        before = src.stats.snapshot()["bytes_received"]
        with pytest.raises(RangeNotSupportedError, match="ignored the Range header"):
            src.fetch([3])
        assert src.stats.snapshot()["bytes_received"] == before  # the whole file was not read
        assert src.stats.snapshot()["retries"] == 0


def test_compressed_reply_is_refused_with_a_clear_error(fault_proxy, db):
    name, _ = db
    fault_proxy.inject("gzip", when=is_open)
    with _open(fault_proxy, name) as src, pytest.raises(RangeNotSupportedError, match="Content-Encoding: gzip"):
        src.open()


def test_slow_reply_past_the_timeout_is_retried_then_succeeds(fault_proxy, db):
    name, data = db
    with _open(fault_proxy, name, http_timeout=0.3) as src:
        src.open()
        fault_proxy.inject("slow", delay=1.5, when=is_fetch)
        t0 = time.monotonic()
        assert src.fetch([4]) == {4: _page(data, 4)}
        elapsed = time.monotonic() - t0
        assert 0.3 <= elapsed < 1.4  # gave up on the slow one at the timeout, did not wait it out
        assert src.stats.snapshot()["retries"] == 1


def test_persistently_slow_server_is_a_timeout_error_that_says_what_to_do(fault_proxy, db):
    name, _ = db
    with _open(fault_proxy, name, http_timeout=0.2, retry=Retry(total=1, backoff_factor=0.001)) as src:
        src.open()
        fault_proxy.inject("slow", delay=1.0, times=None, when=is_fetch)
        with pytest.raises(RemoteError, match=r"no reply within 0\.2s.*raise http_timeout"):
            src.fetch([4])


def test_retry_after_is_honoured_but_bounded(fault_proxy, db):
    name, data = db
    retry = Retry(total=2, backoff_factor=0.001, retry_after_max=0.25)
    with _open(fault_proxy, name, retry=retry) as src:
        src.open()
        fault_proxy.inject("status", status=503, headers={"Retry-After": "3600"}, when=is_fetch)
        t0 = time.monotonic()
        assert src.fetch([2]) == {2: _page(data, 2)}
        assert 0.25 <= time.monotonic() - t0 < 2.0


def test_validators_dropped_by_a_cdn_still_catch_a_size_change(fault_proxy, nginx, db, databases):
    name, _ = db
    with _open(fault_proxy, name) as src:
        src.open()
        nginx.place(name, databases["p4096"])  # a different size
        fault_proxy.inject("no_validators", times=None)
        with pytest.raises(RemoteChangedError, match="size"):
            src.fetch([2])


def test_file_replaced_between_fetches_through_the_proxy_is_never_mixed(fault_proxy, nginx, db, databases):
    name, data = db
    with _open(fault_proxy, name) as src:
        src.open()
        assert src.fetch([2]) == {2: _page(data, 2)}
        nginx.place(name, databases["wal"])
        with pytest.raises(RemoteChangedError, match="reopen to read the new version"):
            src.fetch([3])


def test_added_latency_applies_to_every_request_and_counts_match_the_source(fault_proxy, db):
    name, _ = db
    fault_proxy.latency = 0.05
    with _open(fault_proxy, name, max_ranges=1, coalesce_bytes=0) as src:  # one request per run
        t0 = time.monotonic()
        src.open()
        src.fetch([5, 6, 7, 8, 10])  # two runs (aligned blocks), requested concurrently
        assert time.monotonic() - t0 >= 0.10
        stats = src.stats.snapshot()
    assert fault_proxy.request_count == stats["requests"] == 3
    assert fault_proxy.bytes_sent == stats["bytes_received"] == 4096 + 5 * 1024


def test_proxy_is_usable_without_pytest_fixtures(nginx, db):
    name, data = db
    with FaultProxy(nginx.base_url, latency=0.0) as proxy:
        with _open(proxy, name) as src:
            assert src.open()[:16] == b"SQLite format 3\x00"
        assert proxy.records[0].status == 206 and proxy.records[0].range == "bytes=0-4095"


def test_s3_version_id_change_is_a_remote_change(fault_proxy, db):
    name, _ = db
    fault_proxy.inject("headers", set={"x-amz-version-id": "v1"}, when=is_open)
    with _open(fault_proxy, name) as src:
        src.open()
        assert src.version.startswith("s3-version=v1;")
        fault_proxy.inject("headers", set={"x-amz-version-id": "v2"}, when=is_fetch)
        with pytest.raises(RemoteChangedError, match="S3 versionId v1 -> v2"):
            src.fetch([2])


def test_every_request_is_a_get_asking_for_identity_with_the_pinned_preconditions(fault_proxy, db):
    name, _ = db
    with _open(fault_proxy, name, max_ranges=1, coalesce_bytes=0) as src:  # one request per run
        src.open()
        src.fetch([5, 6, 7, 8, 10])
    first, *later = fault_proxy.records
    assert [r.method for r in fault_proxy.records] == ["GET"] * 3  # no HEAD
    assert all(r.headers["accept-encoding"] == "identity" for r in fault_proxy.records)
    assert "if-match" not in first.headers and "if-range" not in first.headers
    etag = src.version.split(";")[0].split("=", 1)[1]
    assert all(r.headers["if-match"] == etag and r.headers["if-range"] == etag for r in later)
    assert sorted(r.range for r in later) == ["bytes=4096-8191", "bytes=9216-10239"]
