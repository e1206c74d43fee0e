"""Hrana over WebSocket (``ws://host/``, subprotocols ``hrana2``/``hrana1``), as sqld.

Needed by clients whose HTTP mode has no interactive transactions (``libsql-client`` for
Python answers ``TRANSACTIONS_NOT_SUPPORTED`` over HTTP) and by ``ws://`` URLs.

One WebSocket is one session: ``hello`` (with the bearer token as ``jwt`` when the upgrade
carried no ``Authorization`` header), then ``request``s answered in order with
``response_ok``/``response_error``. Streams (``open_stream``/``close_stream``) are SQLite
connections of their own, living until closed or the socket ends (then rolled back);
stored SQL (``store_sql``/``close_sql``) is per socket, as Hrana 2 says. The frames are
RFC 6455, written here on top of the HTTP handler's socket; ``hrana3`` is not offered
(its cursors are not served over WebSocket), so clients use Hrana 2 semantics.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from typing import Any, Callable, Dict, Optional

from ..protocol.hrana import StmtError, dumps
from .pipeline import MAX_STORED_SQL, MAX_STORED_SQL_BYTES, Executor, PipelineRequestError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOLS = ("hrana2", "hrana1")  # in order of preference
MAX_MESSAGE = 16 * 1024 * 1024
MAX_STREAMS_PER_SOCKET = 64
MAX_SOCKETS = 64  # WebSocket sessions open at once (each holds a server thread)
_STREAM_REQUESTS = {"execute", "batch", "sequence", "describe", "get_autocommit"}


class WsClosed(Exception):
    pass


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def choose_subprotocol(header: str) -> Optional[str]:
    offered = [p.strip() for p in header.split(",") if p.strip()]
    for proto in SUBPROTOCOLS:
        if proto in offered:
            return proto
    return None


class WsConnection:
    """RFC 6455 frames over a handler's rfile/wfile (server side: unmasked out, masked in)."""

    def __init__(self, rfile: Any, wfile: Any) -> None:
        self.rfile = rfile
        self.wfile = wfile

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise WsClosed()
        return data

    def recv(self) -> Optional[str]:
        """The next text message; None when the peer closed."""
        parts = []
        size = 0
        while True:
            b1, b2 = self._read(2)
            fin, opcode = b1 & 0x80, b1 & 0x0F
            length = b2 & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", self._read(8))
            mask = self._read(4) if b2 & 0x80 else b"\0\0\0\0"
            size += length
            if size > MAX_MESSAGE:
                self.close(1009, "message too big")
                raise WsClosed()
            payload = self._read(length)
            if length and any(mask):
                key = (mask * (length // 4 + 1))[:length]
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
                    length, "big"
                )
            if opcode == 0x8:  # close
                self.close(1000, "")
                return None
            if opcode == 0x9:  # ping
                self._send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            parts.append(payload)
            if fin:
                return b"".join(parts).decode("utf-8", "replace")

    def _send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
        self.wfile.write(head + payload)
        self.wfile.flush()

    def send_json(self, obj: Any) -> None:
        self._send(0x1, dumps(obj))

    def close(self, code: int, reason: str) -> None:
        try:
            self._send(0x8, struct.pack(">H", code) + reason.encode()[:120])
        except OSError:
            pass


def serve(handler: Any) -> None:
    """Upgrade the HTTP handler's connection (``GET /``) and run a session on it."""
    key = handler.headers.get("Sec-WebSocket-Key")
    proto = choose_subprotocol(handler.headers.get("Sec-WebSocket-Protocol", ""))
    if not key or proto is None:
        raise UpgradeError(
            "WebSocket Hrana needs Sec-WebSocket-Key and a subprotocol among "
            + ", ".join(SUBPROTOCOLS)
        )
    slots = handler.server.ws_slots
    if not slots.acquire(blocking=False):
        raise UpgradeError(f"too many WebSocket sessions ({MAX_SOCKETS}): try again later", 503)
    try:
        _run(handler, key, proto)
    finally:
        slots.release()


def _run(handler: Any, key: str, proto: str) -> None:
    handler.send_response(101)
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept_key(key))
    handler.send_header("Sec-WebSocket-Protocol", proto)
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True  # the socket is the session's until it ends
    db = handler.server.db
    HranaWsSession(
        WsConnection(handler.rfile, handler.wfile), db.new_executor, db.refresh_after_write,
        handler.server.auth_token, authenticated="Authorization" in handler.headers,
    ).run()


