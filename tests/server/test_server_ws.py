"""Hrana over WebSocket on the reference server (``ws://``): the Python ``libsql-client``
needs it for transactions (its HTTP mode refuses them), ``@libsql/client`` speaks it for
``ws://`` URLs. Raw frames check the handshake and the auth paths."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct

import aiohttp
import libsql_client
import pytest

TOKEN = "ws-t0ken"


def test_libsql_client_python_over_websocket(turso_server_factory):
    srv = turso_server_factory(auth_token=TOKEN)
    url = srv.url.replace("http://", "ws://")
    with libsql_client.create_client_sync(url, auth_token=TOKEN) as c:
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        c.execute("INSERT INTO t(v) VALUES (?)", [2**62 + 1])
        assert c.execute("SELECT v FROM t").rows[0][0] == 2**62 + 1
        tx = c.transaction()
        tx.execute("INSERT INTO t(v) VALUES ('rolled back')")
        assert tx.execute("SELECT count(*) FROM t").rows[0][0] == 2
        assert srv.db_sql("SELECT count(*) FROM t") == [["1"]]  # uncommitted: invisible
        tx.rollback()
        assert c.execute("SELECT count(*) FROM t").rows[0][0] == 1
        tx = c.transaction()
        tx.execute("INSERT INTO t(v) VALUES ('committed')")
        tx.commit()
        assert srv.db_sql("SELECT count(*) FROM t") == [["2"]]
        assert c.batch(["SELECT 1", ("SELECT ?", [2])])[1].rows[0][0] == 2
        with pytest.raises(libsql_client.LibsqlError) as info:
            c.execute("INSERT INTO t(id) VALUES (1)")
        assert info.value.code.startswith("SQLITE_CONSTRAINT")
    # A wrong token: the server answers the hello with hello_error and serves nothing. The
    # client pipelines its first request behind the hello; when the hello_error arrives
    # before that request is written, libsql-client closes its socket first and the send
    # fails with aiohttp's "Cannot write to closing transport" (its race, seen once in a
    # CI rehearsal). That is still a refusal; the error text is checked on a try that wins.
    errors = []
    for _ in range(5):
        with libsql_client.create_client_sync(url, auth_token="wrong") as c:
            with pytest.raises(Exception) as info:
                c.execute("SELECT 1")
        errors.append(info.value)
        if isinstance(info.value, libsql_client.LibsqlError):
            break
        assert isinstance(info.value, aiohttp.ClientConnectionResetError), repr(info.value)
    assert isinstance(errors[-1], libsql_client.LibsqlError), errors
    assert "Unauthorized" in str(errors[-1]) and "wrong" not in str(errors[-1])


def test_libsql_client_js_over_websocket(node_clients, turso_server_factory):
    srv = turso_server_factory(auth_token=TOKEN)
    out = node_clients.run("libsql_client.mjs", SCENARIO="ws",
                           URL=srv.url.replace("http://", "ws://"), TOKEN=TOKEN)
    assert out == {"big": "9007199254740993", "in_tx": 2, "after_rollback": 1,
                   "after_commit": 2, "multiple": 4, "constraint": "SQLITE_CONSTRAINT_PRIMARYKEY"}


def _upgrade(srv, headers=(), protocols="hrana3, hrana2"):
    host, port = srv.url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET / HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             f"Sec-WebSocket-Protocol: {protocols}", *headers, "", ""]
    s.sendall("\r\n".join(lines).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s, head.decode()


def _send(s, obj):
    data = json.dumps(obj).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    s.sendall(struct.pack(">BB", 0x81, 0x80 | len(data)) + mask + masked)


def _recv(s):
    b1, b2 = s.recv(1)[0], s.recv(1)[0]
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack(">H", s.recv(2))[0]
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return b1 & 0x0F, data


def test_websocket_handshake_and_auth(turso_server_factory):
    srv = turso_server_factory(auth_token=TOKEN)
    s, head = _upgrade(srv, ["Authorization: Bearer nope"])
    assert head.startswith("HTTP/1.1 401")  # a wrong header is refused at the upgrade
    s.close()
    s, head = _upgrade(srv, [f"Authorization: Bearer {TOKEN}"], protocols="hrana3")
    assert head.startswith("HTTP/1.1 400")  # no subprotocol this server speaks
    s.close()
    s, head = _upgrade(srv)
    assert head.startswith("HTTP/1.1 101") and "Sec-WebSocket-Protocol: hrana2" in head
    _send(s, {"type": "hello", "jwt": "nope"})
    op, data = _recv(s)
    assert json.loads(data)["type"] == "hello_error"
    s.close()
    s, head = _upgrade(srv, [f"Authorization: Bearer {TOKEN}"])
    _send(s, {"type": "hello", "jwt": None})
    assert json.loads(_recv(s)[1]) == {"type": "hello_ok"}
    _send(s, {"type": "request", "request_id": 1, "request": {"type": "open_stream", "stream_id": 0}})
    assert json.loads(_recv(s)[1])["type"] == "response_ok"
    _send(s, {"type": "request", "request_id": 2,
              "request": {"type": "execute", "stream_id": 0, "stmt": {"sql": "SELECT 9e999"}}})
    op, data = _recv(s)
    assert b"1e999" in data and json.loads(data)["response"]["result"]["rows"][0][0]["value"] == float("inf")
    _send(s, {"type": "request", "request_id": 3,
              "request": {"type": "execute", "stream_id": 9, "stmt": {"sql": "SELECT 1"}}})
    err = json.loads(_recv(s)[1])
    assert err["type"] == "response_error" and "stream 9 is not open" in err["error"]["message"]
    s.close()


def test_websocket_sessions_are_bounded(turso_server_factory, monkeypatch):
    srv = turso_server_factory()
    monkeypatch.setattr(srv.server.httpd, "ws_slots", __import__("threading").BoundedSemaphore(2))
    held = [_upgrade(srv)[0] for _ in range(2)]
    s, head = _upgrade(srv)
    assert head.startswith("HTTP/1.1 503")
    s.close()
    held.pop().close()  # a session ends: its slot is free again
    for _ in range(50):
        s, head = _upgrade(srv)
        if head.startswith("HTTP/1.1 101"):
            break
        s.close()
        __import__("time").sleep(0.05)
    assert head.startswith("HTTP/1.1 101")
    for s_ in held + [s]:
        s_.close()
