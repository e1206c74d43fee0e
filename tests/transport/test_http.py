"""The HTTP layer: the Retry value, the error boundary, idempotency, redaction, TLS."""

from __future__ import annotations

import dataclasses
import logging
import random
import time

import pytest
import trustme
from support.faultproxy import FaultProxy
from support.nginx import NginxServer, free_port

from turso_dbapi.errors import RemoteError
from turso_dbapi.transport.http import HttpClient, Retry, RetryEvent, split_credentials
from turso_dbapi.sources.range import HttpRangeSource

FAST = Retry(total=2, backoff_factor=0.001, backoff_max=0.01)


# -- Retry as a value --------------------------------------------------------------------


def test_retry_is_immutable_and_new_returns_a_policy_with_one_more_event():
    r0 = Retry(total=2)
    r1 = r0.new(RetryEvent("HTTP 503", 503))
    assert r0.history == () and r1.history == (RetryEvent("HTTP 503", 503),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r0.total = 5  # type: ignore[misc]
    assert not r1.exhausted()
    r3 = r1.new(RetryEvent("x")).new(RetryEvent("y"))
    assert r1.new(RetryEvent("x")).exhausted() is False and r3.exhausted() is True


def test_zero_retries_means_the_first_failure_is_final():
    assert Retry(total=0).new(RetryEvent("reset")).exhausted()


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    rng = random.Random(7)
    r = Retry(total=20, backoff_factor=0.1, backoff_max=1.0)
    assert r.backoff(rng) == 0.0  # nothing failed yet
    for n in range(1, 12):
        r = r.new(RetryEvent("x"))
        cap = min(1.0, 0.1 * 2 ** (n - 1))
        samples = [r.backoff(rng) for _ in range(50)]
        assert all(cap / 2 <= s <= cap for s in samples)
        assert len(set(samples)) > 1  # jittered


def test_retry_after_accepts_seconds_and_dates_and_is_bounded():
    r = Retry(retry_after_max=30.0)
    assert r.parse_retry_after("5") == 5.0
    assert r.parse_retry_after("86400") == 30.0
    assert r.parse_retry_after(None) is None and r.parse_retry_after("soon") is None
    now = 1_700_000_000.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 12))
    assert r.parse_retry_after(date, now=now) == pytest.approx(12.0)
    past = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now - 100))
    assert r.parse_retry_after(past, now=now) == 0.0


def test_a_request_the_server_never_saw_is_retryable_for_any_method():
    r = Retry()
    assert r.allows(sent=False, idempotent=False)
    assert r.allows(sent=True, idempotent=True)
    assert not r.allows(sent=True, idempotent=False)


# -- error boundary, idempotency, counters -----------------------------------------------


def _closed_port_url(path: str = "x.db") -> str:
    return f"http://127.0.0.1:{free_port()}/{path}"


def test_connection_refused_is_retried_then_a_remote_error_that_says_what_to_do():
    client = HttpClient(_closed_port_url(), retry=FAST)
    with pytest.raises(RemoteError) as info:
        client.request("POST", data=b"abc")  # never sent, so even POST is retried
    msg = str(info.value)
    assert "could not connect" in msg and "ECONNREFUSED" in msg and "after 3 attempts" in msg
    assert "check the URL" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert client.stats.snapshot()["requests"] == 3 and client.stats.snapshot()["retries"] == 2


def test_non_idempotent_request_is_not_retried_after_the_server_may_have_seen_it(fault_proxy):
    client = HttpClient(fault_proxy.url("x.db"), retry=FAST)
    fault_proxy.inject("reset", times=None)
    with pytest.raises(RemoteError, match="connection failed"):
        client.request("POST", data=b"payload")
    assert fault_proxy.request_count == 1
    fault_proxy.clear()
    with pytest.raises(RemoteError):
        client.request("POST", data=b"payload", idempotent=True)  # caller vouches: retried
    assert fault_proxy.request_count == 3


def test_statuses_outside_the_retry_set_are_not_retried(fault_proxy):
    client = HttpClient(fault_proxy.url("x.db"), retry=FAST)
    fault_proxy.inject("status", status=403, times=None)
    with pytest.raises(RemoteError) as info:
        client.request("GET")
    assert info.value.status == 403 and "access denied" in str(info.value)
    assert fault_proxy.request_count == 1