class UpgradeError(ValueError):
    """A WebSocket upgrade request this server cannot accept (400, or 503 when full)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class HranaWsSession:
    """One socket's Hrana session."""

    def __init__(
        self,
        ws: WsConnection,
        make_executor: Callable[[], Executor],
        after_request: Callable[[], None],
        token: Optional[str],
        authenticated: bool,
    ) -> None:
        self.ws = ws
        self.make_executor = make_executor
        self.after_request = after_request
        self.token = token
        self.authenticated = authenticated or token is None
        self.streams: Dict[int, Executor] = {}
        self.sqls: Dict[int, str] = {}

    def run(self) -> None:
        try:
            hello = self._message()
            if hello is None:
                return
            if hello.get("type") != "hello":
                self.ws.close(1002, "the first message must be hello")
                return
            jwt = hello.get("jwt")
            if not self.authenticated:
                ok = isinstance(jwt, str) and hmac.compare_digest(
                    jwt.encode("utf-8", "replace"), (self.token or "").encode()
                )
                if not ok:
                    self.ws.send_json({"type": "hello_error", "error": {
                        "message": "Unauthorized: the hello's jwt is not this server's token",
                        "code": "UNAUTHORIZED"}})
                    # Serve nothing; let the client read the error and close (closing first
                    # would make its pipelined request fail with a bare connection reset).
                    while self._message() is not None:
                        pass
                    return
                self.authenticated = True
            self.ws.send_json({"type": "hello_ok"})
            while True:
                msg = self._message()
                if msg is None:
                    return
                if msg.get("type") == "hello":
                    self.ws.send_json({"type": "hello_ok"})
                    continue
                if msg.get("type") != "request" or not isinstance(msg.get("request"), dict):
                    self.ws.close(1002, "expected a request message")
                    return
                rid = msg.get("request_id")
                try:
                    response = self._request(msg["request"])
                    self.ws.send_json({"type": "response_ok", "request_id": rid,
                                       "response": response})
                except StmtError as exc:
                    self.ws.send_json({"type": "response_error", "request_id": rid,
                                       "error": exc.to_json()})
                except (PipelineRequestError, RecursionError) as exc:
                    msg_ = str(exc) if isinstance(exc, PipelineRequestError) else "nested too deeply"
                    self.ws.send_json({"type": "response_error", "request_id": rid,
                                       "error": {"message": msg_, "code": "PROTOCOL_ERROR"}})
                finally:
                    self.after_request()
        except (WsClosed, OSError):
            return
        finally:
            for ex in self.streams.values():
                _close(ex)
            self.streams.clear()
            self.after_request()

    def _message(self) -> Optional[dict]:
        text = self.ws.recv()
        if text is None:
            return None
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            self.ws.close(1007, "invalid JSON")
            raise WsClosed()
        if not isinstance(msg, dict):
            self.ws.close(1007, "a message must be a JSON object")
            raise WsClosed()
        return msg

    def _request(self, req: dict) -> dict:
        kind = req.get("type")
        if kind == "open_stream":
            sid = req.get("stream_id")
            if not isinstance(sid, int) or sid in self.streams:
                raise PipelineRequestError(f"stream id {sid!r} is invalid or already open")
            if len(self.streams) >= MAX_STREAMS_PER_SOCKET:
                raise StmtError(f"too many streams on this socket ({MAX_STREAMS_PER_SOCKET})",
                                "STREAMS_EXHAUSTED")
            ex = self.make_executor()
            ex.sqls = self.sqls  # stored SQL is per socket in Hrana over WebSocket
            self.streams[sid] = ex
            return {"type": "open_stream"}
        if kind == "close_stream":
            ex = self.streams.pop(req.get("stream_id"), None)
            if ex is not None:
                _close(ex)
            return {"type": "close_stream"}
        if kind == "store_sql":
            sql_id, sql = req.get("sql_id"), req.get("sql")
            if not isinstance(sql_id, int) or not isinstance(sql, str) or sql_id in self.sqls:
                raise PipelineRequestError(f"store_sql: bad or already stored sql_id {sql_id!r}")
            if len(self.sqls) >= MAX_STORED_SQL or len(sql.encode()) > MAX_STORED_SQL_BYTES:
                raise StmtError("too many or too large stored SQL texts", "SQL_STORE_TOO_MANY")
            self.sqls[sql_id] = sql
            return {"type": "store_sql"}
        if kind == "close_sql":
            self.sqls.pop(req.get("sql_id"), None)
            return {"type": "close_sql"}
        if kind in _STREAM_REQUESTS:
            ex = self.streams.get(req.get("stream_id"))
            if ex is None:
                raise PipelineRequestError(f"stream {req.get('stream_id')!r} is not open")
            sub = {k: v for k, v in req.items() if k != "stream_id"}
            out = ex.handle(sub)
            if out["type"] == "error":
                raise StmtError(out["error"]["message"], out["error"]["code"])
            return out["response"]
        raise PipelineRequestError(f"unsupported request type over WebSocket: {kind!r}")


def _close(ex: Executor) -> None:
    try:
        if ex.conn.in_transaction:
            ex.conn.rollback()
    finally:
        ex.conn.close()
