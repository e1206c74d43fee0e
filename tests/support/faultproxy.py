"""A fault-injecting HTTP proxy in front of a real server (pytest plugin + plain class).

``FaultProxy(upstream_base_url, latency=0.0)`` listens on a free loopback port and
forwards every request to the upstream (nginx in tests), one upstream connection per
request, keeping the client connection alive. Faults are scripted per request:

    proxy.inject("reset", times=1)                 # next request: RST, no response
    proxy.inject("status", status=503, headers={"Retry-After": "1"}, times=2)
    proxy.inject("truncate", when=is_fetch)        # only page fetches, not open()

Faults (``FAULTS``):
  reset      close the client connection with RST before any response
  status     answer ``status`` (default 500) with a small body and ``headers``; ``body``
             (bytes) replaces the body (a scripted reply), ``echo=True`` makes it the
             request's headers (a hostile server reflecting what it was sent)
  truncate   forward the reply but cut the body at ``keep`` (default half), then close
  full200    drop Range and preconditions upstream: 200 with the whole file
  bad_range  shift the Content-Range by ``shift`` bytes (default 1); body unchanged
  slow       wait ``delay`` seconds (default 2) before forwarding (past a client timeout)
  gzip       gzip the body and add ``Content-Encoding: gzip``
  no_validators  drop If-* preconditions from the request and ETag/Last-Modified from the
             reply (a cache that neither honours nor keeps validators)
  headers    set reply headers from ``set`` (a dict), e.g. ``{"x-amz-version-id": "v2"}``
  drip       forward the reply, but send its body ``chunk`` bytes (default 64) every
             ``chunk / rate`` seconds (``rate`` bytes/s, default 512): a slow-drip server
  garbage    forward the reply with its body replaced by random bytes of the same length
  drop_reply forward the request (the server acts on it), then RST instead of the reply: a
             reply lost after the server committed
  replace_body  forward, then answer 200 with ``body`` (bytes) instead of the reply

``times`` is how many matching requests the fault hits (``None``: every one). ``when``
selects requests (``is_open``: the leading-bytes read; ``is_fetch``: every other ranged
read). ``latency`` adds a fixed delay to every request (benchmarks set it, e.g. 0.02).
``keep_host=True`` forwards the client's ``Host`` header unchanged (a SigV4 signature covers
it, so an S3 server behind the proxy must see the host the client signed).
Counters: ``records`` (one ``Record`` per request: method, path, Range, status, body
bytes sent, fault, request headers), ``request_count``, ``bytes_sent``; ``clear()`` resets them.

Usable without pytest: ``with FaultProxy(url, latency=0.02) as proxy: proxy.url("x.db")``.
Fixture ``fault_proxy`` (function scope): a proxy in front of the session ``nginx``.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import random
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlsplit

try:
    import pytest
except ImportError:  # usable from benchmarks without pytest
    pytest = None  # type: ignore[assignment]

FAULTS = ("reset", "status", "truncate", "full200", "bad_range", "slow", "gzip", "no_validators", "headers",
          "drip", "garbage", "drop_reply", "replace_body")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade", "host",
        "content-length"}


@dataclasses.dataclass
class Request:
    """What a ``when`` predicate sees."""

    method: str
    path: str
    headers: Dict[str, str]
    body: bytes = b""

    @property
    def range(self) -> Optional[str]:
        return self.headers.get("range")


@dataclasses.dataclass
class Record:
    method: str
    path: str
    range: Optional[str]
    status: Optional[int]  # None: no response (reset)
    body_bytes: int
    fault: Optional[str]
    headers: Dict[str, str] = dataclasses.field(default_factory=dict, repr=False)  # lower-case names
    request_body: bytes = dataclasses.field(default=b"", repr=False)


def is_open(req: Request) -> bool:
    """The leading-bytes read of HttpRangeSource.open()."""
    return bool(req.range and req.range.replace(" ", "").startswith("bytes=0-"))


def is_fetch(req: Request) -> bool:
    """A ranged read of pages (any range not starting at byte 0)."""
    return bool(req.range) and not is_open(req)


@dataclasses.dataclass
class _Rule:
    fault: str
    times: Optional[int]
    when: Optional[Callable[[Request], bool]]
    params: Dict[str, Any]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without TCP_NODELAY, Nagle holds a small body
        # until the client's delayed ACK (~40 ms) on a keep-alive connection, as real servers
        # (which set it) do not.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def do_GET(self) -> None:
        self.server.proxy._handle(self)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout) is expected here


class FaultProxy:
    def __init__(self, upstream: str, *, latency: float = 0.0, keep_host: bool = False):
        parts = urlsplit(upstream)
        self.keep_host = keep_host
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.latency = latency
        self._rules: List[_Rule] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.records: List[Record] = []
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- control -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def inject(self, fault: str, *, times: Optional[int] = 1, when: Optional[Callable[[Request], bool]] = None,
               **params: Any) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._rules.append(_Rule(fault, times, when, params))

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.records)

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return sum(r.body_bytes for r in self.records)

    def start(self) -> FaultProxy:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request path --------------------------------------------------------------------

    def _take(self, req: Request) -> Optional[_Rule]:
        with self._lock:
            for rule in self._rules:
                if rule.when is None or rule.when(req):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def _record(self, h: _Handler, status: Optional[int], nbytes: int, rule: Optional[_Rule]) -> None:
        with self._lock:
            self.records.append(Record(h.command, h.path, h.headers.get("Range"), status, nbytes,
                                       rule.fault if rule else None,
                                       {k.lower(): v for k, v in h.headers.items()},
                                       getattr(h, "request_body", b"")))

    def _handle(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body_in = h.rfile.read(length) if length else None
        req = Request(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, body_in or b"")
        h.request_body = body_in or b""  # type: ignore[attr-defined]
        rule = self._take(req)
        fault = rule.fault if rule else None
        params = rule.params if rule else {}
        if self.latency:
            self._stop.wait(self.latency)
        if fault == "reset":
            self._record(h, None, 0, rule)
            _reset(h)
            return
        if fault == "status":
            status = int(params.get("status", 500))
            body = params.get("body", f"injected {status}\n".encode())
            if params.get("echo"):
                body = "".join(f"{k}: {v}\n" for k, v in h.headers.items()).encode()
            h.send_response(status)
            for k, v in params.get("headers", {}).items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            self._record(h, status, len(body) if h.command != "HEAD" else 0, rule)
            if h.command != "HEAD":  # recorded first: the client may act as soon as it has the body
                _write(h, body)
            return
        if fault == "slow":
            if self._stop.wait(float(params.get("delay", 2.0))):
                return
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in _HOP or (self.keep_host and k.lower() == "host")}
        if fault in ("full200", "no_validators"):
            dropped = ("if-range", "if-match", "if-unmodified-since")
            for k in list(headers):
                if k.lower() in dropped or (fault == "full200" and k.lower() == "range"):
                    del headers[k]
        status, reply_headers, body, head_length = self._forward(h.command, h.path, headers, body_in)
        if fault == "drop_reply":
            self._record(h, None, 0, rule)
            _reset(h)
            return
        if fault == "replace_body":
            status, body = 200, bytes(params.get("body", b"garbage"))
        if fault == "bad_range":
            shift = int(params.get("shift", 1))
            for i, (k, v) in enumerate(reply_headers):
                if k.lower() == "content-range" and v.startswith("bytes ") and "-" in v:
                    span, total = v[6:].split("/")
                    a, b = (int(x) for x in span.split("-"))
                    reply_headers[i] = (k, f"bytes {a + shift}-{b + shift}/{total}")
        if fault == "garbage":
            body = random.Random(len(body)).randbytes(len(body))  # same length, not a page
        if fault == "gzip":
            body = gzip.compress(body)
            reply_headers.append(("Content-Encoding", "gzip"))
        if fault == "headers":
            new = {k.lower(): v for k, v in params.get("set", {}).items()}
            reply_headers = [(k, v) for k, v in reply_headers if k.lower() not in new] + list(new.items())
        if fault == "no_validators":
            reply_headers = [(k, v) for k, v in reply_headers if k.lower() not in ("etag", "last-modified")]
        h.send_response(status)
        for k, v in reply_headers:
            h.send_header(k, v)
        # a HEAD reply has no body but the length of the GET's (a client sizes the file by it)
        h.send_header("Content-Length", head_length if h.command == "HEAD" and head_length else str(len(body)))
        h.end_headers()
        if h.command == "HEAD":
            self._record(h, status, 0, rule)
            return
        if fault == "truncate":
            keep = int(params.get("keep", len(body) // 2))
            self._record(h, status, keep, rule)
            _write(h, body[:keep])
            h.close_connection = True
            try:
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._record(h, status, len(body), rule)
        if fault == "drip":
            chunk = int(params.get("chunk", 64))
            pause = chunk / float(params.get("rate", 512))
            for i in range(0, len(body), chunk):
                if self._stop.is_set() or not _write(h, body[i:i + chunk]):
                    return
                h.wfile.flush()
                self._stop.wait(pause)
            return
        _write(h, body)

    def _forward(self, method: str, path: str, headers: Dict[str, str], body: Optional[bytes]):
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            reply_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            return resp.status, reply_headers, data, resp.getheader("Content-Length")
        finally:
            conn.close()


def _write(h: _Handler, data: bytes) -> bool:
    try:
        h.wfile.write(data)
        return True
    except OSError:
        h.close_connection = True  # the client gave up (e.g. its timeout fired)
        return False


def _reset(h: _Handler) -> None:
    """Abort the client connection: SO_LINGER 0 makes close() send RST."""
    h.close_connection = True
    try:
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()
    except OSError:
        pass


if pytest is not None:

    @pytest.fixture
    def fault_proxy(nginx):
        """A ``FaultProxy`` in front of the session nginx; ``fault_proxy.url(name)`` reaches
        ``nginx.url(name)`` through it. Stopped after the test."""
        proxy = FaultProxy(nginx.base_url).start()
        try:
            yield proxy
        finally:
            proxy.stop()