def test_body_bytes_sent_and_received_are_counted(nginx):
    nginx.place("count.bin", b"z" * 3000)
    client = HttpClient(nginx.url("count.bin"))
    reply = client.request("GET", headers={"Range": "bytes=0-999"})
    assert reply.status == 206 and reply.body == b"z" * 1000
    assert client.stats.snapshot() == {"requests": 1, "bytes_sent": 0, "bytes_received": 1000,
                                       "pages_fetched": 0, "retries": 0}


# -- secrets -----------------------------------------------------------------------------


def test_url_password_and_secret_query_values_never_reach_messages_logs_or_reprs(caplog):
    caplog.set_level(logging.DEBUG, logger="turso_dbapi")
    url = _closed_port_url("db.sqlite?X-Amz-Signature=s1gnature-5ecret&token=t0ken-5ecret&v=1")
    url = url.replace("http://", "http://alice:pa55word-5ecret@")
    src = HttpRangeSource(url, auth_token="bearer-5ecret", retry=FAST)
    with pytest.raises(RemoteError) as info:
        src.open()
    shown = [str(info.value), repr(info.value), info.value.url, repr(src), src.display_url,
             repr(src._http._session.auth)] + [r.getMessage() for r in caplog.records]
    assert len(caplog.records) >= 3
    for text in shown:
        for secret in ("pa55word-5ecret", "s1gnature-5ecret", "t0ken-5ecret", "bearer-5ecret", "alice"):
            assert secret not in text, (secret, text)
    assert "v=1" in src.display_url  # harmless parameters stay


def test_split_credentials_moves_user_info_out_of_the_url():
    assert split_credentials("https://u%40x:p%3Aw@h.example/db") == ("https://h.example/db", ("u@x", "p:w"))
    assert split_credentials("https://h.example/db") == ("https://h.example/db", None)


def test_callable_token_is_asked_on_every_attempt(fault_proxy, nginx):
    nginx.place("cb.bin", b"q" * 10)
    tokens = iter(["t1", "t2", "t3"])
    client = HttpClient(fault_proxy.url("cb.bin"), auth_token=lambda: next(tokens), retry=FAST)
    fault_proxy.inject("status", status=503)
    assert client.request("GET").body == b"q" * 10
    assert next(tokens) == "t3"  # two attempts, two evaluations


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_nginx(tmp_path_factory):
    """nginx with a certificate for 127.0.0.1 from a test CA (HTTPS at ``tls_url``); yields
    the server and the CA's certificate (what a client passes as ``verify=``)."""
    d = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    leaf = authority.issue_cert("127.0.0.1")
    chain, key, ca_cert = d / "chain.pem", d / "key.pem", d / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(chain))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(chain), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(ca_cert))
    cert = ca_cert
    srv = NginxServer(d / "srv", tls_cert=chain, tls_key=key).start()
    # a database header (page size 4096, payload fractions 64/32/32) and one empty leaf page
    srv.place("tls.db", (b"SQLite format 3\x00\x10\x00\x01\x01\x00\x40\x20\x20" + bytes(76)
                         + b"\x0d\x00\x00\x00\x00\x10\x00\x00").ljust(4096, b"\x00"))
    try:
        yield srv, cert
    finally:
        srv.stop()


def test_tls_verification_is_on_by_default_and_fails_clearly_without_retrying(tls_nginx):
    srv, _ = tls_nginx
    src = HttpRangeSource(srv.tls_url("tls.db"), retry=FAST)
    with pytest.raises(RemoteError, match="TLS certificate verification failed.*verify=") as info:
        src.open()
    assert src.stats.snapshot()["retries"] == 0
    assert srv.tls_url("tls.db") in str(info.value)


def test_tls_with_the_ca_bundle_or_verification_off_reads_the_file(tls_nginx):
    srv, cert = tls_nginx
    with HttpRangeSource(srv.tls_url("tls.db"), verify=str(cert)) as src:
        assert src.open()[:16] == b"SQLite format 3\x00" and src.page_size == 4096
    with HttpRangeSource(srv.tls_url("tls.db"), verify=False) as src, pytest.warns(Warning, match="Unverified HTTPS"):
        src.open()  # opting out still warns


def test_proxy_latency_is_a_plain_attribute_for_benchmarks(nginx):
    nginx.place("lat.bin", b"l" * 10)
    with FaultProxy(nginx.base_url, latency=0.03) as proxy:
        client = HttpClient(proxy.url("lat.bin"))
        t0 = time.monotonic()
        for _ in range(3):
            client.request("GET")
        assert time.monotonic() - t0 >= 0.09
