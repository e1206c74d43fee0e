"""Reference server: a SQLite file over the Turso sync protocol, Hrana and HTTP ranges.

    python -m turso_dbapi.server DB_PATH [--host 127.0.0.1] [--port 8080] [--auth-token TOKEN]

Routes (spec §8):

* ``POST /pull-updates`` — protobuf request, length-delimited header + pages answer, with
  time travel to any revision ever handed out (``page_log``);
* ``POST /v2/pipeline``, ``/v3/pipeline``, ``/v3/cursor``, ``/v1/execute``, ``/v1/batch``
  — Hrana over HTTP with real streams (``hrana_http``); every commit becomes a revision;
* ``GET``/``HEAD /<file name of DB_PATH>`` — the database file itself, with ``Range`` (206
  + ``Content-Range``) and an ``ETag`` that changes with every revision;
* ``GET /v1``, ``/v2``, ``/v3``, ``/health`` as sqld; anything else is 404 with a JSON error.

Bearer-token auth on every route when a token is configured, compared in constant time;
tokens are never logged. ``ReferenceServer(...).start()`` runs it in a thread (port 0 picks
a free port).
"""

from __future__ import annotations

import hmac
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

from ..protocol import revision, roaring
from ..protocol import sync_wire as wire
from ..protocol.protobuf import DecodeError, encode_varint
from . import hrana_http, hrana_ws
from .database import ServedDatabase
from .libsql_sync import EndOfGeneration, LibsqlSync, SyncRequestError
from .query_pages import QueryPages, QueryTraceError, as_ranges
from .file_route import PreconditionFailed, serve_file
from ..protocol.hrana import dumps
from .streams import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STREAMS

MAX_BODY = 64 * 1024 * 1024
MAX_LONG_POLL_MS = 60_000
_CHUNK_PAGES = 64
_EXPORT_RE = re.compile(r"^/export/(\d{1,10})$")
_SYNC_RE = re.compile(r"^/sync/(\d{1,10})/(\d{1,10})/(\d{1,10})(?:/[^/]*)?$")


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _STATUS_CODES.get(status, "ERROR")


_STATUS_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
                 409: "CONFLICT", 501: "NOT_IMPLEMENTED",
                 412: "PRECONDITION_FAILED", 413: "REQUEST_TOO_LARGE", 500: "INTERNAL_ERROR"}
_HRANA_POST = {
    "/v2/pipeline": hrana_http.pipeline,
    "/v3/pipeline": hrana_http.pipeline,
    "/v1/execute": hrana_http.v1_execute,
    "/v1/batch": hrana_http.v1_batch,
}


