"""HttpRangeSource against a real nginx: open/fetch costs, validation, version pinning, auth."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from support._threads import run_threads
from support.databases import make_database
from support.nginx import NginxServer

from turso_dbapi.errors import (
    DatabaseError,
    OperationalError,
    RangeNotSupportedError,
    RemoteChangedError,
    RemoteError,
)
from turso_dbapi.transport.http import Retry
from turso_dbapi.sources.range import HttpRangeSource, page_runs, parse_page_size

FAST = Retry(total=2, backoff_factor=0.001, backoff_max=0.01)


def _source(url: str, **kw) -> HttpRangeSource:
    kw.setdefault("retry", FAST)
    kw.setdefault("http_timeout", 5.0)
    return HttpRangeSource(url, **kw)


def _page(data: bytes, pgno: int, ps: int) -> bytes:
    return data[(pgno - 1) * ps:pgno * ps]


def test_open_is_one_ranged_get_of_the_leading_bytes(nginx, databases):
    nginx.place("open1.db", databases["p4096"])
    before = len(nginx.access_log_lines())
    with _source(nginx.url("open1.db")) as src:
        head = src.open()
        assert src.stats.snapshot()["requests"] == 1
        assert src.stats.snapshot()["bytes_received"] == 4096
        assert head == Path(databases["p4096"]).read_bytes()[:4096]
        assert src.page_size == 4096
        assert src.size == Path(databases["p4096"]).stat().st_size
        assert src.version.startswith('etag="')
    lines = nginx.access_log_lines()[before:]
    assert lines == ["GET /open1.db range=bytes=0-4095 status=206 bytes=4096"]


@pytest.mark.parametrize("name,page_size", [("p1024", 1024), ("p4096", 4096), ("p65536", 65536)])
def test_page_size_comes_from_header_offset_16_including_65536(nginx, databases, name, page_size):
    nginx.place(f"ps-{name}.db", databases[name])
    with _source(nginx.url(f"ps-{name}.db")) as src:
        src.open()
        assert src.page_size == page_size
        assert src.n_pages * page_size == src.size


def test_parse_page_size_rejects_non_powers_of_two():
    header = bytearray(100)
    header[16:18] = (1000).to_bytes(2, "big")
    with pytest.raises(DatabaseError):
        parse_page_size(bytes(header))
    header[16:18] = (1).to_bytes(2, "big")
    assert parse_page_size(bytes(header)) == 65536


def test_page_runs_groups_sorted_distinct_pages():
    assert page_runs([9, 3, 4, 5, 4, 20, 10]) == [(3, 5), (9, 10), (20, 20)]
    assert page_runs([]) == []


@pytest.mark.parametrize("name", ["p1024", "p4096", "p65536", "wal"])
def test_fetched_pages_equal_the_file_bytes(nginx, databases, name):
    data = Path(databases[name]).read_bytes()
    nginx.place(f"eq-{name}.db", data)
    with _source(nginx.url(f"eq-{name}.db")) as src:
        src.open()
        ps, n = src.page_size, src.n_pages
        want = sorted({1, 2, n // 2, n // 2 + 1, n - 1, n})
        got = src.fetch(want)
        assert sorted(got) == want
        for p in want:
            assert got[p] == _page(data, p, ps), p


def test_fetch_sends_one_request_per_contiguous_run_with_exact_bytes(nginx, databases):
    nginx.place("runs.db", databases["p1024"])
    with _source(nginx.url("runs.db"), max_ranges=1, coalesce_bytes=0) as src:
        src.open()
        before = src.stats.snapshot()
        got = src.fetch([8, 5, 6, 7, 13, 20])  # runs that are aligned blocks (9): 5..8 is 4 KiB
        after = src.stats.snapshot()
        assert sorted(got) == [5, 6, 7, 8, 13, 20]
        assert after["requests"] - before["requests"] == 3
        assert after["bytes_received"] - before["bytes_received"] == 6 * 1024
        assert after["pages_fetched"] - before["pages_fetched"] == 6


def test_pages_past_the_size_are_absent_and_cost_nothing(nginx, databases):
    nginx.place("past.db", databases["p4096"])
    with _source(nginx.url("past.db")) as src:
        src.open()
        n = src.n_pages
        before = src.stats.snapshot()["requests"]
        assert src.fetch([n + 1, n + 50]) == {}
        assert src.stats.snapshot()["requests"] == before
        got = src.fetch([n, n + 1])
        assert list(got) == [n]


def test_last_partial_page_is_zero_padded_to_page_size(nginx, databases):
    data = Path(databases["p1024"]).read_bytes() + b"\x07" * 100  # not a multiple of the page size
    nginx.place("partial.db", data)
    with _source(nginx.url("partial.db")) as src:
        src.open()
        n = src.n_pages
        assert n * 1024 > src.size
        page = src.fetch([n])[n]
        assert page == b"\x07" * 100 + b"\x00" * 924


def test_empty_file_opens_as_an_empty_database(nginx):
    nginx.place("empty.db", b"")
    with _source(nginx.url("empty.db")) as src:
        assert src.open() == b""
        assert src.size == 0 and src.n_pages == 0
        assert src.fetch([1]) == {}


def test_a_file_that_is_not_sqlite_is_a_database_error(nginx):
    nginx.place("page.html", b"<html>" + b"x" * 5000)
    with _source(nginx.url("page.html")) as src, pytest.raises(DatabaseError, match="not a database"):
        src.open()


def test_missing_file_is_a_remote_error_with_status_and_advice(nginx):
    with _source(nginx.url("nope.db")) as src, pytest.raises(RemoteError) as info:
        src.open()
    assert info.value.status == 404
    assert isinstance(info.value, OperationalError)
    assert "404" in str(info.value) and "check the path" in str(info.value)
    assert src.stats.snapshot()["requests"] == 1  # a 404 is not retried


@pytest.mark.parametrize("location", ["", "noetag"])
def test_replaced_file_raises_remote_changed_instead_of_mixing_versions(nginx, tmp_path, location):
    old = make_database(tmp_path / "old.db", page_size=1024, rows=300, seed=1)
    new = make_database(tmp_path / "new.db", page_size=1024, rows=300, seed=2)
    assert old.stat().st_size == new.stat().st_size  # same size: only the validators tell
    name = f"replaced-{location or 'etag'}.db"
    nginx.place(name, old)
    with _source(nginx.url(name, location)) as src:
        src.open()
        assert src.fetch([2])[2] == _page(old.read_bytes(), 2, 1024)
        nginx.place(name, new)
        with pytest.raises(RemoteChangedError) as info:
            src.fetch([2, 3])
        msg = str(info.value)
        assert "remote database changed since it was opened" in msg
        assert "reopen" in msg
        assert ("ETag" if not location else "Last-Modified") in msg
        assert src.stats.snapshot()["retries"] == 0  # a changed file is final, not retried


def test_server_ignoring_range_is_refused_without_reading_the_body(nginx, databases):
    nginx.place("norange.db", databases["p4096"])
    with _source(nginx.url("norange.db", "norange")) as src:
        with pytest.raises(RangeNotSupportedError, match="ignored the Range header"):
            src.open()
        assert src.stats.snapshot()["bytes_received"] == 0


def test_revalidate_costs_one_request_and_tells_whether_the_version_is_unchanged(nginx, tmp_path):
    first = make_database(tmp_path / "a.db", page_size=1024, rows=100, seed=3)
    second = make_database(tmp_path / "b.db", page_size=1024, rows=100, seed=4)
    nginx.place("reval.db", first)
    with _source(nginx.url("reval.db")) as src:
        src.open()
        pinned = src.version
    with _source(nginx.url("reval.db")) as again:
        assert again.revalidate(pinned) is True
        assert again.stats.snapshot()["requests"] == 1
    nginx.place("reval.db", second)
    with _source(nginx.url("reval.db")) as again:
        assert again.revalidate(pinned) is False
        assert again.stats.snapshot()["requests"] == 1
        assert again.fetch([2])[2] == _page(second.read_bytes(), 2, 1024)  # pinned to the new one


def test_bearer_token_is_sent_and_a_callable_token_is_evaluated_per_request(nginx, databases):
    nginx.place("tok.db", databases["p1024"])
    calls = []

    def token() -> str:
        calls.append(1)
        return NginxServer.TOKEN

    with _source(nginx.url("tok.db", "bearer"), auth_token=token) as src:
        src.open()
        src.fetch([3])
        src.fetch([7])
    assert len(calls) == 3
    with _source(nginx.url("tok.db", "bearer"), auth_token=NginxServer.TOKEN) as src:
        src.open()


def test_wrong_token_is_a_401_error_that_never_shows_the_token(nginx, databases, caplog):
    nginx.place("tok2.db", databases["p1024"])
    secret = "wrong-token-d0-not-print"
    caplog.set_level(logging.DEBUG, logger="turso_dbapi")
    with _source(nginx.url("tok2.db", "bearer"), auth_token=secret) as src:
        with pytest.raises(RemoteError) as info:
            src.open()
        assert info.value.status == 401
        assert "auth_token" in str(info.value)
        assert secret not in str(info.value) and secret not in repr(src) and secret not in repr(src._http._session.auth)
    assert caplog.records, "expected a debug line per request"
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_url_credentials_become_basic_auth_and_never_show(nginx, databases, caplog):
    nginx.place("basic.db", databases["p1024"])
    user, password = NginxServer.BASIC_USER, NginxServer.BASIC_PASSWORD
    url = nginx.url("basic.db", "basic").replace("http://", f"http://{quote(user)}:{quote(password, safe='')}@")
    caplog.set_level(logging.DEBUG, logger="turso_dbapi")
    with _source(url) as src:
        src.open()
        src.fetch([2])
        assert password not in src.display_url and quote(password, safe="") not in src.display_url
        assert password not in repr(src)
    bad = url.replace(quote(password, safe=""), "nope-5ecret")
    with _source(bad) as src, pytest.raises(RemoteError) as info:
        src.open()
    assert info.value.status == 401 and "nope-5ecret" not in str(info.value)
    for r in caplog.records:
        assert password not in r.getMessage() and quote(password, safe="") not in r.getMessage()
        assert "nope-5ecret" not in r.getMessage()


def test_debug_log_has_one_line_per_request_with_range_status_and_bytes(nginx, databases, caplog):
    nginx.place("log.db", databases["p1024"])
    caplog.set_level(logging.DEBUG, logger="turso_dbapi.http")
    with _source(nginx.url("log.db")) as src:
        src.open()
        src.fetch([5, 6, 7, 8])
    lines = [r.getMessage() for r in caplog.records if r.name == "turso_dbapi.http"]
    assert len(lines) == 2
    assert "GET" in lines[0] and "range=bytes=0-4095" in lines[0] and "206" in lines[0] and "4096 B" in lines[0]
    assert "range=bytes=4096-8191" in lines[1] and "4096 B" in lines[1]


def test_verify_is_on_by_default():
    src = HttpRangeSource("https://example.invalid/x.db")
    assert src._http._session.verify is True
    src.close()
    src = HttpRangeSource("https://example.invalid/x.db", verify=False)
    assert src._http._session.verify is False
    src.close()


def test_from_options_uses_the_option_table_names(nginx, databases):
    from turso_dbapi.url import parse_options, with_defaults

    opts = with_defaults(parse_options({"http_timeout": "7", "retries": "1", "partial": "1"}))
    src = HttpRangeSource.from_options("http://127.0.0.1:9/x.db", opts)
    assert src._http.timeout == 7.0 and src._http.retry.total == 1 and src._http._session.verify is True
    src.close()


def test_runs_of_one_fetch_are_requested_concurrently_up_to_parallel(nginx, databases):
    from support.faultproxy import FaultProxy

    nginx.place("par.db", databases["p1024"])
    data = Path(databases["p1024"]).read_bytes()
    want = [3, 10, 20, 30]  # four runs
    with FaultProxy(nginx.base_url, latency=0.2) as proxy:
        with _source(proxy.url("par.db"), parallel=4, max_ranges=1, coalesce_bytes=0) as src:
            src.open()
            t0 = time.monotonic()
            got = src.fetch(want)
            parallel_s = time.monotonic() - t0
        with _source(proxy.url("par.db"), parallel=1, max_ranges=1, coalesce_bytes=0) as src:
            src.open()
            t0 = time.monotonic()
            assert src.fetch(want) == got
            serial_s = time.monotonic() - t0
    assert got == {p: _page(data, p, 1024) for p in want}
    assert serial_s >= 0.8 and parallel_s < 0.6


def test_one_source_serves_many_threads_with_the_right_pages(nginx, databases):
    nginx.place("threads.db", databases["p4096"])
    data = Path(databases["p4096"]).read_bytes()
    errors = []
    with _source(nginx.url("threads.db")) as src:
        src.open()
        n = src.n_pages

        def worker(k: int) -> None:
            try:
                for i in range(15):
                    pages = [(k * 37 + i * 11) % n + 1, (k * 53 + i * 5) % n + 1]
                    got = src.fetch(pages)
                    for p in pages:
                        assert got[p] == _page(data, p, 4096)
            except BaseException as exc:
                errors.append(exc)

        run_threads(worker, [(k,) for k in range(6)], timeout=30)
    assert errors == []


def test_defaults_are_the_option_table_defaults():
    from turso_dbapi.transport import http
    from turso_dbapi import url
    from turso_dbapi.sources import range as range_mod

    assert http.DEFAULT_TIMEOUT == url.OPTIONS["http_timeout"].default == 30.0
    assert http.DEFAULT_RETRIES == url.OPTIONS["retries"].default == 3
    assert http.Retry().total == 3
    assert range_mod.DEFAULT_OPEN_BYTES == 4096 and range_mod.DEFAULT_PARALLEL == 4
    assert url.OPTIONS["segment_size"].default == 128 * 1024
    assert url.OPTIONS["readahead_max"].default == 4 * 1024 * 1024


# -- multi-range (rule (6)) ----------------------------------------------------------------

from turso_dbapi.transport.http import TransientReplyError  # noqa: E402
from turso_dbapi.sources.range_reply import parse_byteranges  # noqa: E402


def test_several_runs_are_one_multi_range_request_with_exact_pages(nginx, databases):
    nginx.place("multi.db", databases["p1024"])
    data = Path(databases["p1024"]).read_bytes()
    n = len(data) // 1024
    before = len(nginx.access_log_lines())
    with _source(nginx.url("multi.db")) as src:
        src.open()
        want = [10, 3, 4, 5, 9, 20, 40, n]  # five runs, the last page included
        got = src.fetch(want)
        assert got == {p: _page(data, p, 1024) for p in want}
        assert src.stats.snapshot()["requests"] == 2  # open + ONE multi-range GET
        assert src.multi_range
    assert len(nginx.access_log_lines()) - before == 2


def test_multi_range_requests_are_grouped_by_max_ranges(nginx, databases):
    nginx.place("groups.db", databases["p1024"])
    data = Path(databases["p1024"]).read_bytes()
    with _source(nginx.url("groups.db"), max_ranges=2, parallel=1) as src:
        src.open()
        want = [3, 5, 7, 9, 11]  # five runs: 2 + 2 + 1
        assert src.fetch(want) == {p: _page(data, p, 1024) for p in want}
        assert src.stats.snapshot()["requests"] == 1 + 3


def test_a_server_answering_multi_range_with_200_falls_back_to_one_request_per_run(
        fault_proxy, served_databases, databases):
    from support.faultproxy import is_fetch

    data = Path(databases["p1024"]).read_bytes()
    fault_proxy.inject("full200", when=lambda r: is_fetch(r) and "," in (r.range or ""))
    with _source(fault_proxy.url("p1024.db"), coalesce_bytes=0) as src:
        src.open()
        want = [5, 6, 7, 8, 13, 20]  # three runs, each an aligned block (9)
        assert src.fetch(want) == {p: _page(data, p, 1024) for p in want}
        assert not src.multi_range  # remembered: no more multi-range requests
        st = src.stats.snapshot()
        assert st["requests"] == 1 + 1 + 3
        assert st["bytes_received"] == 4096 + 6 * 1024  # the 200's body was never read
        assert src.fetch([30, 40]) == {p: _page(data, p, 1024) for p in (30, 40)}
    assert sorted(r.status for r in fault_proxy.records) == [200, 206, 206, 206, 206, 206, 206]


def test_without_multi_range_runs_with_small_gaps_are_one_request(fault_proxy, served_databases, databases):
    from support.faultproxy import is_fetch

    data = Path(databases["p1024"]).read_bytes()
    fault_proxy.inject("full200", when=lambda r: is_fetch(r) and "," in (r.range or ""))
    with _source(fault_proxy.url("p1024.db"), coalesce_bytes=8 * 1024) as src:
        src.open()
        want = [5, 8, 21, 24, 40]  # gaps of 2, 12, 15 pages: (5..8) and (21..24), 40 apart
        got = src.fetch(want)
        assert got == {p: _page(data, p, 1024) for p in want}  # only the pages asked
        st = src.stats.snapshot()
        assert st["requests"] == 1 + 1 + 3  # open, the refused multi-range, 3 spans
        assert st["bytes_received"] == 4096 + 4 * 1024 + 4 * 1024 + 1024  # gap bytes too
        # a span that is no aligned block is widened to block boundaries (41..48: one page
        # more, within the gap bound) and read as the aligned blocks of (9)
        assert src.fetch([42, 48]) == {p: _page(data, p, 1024) for p in (42, 48)}
        assert src.stats.snapshot()["requests"] == 5 + 2  # 41..44, 45..48
    # (records are appended when the proxy is done: the refused 200 may finish last)
    assert sorted(r.range for r in fault_proxy.records if r.status == 206)[1:] == [
        "bytes=20480-24575", "bytes=39936-40959", "bytes=4096-8191",
        "bytes=40960-45055", "bytes=45056-49151"]


def test_a_replaced_file_during_a_multi_range_fetch_is_a_remote_change(nginx, databases):
    nginx.place("mchange.db", databases["p1024"])
    with _source(nginx.url("mchange.db")) as src:
        src.open()
        nginx.place("mchange.db", databases["p4096"])
        with pytest.raises(RemoteChangedError):
            src.fetch([3, 9, 20])


def _multipart(parts, boundary="XYZ", total=100000):
    out = b""
    for first, body in parts:
        out += (f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {first}-{first + len(body) - 1}/{total}\r\n\r\n").encode() + body
    return out + f"\r\n--{boundary}--\r\n".encode()


def test_parse_byteranges_is_strict():
    ct = "multipart/byteranges; boundary=XYZ"
    body = _multipart([(0, b"abcd"), (100, b"efgh")])
    assert parse_byteranges(body, ct) == [(0, 3, 100000, b"abcd"), (100, 103, 100000, b"efgh")]
    assert parse_byteranges(body.replace(b"XYZ", b"Q Z"), 'multipart/byteranges; boundary="Q Z"')[1][3] == b"efgh"
    bad = [
        body.replace(b"bytes 100-103", b"bytes 100-104"),  # length does not match the range
        body.replace(b"Content-Range: bytes 0-3/100000\r\n", b""),  # no Content-Range
        body.replace(b"bytes 0-3/100000", b"bytes 3-0/100000"),  # malformed
        body[:-20],  # truncated
        b"garbage",
    ]
    for b in bad:
        with pytest.raises(TransientReplyError):
            parse_byteranges(b, ct)
    with pytest.raises(TransientReplyError):
        parse_byteranges(body, "multipart/byteranges")  # no boundary


class _OneRangeServer:
    """A tiny server answering a multi-range request its own way: ``merge`` (ONE range
    covering every range asked, as RFC 9110 allows), ``first`` (only the first range),
    ``parts`` (multipart, the first two ranges merged into one part) or ``parts-missing``
    (the same without the last range)."""

    def __init__(self, data: bytes, mode: str):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.ranges = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                spec = self.headers["Range"].split("=", 1)[1]
                outer.ranges.append(spec)
                pairs = [tuple(int(x) for x in r.split("-")) for r in spec.split(",")]
                if mode.startswith("parts") and len(pairs) > 1:
                    # multipart: the first two ranges merged into one part; "parts-missing"
                    # leaves the last range out
                    merged = [(pairs[0][0], pairs[1][1])] + pairs[2:]
                    if mode == "parts-missing":
                        merged = merged[:-1]
                    body = b"".join(
                        f"\r\n--B\r\nContent-Range: bytes {a}-{b}/{len(data)}\r\n\r\n".encode() + data[a:b + 1]
                        for a, b in merged) + b"\r\n--B--\r\n"
                    self.send_response(206)
                    self.send_header("Content-Type", "multipart/byteranges; boundary=B")
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("ETag", '"v1"')
                    self.end_headers()
                    self.wfile.write(body)
                    return
                a, b = (pairs[0][0], pairs[-1][1]) if mode == "merge" else pairs[0]
                body = data[a:b + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/x.db"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("mode", ["merge", "first", "parts", "parts-missing"])
def test_a_multi_range_answer_that_covers_the_ranges_is_used_otherwise_falls_back(databases, mode):
    data = Path(databases["p1024"]).read_bytes()
    server = _OneRangeServer(data, mode)
    try:
        with _source(server.url, parallel=1, coalesce_bytes=0) as src:
            src.open()
            want = [5, 6, 7, 8, 9, 20]  # aligned blocks (9): 5..8, 9, 20
            assert src.fetch(want) == {p: _page(data, p, 1024) for p in want}
            if mode in ("merge", "parts"):  # parts covering every range: sliced, multi-range stays on
                assert src.multi_range and src.stats.snapshot()["requests"] == 2
            else:  # only the first range: per-run requests, multi-range off
                assert not src.multi_range and src.stats.snapshot()["requests"] == 2 + 3
        assert server.ranges[1] == "4096-8191,8192-9215,19456-20479"
    finally:
        server.close()


# -- background read-ahead through a real connection (readahead.Lookahead) --------------------

def _lookahead_threads(besides=()):
    """Background read-ahead threads alive now, other than ``besides`` (those of connections
    other tests left to the garbage collector, which are not this test's business)."""
    return [t for t in threading.enumerate() if t.name.startswith("tdb-lookahead") and t not in besides]


def test_a_cold_scan_reads_ahead_in_the_background_fetches_nothing_twice_and_stops_at_close(
        fault_proxy, served_databases, databases, tmp_path, monkeypatch):
    import sqlite3

    import turso_dbapi

    earlier = set(_lookahead_threads())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fault_proxy.latency = 0.01
    size = Path(databases["p4096"]).stat().st_size
    opts = dict(partial=True, retries=2, http_timeout=5.0, segment_size=4096, readahead_max=32 * 1024)
    con = turso_dbapi.connect(fault_proxy.url("p4096.db"), local_path=str(tmp_path / "r" / "db"), **opts)
    ref = sqlite3.connect(databases["p4096"])
    for sql in ("SELECT count(*), sum(length(payload)) FROM items", "SELECT * FROM docs ORDER BY id",
                "SELECT * FROM kv"):
        assert con.execute(sql).fetchall() == ref.execute(sql).fetchall(), sql
    st = con.stats()
    la = con._replica.handler.lookahead.stats()
    assert la["lookahead_windows"] > 0 and la["lookahead_errors"] == 0
    assert st.bytes_received <= size  # nothing fetched twice
    ranges = [r.range for r in fault_proxy.records]
    assert len(ranges) == len(set(ranges)) == st.requests
    con.close()
    assert _lookahead_threads(besides=earlier) == []


def test_closing_mid_scan_waits_for_background_fetches_and_raises_nothing(
        fault_proxy, served_databases, databases, tmp_path, monkeypatch):
    import turso_dbapi

    earlier = set(_lookahead_threads())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fault_proxy.latency = 0.05
    opts = dict(partial=True, retries=2, http_timeout=5.0, segment_size=4096, readahead_max=16 * 1024)
    con = turso_dbapi.connect(fault_proxy.url("p4096.db"), local_path=str(tmp_path / "r" / "db"), **opts)
    cur = con.execute("SELECT id, length(payload) FROM items")
    for _ in range(200):  # part of the scan: background windows are in flight
        assert cur.fetchone() is not None
    handler = con._replica.handler
    assert handler.lookahead.stats()["lookahead_windows"] > 0
    cur.close()
    con.close()
    assert _lookahead_threads(besides=earlier) == []
    assert handler.lookahead.stats()["lookahead_held"] == 0
    assert handler.lookahead.stats()["lookahead_errors"] == 0


@pytest.mark.parametrize("sql, fewer", [
    ("SELECT name, price FROM items WHERE id = 777", False),  # point lookup: exactly the same
    ("SELECT count(*), avg(price) FROM items WHERE category = 3 AND price BETWEEN 10 AND 400", False),
    ("SELECT count(*), max(v) FROM kv", True),  # a B-tree walked in order: siblings ride along
])
def test_prefetch_never_costs_more_requests_and_saves_some_on_in_order_walks(
        served_databases, databases, tmp_path, monkeypatch, sql, fewer):
    import sqlite3

    import turso_dbapi

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ref = sqlite3.connect(databases["p4096"]).execute(sql).fetchall()
    cost = {}
    for prefetch in (False, True):
        con = turso_dbapi.connect(served_databases["p4096"], partial=True, retries=2, http_timeout=5.0,
                                  segment_size=4096, readahead_max=4096, prefetch=prefetch,
                                  local_path=str(tmp_path / f"p{prefetch}" / "db"))
        assert con.execute(sql).fetchall() == ref
        st = con.stats()
        cost[prefetch] = (st.requests, st.bytes_received)
        con.close()
    # measured: kv scan 15 -> 7 requests (61440 -> 61696 bytes: multipart headers)
    if fewer:
        assert cost[True][0] < cost[False][0], cost
    else:
        assert cost[True] == cost[False], cost


def test_failed_background_fetches_are_counted_never_raised_and_the_reader_fetches_itself(
        fault_proxy, served_databases, databases, tmp_path, monkeypatch):
    import sqlite3

    import turso_dbapi

    earlier = set(_lookahead_threads())

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def big(req):  # background windows grow past the synchronous cap (16 KiB here)
        rng = req.range or ""
        if not rng.startswith("bytes="):
            return False
        spans = [[int(x) for x in part.split("-")] for part in rng[6:].split(",")]
        return sum(b - a + 1 for a, b in spans) > 16 * 1024  # one range, or a window's runs

    fault_proxy.inject("status", status=503, when=big, times=None)
    opts = dict(partial=True, retries=1, http_timeout=5.0, segment_size=4096, readahead_max=16 * 1024)
    con = turso_dbapi.connect(fault_proxy.url("p4096.db"), local_path=str(tmp_path / "r" / "db"), **opts)
    ref = sqlite3.connect(databases["p4096"])
    sql = "SELECT count(*), sum(length(payload)) FROM items"
    assert con.execute(sql).fetchall() == ref.execute(sql).fetchall()
    la = con._replica.handler.lookahead.stats()
    assert la["lookahead_errors"] > 0
    assert any(r.status == 503 for r in fault_proxy.records)
    con.close()
    assert _lookahead_threads(besides=earlier) == []


def test_connect_reads_one_header_block_at_open_whatever_the_segment_size(
        nginx, databases, tmp_path, monkeypatch):
    import sqlite3

    import turso_dbapi

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    nginx.place("seg.db", databases["p4096"])
    before = len(nginx.access_log_lines())
    # issue 13: the first 128 KiB segment at open made a cold point lookup cost ~14x its
    # minimum bytes; the open reads page 1 (one aligned 4 KiB block), the rest on evidence
    con = turso_dbapi.connect(nginx.url("seg.db"), partial=True, segment_size="32k")
    assert nginx.access_log_lines()[before:] == ["GET /seg.db range=bytes=0-4095 status=206 bytes=4096"]
    assert con._replica.store.is_present(1) and not con._replica.store.is_present(2)
    sql = "SELECT name FROM sqlite_schema ORDER BY name"
    assert con.execute(sql).fetchall() == sqlite3.connect(databases["p4096"]).execute(sql).fetchall()
    assert con.stats().requests == 1  # the schema is on page 1
    con.close()
