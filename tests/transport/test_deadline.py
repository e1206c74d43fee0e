"""``http_deadline``: a server dripping the body cannot hold a request past it (issue 14, item 8).

The fault proxy forwards real replies (nginx; the reference server) but sends their bodies
a few bytes at a time, each chunk well inside ``http_timeout``: only a total deadline ends
such a request. Without one, these reads take minutes (128 KiB at 512 B/s is 256 s).
"""

from __future__ import annotations

import time

import pytest
from support.faultproxy import FaultProxy, is_fetch

import turso_dbapi


def is_page_fetch(req) -> bool:
    return req.method == "POST" and req.path.endswith("/pull-updates")


def test_a_dripping_range_server_fails_connect_at_the_deadline(fault_proxy, nginx, databases):
    nginx.place("drip.db", databases["p4096"])
    fault_proxy.inject("drip", times=None, rate=512)
    t0 = time.monotonic()
    with pytest.raises(turso_dbapi.RemoteError, match="no complete reply within http_deadline 1s") as err:
        turso_dbapi.connect(fault_proxy.url("drip.db"), partial=True, http_timeout=2, http_deadline=1,
                            retries=1)
    assert time.monotonic() - t0 < 20  # two attempts of 1 s (+ backoff), not 2 x 256 s
    assert "after 2 attempts" in str(err.value)
    assert isinstance(err.value, turso_dbapi.OperationalError)


def test_a_dripping_range_server_fails_a_lazy_read_and_a_later_read_works(fault_proxy, nginx, databases,
                                                                           tmp_path):
    nginx.place("drip2.db", databases["p4096"])
    conn = turso_dbapi.connect(fault_proxy.url("drip2.db?http_deadline=1&http_timeout=2&retries=0"),
                               partial=True, local_path=str(tmp_path / "c.db"))
    fault_proxy.inject("drip", times=None, when=is_fetch, rate=512)
    with pytest.raises(turso_dbapi.RemoteError, match="http_deadline"):
        conn.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM items").fetchall()
    fault_proxy.clear_faults()
    rows = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    assert rows > 0 and rows == conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    conn.close()


def test_a_dripping_turso_server_fails_a_lazy_read_at_the_deadline(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(3000) FROM generate_series(1, 200)")
    with FaultProxy(turso_server.url) as proxy:
        conn = turso_dbapi.connect(proxy.base_url, local_path=str(tmp_path / "r.db"), partial=True,
                                   bootstrap_prefix=4096, http_timeout=2, http_deadline=1, retries=0)
        proxy.inject("drip", times=None, when=is_page_fetch, rate=512)
        t0 = time.monotonic()
        with pytest.raises(turso_dbapi.RemoteError, match="http_deadline 1s"):
            conn.execute("SELECT SUM(LENGTH(x)) FROM t").fetchall()
        assert time.monotonic() - t0 < 10
        proxy.clear_faults()
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (200,)
        conn.close()


def test_a_deadline_does_not_cut_replies_that_arrive_in_time(fault_proxy, nginx, databases, tmp_path):
    nginx.place("nodrip.db", databases["p4096"])
    conn = turso_dbapi.connect(fault_proxy.url("nodrip.db"), partial=False, http_deadline=30,
                               local_path=str(tmp_path / "c.db"))
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