def _framed_page_size(page_id: int) -> int:
    body = (1 + len(encode_varint(page_id)) if page_id else 0) + 3 + wire.PAGE_SIZE
    return len(encode_varint(body)) + body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    _streaming = False  # True once a streamed 200 has started
    # Headers and a small body go out as two writes: with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per request on Linux).
    disable_nagle_algorithm = True
    server: _HTTPServer

    # -------------------------------------------------------------- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:  # request lines only: never headers, so never tokens
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str = "text/plain; charset=utf-8",
        headers: Iterable[Tuple[str, str]] = (),
        head_only: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        if status >= 400:
            # The request body may be unread (e.g. a 401): never parse it as the next request.
            self.send_header("Connection", "close")
            self.close_connection = True
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _authorized(self) -> bool:
        token = self.server.auth_token
        if token is None:
            return True
        got = self.headers.get("Authorization", "")
        expected = "Bearer " + token
        return hmac.compare_digest(got.encode("utf-8", "replace"), expected.encode("utf-8"))

    def _error(self, status: int, message: str, code: str = "", head_only: bool = False,
               headers: Iterable[Tuple[str, str]] = ()) -> None:
        body = dumps({"message": message, "code": code or _STATUS_CODES.get(status, "ERROR")})
        self._send(status, body, "application/json", headers=headers, head_only=head_only)

    def _chunked(self, chunks: Iterable[bytes], ctype: str) -> None:
        self._streaming = True
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        for chunk in chunks:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def _body(self, limit: int = MAX_BODY) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise HttpError(400, "invalid chunked request body")
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass  # trailers
                    return bytes(out)
                if len(out) + size > limit:
                    raise HttpError(413, "request body too large")
                out += self.rfile.read(size)
                self.rfile.readline(8)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(400, "invalid Content-Length")
        if length < 0 or length > limit:
            raise HttpError(413, "request body too large")
        data = self.rfile.read(length)
        if len(data) != length:
            raise HttpError(400, "request body shorter than Content-Length")
        return data

    def _dispatch(self, method: str) -> None:
        try:
            # A WebSocket upgrade may authenticate in its Hrana hello instead of a header.
            ws_hello_auth = (
                method == "GET"
                and self.headers.get("Upgrade", "").lower() == "websocket"
                and "Authorization" not in self.headers
            )
            if method != "OPTIONS" and not ws_hello_auth and not self._authorized():
                self._error(401, "Unauthorized: send the server's bearer credential in the Authorization header",
                            headers=[("WWW-Authenticate", "Bearer")], head_only=method == "HEAD")
                return
            path = self.path.split("?", 1)[0]
            if method == "POST":
                self._post(path)
            elif method in ("GET", "HEAD"):
                self._get(path, head_only=method == "HEAD")
            elif method == "OPTIONS":
                self._send(
                    204,
                    b"",
                    headers=[
                        ("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS"),
                        ("Access-Control-Allow-Headers", "*"),
                    ],
                )
            else:
                self._error(405, f"Method {method} is not allowed")
        except HttpError as exc:
            self._error(exc.status, exc.message, exc.code, head_only=method == "HEAD")
        except hrana_ws.UpgradeError as exc:
            self._error(exc.status, str(exc))
        except PreconditionFailed as exc:
            self._error(412, str(exc), head_only=method == "HEAD")
        except hrana_http.HranaHttpError as exc:
            self._send(exc.status, exc.body(), "application/json")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # the client sees the reason; the server keeps running
            if self._streaming:
                # Headers are out: cut the body short, which the client reports as a
                # truncated message, rather than splice an error page into it.
                self.close_connection = True
                return
            self._error(500, f"Internal Server Error: {exc}")
        finally:
            self._streaming = False

    def _post(self, path: str) -> None:
        if path == "/pull-updates":
            self._pull_updates(self._body())
            return
        if _SYNC_RE.match(path):
            # 4xx, not 5xx: libsql retries server errors with backoff before giving up.
            raise HttpError(
                405,
                "pushing WAL frames (libSQL offline writes) is not supported by this server: "
                "use remote writes (the default of libsql embedded replicas), which go "
                "through Hrana",
            )
        handler = _HRANA_POST.get(path)
        registry = self.server.db.streams
        if handler is not None:
            out = handler(registry, self._body(hrana_http.MAX_REQUEST_BYTES))
            self._send(200, out, "application/json")
        elif path == "/v3/cursor":
            lines = hrana_http.cursor(registry, self._body(hrana_http.MAX_REQUEST_BYTES))
            self._chunked(lines, "text/plain")
        else:
            raise HttpError(404, f"Not Found: no POST route {path}")

    def _get(self, path: str, head_only: bool) -> None:
        if path == "/" and self.headers.get("Upgrade", "").lower() == "websocket":
            hrana_ws.serve(self)
        elif path == "/" + self.server.db_name:
            serve_file(self, head_only=head_only)
        elif path in hrana_http.INDEX_TEXT:
            status, body = hrana_http.index(path)
            self._send(status, body, head_only=head_only)
        elif path == "/health":
            self._send(200, b"", head_only=head_only)
        elif path == "/info" or _EXPORT_RE.match(path) or _SYNC_RE.match(path):
            self._libsql_sync(path, head_only)
        else:
            raise HttpError(
                404, f"Not Found: no GET route {path} (the database file is at /{self.server.db_name})"
            )

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._dispatch("OPTIONS")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # -------------------------------------------------------------- routes

    def _libsql_sync(self, path: str, head_only: bool) -> None:
        self.server.db.refresh()
        sync = self.server.libsql
        try:
            if path == "/info":
                self._send(200, dumps(sync.info()), "application/json", head_only=head_only)
                return
            m = _EXPORT_RE.match(path)
            if m:
                data = sync.export(int(m.group(1)))
                self._send(200, data, "application/octet-stream", head_only=head_only)
                return
            gen, start, end = (int(g) for g in _SYNC_RE.match(path).groups())  # type: ignore[union-attr]
            data = sync.frames(gen, start, end)
            self._send(200, data, "application/octet-stream", head_only=head_only)
        except EndOfGeneration as exc:
            # libsql reads a 400 carrying "generation" as "no more frames in this generation"
            body = dumps({"generation": exc.current, "message": "end of generation"})
            self._send(400, body, "application/json", head_only=head_only)
        except SyncRequestError as exc:
            raise HttpError(409, str(exc), "SYNC_RANGE")

    def _pull_updates(self, body: bytes) -> None:
        db = self.server.db
        try:
            req = wire.PullUpdatesRequest.decode(body)
        except DecodeError as exc:
            raise HttpError(400, f"invalid pull-updates request: {exc}")
        if req.encoding == wire.ENCODING_ZSTD:
            raise HttpError(500, "Internal Server Error: zstd encoding is not supported")
        if req.stream_kind == wire.STREAM_MVCC_LOGICAL_LOG:
            raise HttpError(
                400, "MVCC logical-log pulls are not supported: this server serves pages"
            )
        db.refresh()
        latest = db.revision
        history = db.log.instance  # revisions of other histories are never served (revision.py)
        client_rev = _parse_rev(req.client_revision, "client_revision", history) or 0
        if (
            req.long_poll_timeout_ms
            and req.client_revision
            and not req.server_revision
            and client_rev == latest
        ):
            # Long poll (spec §2.6): hold until a newer revision exists or the timeout passes.
            timeout = min(req.long_poll_timeout_ms, MAX_LONG_POLL_MS) / 1000
            latest = db.wait_for_revision(latest, timeout)
        if not revision.same_history(req.server_revision, revision.mint(history, 1)):
            raise HttpError(410, revision.foreign(req.server_revision, history, latest))
        server_rev = _parse_rev(req.server_revision, "server_revision", history)
        if server_rev is None:
            server_rev = latest  # "" or unparseable: latest, as the Rust server does
        elif server_rev > latest:
            raise HttpError(
                400, f"unknown server revision {req.server_revision!r} (latest is {latest})"
            )
        if client_rev > server_rev:
            client_rev = 0  # a revision from another history: resend everything
        selector = None
        if req.server_pages_selector:
            try:
                selector = roaring.deserialize_ranges(req.server_pages_selector)
            except ValueError as exc:
                raise HttpError(400, f"invalid server_pages_selector: {exc}")
            cookie = int.from_bytes(req.server_pages_selector[:2], "little")
            self.server.count(f"selector_cookie_{cookie}", 1)
        elif req.server_query_selector:
            # Query bootstrap: the pages SQLite reads running the query at that revision.
            try:
                pages = self.server.query_pages.pages(req.server_query_selector, server_rev)
            except QueryTraceError as exc:
                raise HttpError(400, f"invalid server_query_selector: {exc}")
            selector = as_ranges(pages)
            self.server.count("query_bootstraps", 1)
        db_size, plan = db.log.plan(client_rev, server_rev, selector)
        header = wire.PullUpdatesResponseHeader(
            server_revision=revision.mint(history, server_rev), db_size=db_size, protocol=wire.PROTOCOL_PAGES
        )
        head = wire.frame(header.encode())
        length = len(head) + sum(_framed_page_size(pid) for pid, _ in plan)
        # Counted and logged before the reply goes out: a client that has read the reply
        # (and a test looking at the log right after) must find the request recorded.
        self.server.count("pull_requests", 1)
        self.server.count("pages_sent", len(plan))
        self.server.pull_log.append(
            PullRecord(
                req,
                {k.lower(): v for k, v in self.headers.items()},
                revision.mint(history, server_rev),
                db_size,
                [p for p, _ in plan],
            )
        )
        self._streaming = True
        self.send_response(200)
        self.send_header("Content-Type", "application/protobuf")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        out = [head]
        for page_id, page in db.log.read(plan):
            out.append(wire.encode_page_frame(page_id, page))
            if len(out) >= _CHUNK_PAGES:
                self.wfile.write(b"".join(out))
                out = []
        self.wfile.write(b"".join(out))


