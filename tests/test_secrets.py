"""Secrets in URLs and echoed by servers stay out of every log line and message
(issue 14, item 9).

libSQL tools write the token into the URL (``libsql://host?authToken=...``): it must
become the bearer header, and the endpoints must be built from the path. A secret that
has to stay in a URL (a presigned or token query) must not reach urllib3's DEBUG lines.
A hostile server echoing the request headers into an error body must not get the token
into our ``RemoteError``.
"""

from __future__ import annotations

import logging
import os

import pytest
from support.faultproxy import FaultProxy

import turso_dbapi

TOKEN = "tok-9f8e7d6c5b4a-SECRET"


def all_text(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_a_libsql_style_authtoken_query_is_the_bearer_token_and_never_logged(turso_server_factory,
                                                                              tmp_path, caplog):
    server = turso_server_factory(auth_token=TOKEN)
    server.db_sql("CREATE TABLE t(x)")
    server.db_sql("INSERT INTO t SELECT value FROM generate_series(1, 50)")
    caplog.set_level(logging.DEBUG)
    with FaultProxy(server.url) as proxy:
        conn = turso_dbapi.connect(f"{proxy.base_url}/?authToken={TOKEN}",
                                   local_path=str(tmp_path / "r.db"))
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (50,)
        assert [r.path for r in proxy.records] == ["/pull-updates"]  # not /?authToken=.../pull-updates
        assert proxy.records[0].headers["authorization"] == f"Bearer {TOKEN}"
        assert conn.pull() is False
        text = all_text(caplog)
        assert "pull-updates" in text  # the request lines were logged ...
        assert TOKEN not in text  # ... without the token
        assert TOKEN not in repr(conn._replica.source) and TOKEN not in str(conn.stats())
        conn.close()
        for name in os.listdir(tmp_path):
            with open(tmp_path / name, "rb") as f:
                assert TOKEN.encode() not in f.read(), name  # not saved with the URL
        # reopening by path with url=...?authToken=: the same remote, the token as a header
        conn = turso_dbapi.connect(str(tmp_path / "r.db"), url=f"{proxy.base_url}/?authToken={TOKEN}")
        server.db_sql("INSERT INTO t VALUES (51)")
        assert conn.pull() is True and conn.execute("SELECT COUNT(*) FROM t").fetchone() == (51,)
        assert proxy.records[-1].path == "/pull-updates"
        assert proxy.records[-1].headers["authorization"] == f"Bearer {TOKEN}"
        conn.close()


def test_a_secret_in_a_range_urls_query_stays_out_of_urllib3s_debug_log(nginx, databases, tmp_path, caplog):
    nginx.place("secret.db", databases["p4096"])
    caplog.set_level(logging.DEBUG)
    conn = turso_dbapi.connect(nginx.url("secret.db") + f"?token={TOKEN}&X-Amz-Signature={TOKEN}x",
                               partial=True, local_path=str(tmp_path / "c.db"))
    assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] > 0
    conn.close()  # its read-ahead threads stop with it
    urllib3_lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("GET /secret.db?" in line and "token=***" in line for line in urllib3_lines), urllib3_lines
    assert TOKEN not in all_text(caplog)


def test_a_server_echoing_the_request_headers_does_not_get_the_token_into_our_error(turso_server_factory,
                                                                                     tmp_path):
    server = turso_server_factory(auth_token=TOKEN)
    with FaultProxy(server.url) as proxy:
        proxy.inject("status", status=400, echo=True)
        with pytest.raises(turso_dbapi.RemoteError, match="status=400") as err:
            turso_dbapi.connect(proxy.base_url, auth_token=TOKEN, local_path=str(tmp_path / "r.db"))
    message = str(err.value)
    assert "Authorization: ***" in message or "authorization: ***" in message.lower()  # echoed, blanked
    assert TOKEN not in message and TOKEN not in repr(err.value)


def test_a_callable_token_echoed_back_is_blanked_too(turso_server_factory, tmp_path):
    server = turso_server_factory(auth_token=TOKEN)
    with FaultProxy(server.url) as proxy:
        proxy.inject("status", status=403, echo=True)
        with pytest.raises(turso_dbapi.RemoteError) as err:
            turso_dbapi.connect(proxy.base_url, auth_token=lambda: TOKEN, local_path=str(tmp_path / "r.db"))
    assert TOKEN not in str(err.value)