def _parse_rev(text: str, field: str, history: str) -> Optional[int]:
    try:
        return revision.number_in(text, history)
    except ValueError as exc:  # thousands of digits: int() would raise (and cost)
        raise HttpError(400, f"{field} {exc}")


@dataclass
class PullRecord:
    request: wire.PullUpdatesRequest
    headers: Dict[str, str]  # lower-cased names; Authorization included: never log these
    server_revision: str
    db_size: int
    page_ids: List[int]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, db: ServedDatabase, auth_token: Optional[str], verbose: bool) -> None:
        super().__init__(addr, _Handler)
        self.db = db
        self.db_name = os.path.basename(db.db_path)
        self.libsql = LibsqlSync(db.log)
        self.query_pages = QueryPages(db.log)
        self.ws_slots = threading.BoundedSemaphore(hrana_ws.MAX_SOCKETS)
        self.auth_token = auth_token
        self.verbose = verbose
        self.stats = {"pull_requests": 0, "pages_sent": 0}
        self._stats_lock = threading.Lock()
        # The last pull-updates exchanges, for tests and debugging (what real peers send).
        self.pull_log: Deque[PullRecord] = deque(maxlen=1000)

    def count(self, key: str, n: int) -> None:
        with self._stats_lock:
            self.stats[key] = self.stats.get(key, 0) + n


class ReferenceServer:
    """The server as an object: ``start()`` in a background thread, ``stop()``, ``.url``."""

    def __init__(
        self,
        db_path: str,
        host: str = "127.0.0.1",
        port: int = 0,
        auth_token: Optional[str] = None,
        log_path: Optional[str] = None,
        verbose: bool = False,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self.db = ServedDatabase(
            db_path, log_path, idle_timeout=idle_timeout, max_streams=max_streams
        )
        try:
            self.httpd = _HTTPServer((host, port), self.db, auth_token, verbose)
        except BaseException:
            self.db.close()
            raise
        self._thread: Optional[threading.Thread] = None

    @property
    def host(self) -> str:
        return self.httpd.server_address[0]

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        elif host == "0.0.0.0":
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def file_url(self) -> str:
        """Where plain ranged GETs read the database file."""
        return f"{self.url}/{self.httpd.db_name}"

    @property
    def stats(self) -> dict:
        return dict(self.httpd.stats)

    @property
    def pull_log(self) -> List[PullRecord]:
        return list(self.httpd.pull_log)

    def start(self) -> ReferenceServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="turso-reference-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()
        self.httpd.query_pages.close()
        self.db.close()

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
