"""Reference server: a SQLite file over the Turso sync protocol and plain HTTP ranges.

    python -m turso_dbapi.server DB_PATH [--host 127.0.0.1] [--port 8080] [--auth-token TOKEN]

Routes (spec §8):

* ``POST /pull-updates`` — protobuf request, length-delimited header + pages answer, with
  time travel to any revision ever handed out (``page_log``);
* ``POST /v2/pipeline`` — the Hrana subset (``hrana``) on one shared connection; writes
  become new revisions;
* ``GET``/``HEAD`` of any other path — the database file itself, with ``Range`` (206 +
  ``Content-Range``) and an ``ETag`` that changes with every revision; ``GET /`` is 404.

Bearer-token auth when a token is configured, compared in constant time; tokens are never
logged. ``ReferenceServer(...).start()`` runs it in a thread (port 0 picks a free port).
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

from ..protocol import revision, roaring
from ..protocol import sync_wire as wire
from .pipeline import PipelineRequestError
from .page_log import read_bytes
from ..protocol.protobuf import DecodeError, encode_varint
from .database import ServedDatabase

MAX_BODY = 64 * 1024 * 1024
MAX_LONG_POLL_MS = 60_000
_CHUNK_PAGES = 64
MAX_REV_DIGITS = revision.MAX_DIGITS  # a u64 revision has at most 20 decimal digits
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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

    def _body(self) -> bytes:
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
                if len(out) + size > MAX_BODY:
                    raise HttpError(413, "request body too large")
                out += self.rfile.read(size)
                self.rfile.readline(8)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(400, "invalid Content-Length")
        if length < 0 or length > MAX_BODY:
            raise HttpError(413, "request body too large")
        data = self.rfile.read(length)
        if len(data) != length:
            raise HttpError(400, "request body shorter than Content-Length")
        return data

    def _dispatch(self, method: str) -> None:
        try:
            if method != "OPTIONS" and not self._authorized():
                self._send(401, b"Unauthorized", headers=[("WWW-Authenticate", "Bearer")])
                return
            path = self.path.split("?", 1)[0]
            if method == "POST":
                body = self._body()
                if path == "/pull-updates":
                    self._pull_updates(body)
                elif path == "/v2/pipeline":
                    self._pipeline(body)
                else:
                    self._send(404, b"Not Found")
            elif method in ("GET", "HEAD"):
                if path == "/":
                    self._send(404, b"Not Found", head_only=method == "HEAD")
                else:
                    self._file(head_only=method == "HEAD")
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
                self._send(405, b"Method Not Allowed")
        except HttpError as exc:
            self._send(exc.status, exc.message.encode())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # the client sees the reason; the server keeps running
            if self._streaming:
                # Headers are out: cut the body short, which the client reports as a
                # truncated message, rather than splice an error page into it.
                self.close_connection = True
                return
            self._send(500, f"Internal Server Error: {exc}".encode())
        finally:
            self._streaming = False

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
        history = db.log.instance
        client_rev = _parse_rev(req.client_revision, "client_revision", history)
        if client_rev is None:
            client_rev = 0  # unparseable, or of another history: resend everything
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
            # Serving this log's revision of that number would mix two databases (revision.py).
            raise HttpError(
                410, f"revision {req.server_revision!r} belongs to another history of this "
                f"database: the server's page log was reset (its history is now {history!r}, "
                f"at revision {revision.mint(history, latest)!r}); bootstrap the replica afresh")
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

    def _pipeline(self, body: bytes) -> None:
        try:
            request = json.loads(body or b"null")
        except ValueError as exc:
            raise HttpError(400, f"invalid JSON: {exc}")
        except RecursionError:  # the decoder recurses per nesting level
            raise HttpError(400, "invalid JSON: nested too deeply")
        try:
            response = self.server.db.run_pipeline(request)
        except PipelineRequestError as exc:
            raise HttpError(400, str(exc))
        except RecursionError:  # a value nested just below the decoder's limit
            raise HttpError(400, "invalid pipeline request: nested too deeply")
        self._send(200, json.dumps(response).encode(), "application/json")

    def _file(self, head_only: bool) -> None:
        # Served from the page log, not the file: always exactly one revision's bytes, even
        # while a checkpoint is pending or a write is in progress.
        db = self.server.db
        db.refresh()
        rev = db.revision
        size = db.log.db_size_at(rev) * wire.PAGE_SIZE
        etag = f'"{db.log.instance}-{rev}"'
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range != etag:
            range_header = None  # the client's copy is stale: send the whole file
        if_match = self.headers.get("If-Match")
        if if_match not in (None, "*") and etag not in [t.strip() for t in if_match.split(",")]:
            raise HttpError(412, "Precondition Failed: the database changed")
        span = _parse_range(range_header, size) if range_header else None
        if span == "unsatisfiable":
            self._send(
                416,
                b"Range Not Satisfiable",
                headers=[("Content-Range", f"bytes */{size}")],
                head_only=head_only,
            )
            return
        start, end = span if isinstance(span, tuple) else (0, size)
        headers = [("ETag", etag), ("Accept-Ranges", "bytes")]
        status = 200
        if isinstance(span, tuple):
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
            status = 206
        if head_only:
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.sqlite3")
            self.send_header("Content-Length", str(end - start))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            return
        data = read_bytes(db.log, rev, start, end)
        self._send(status, data, "application/vnd.sqlite3", headers)


def _parse_rev(text: str, field: str, history: str) -> Optional[int]:
    """Its number in this ``history``; None when not ours (or of another history)."""
    number = text.rpartition("-")[2]
    if text.isascii() and number.isdigit() and len(number) > MAX_REV_DIGITS:  # int() would cost
        raise HttpError(400, f"{field} has {len(number)} digits; revisions have at most "
                             f"{MAX_REV_DIGITS}")
    parsed = revision.parse(text)
    if parsed is None or parsed[0] not in (None, history):
        return None
    return parsed[1]


def _parse_range(header: str, size: int):
    """``(start, end_exclusive)``, ``"unsatisfiable"``, or None to ignore (multi-range)."""
    m = _RANGE_RE.match(header.strip())
    if not m:
        return None
    first, last = m.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - n), size)
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or (last != "" and int(last) < start):
        return "unsatisfiable"
    return (start, end)


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
    ) -> None:
        self.db = ServedDatabase(db_path, log_path)
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
        self.db.close()

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m turso_dbapi.server",
        description="Serve a SQLite database over the Turso sync protocol.",
    )
    parser.add_argument(
        "db_path", help="SQLite database file (created if missing; 4096-byte pages)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--auth-token",
        default=os.environ.get("TURSO_SERVER_AUTH_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' (or set TURSO_SERVER_AUTH_TOKEN)",
    )
    parser.add_argument("--log-path", help="page-version log (default: DB_PATH-revlog)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log request lines")
    args = parser.parse_args(argv)
    try:
        server = ReferenceServer(
            args.db_path, args.host, args.port, args.auth_token, args.log_path, args.verbose
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    print(f"serving {args.db_path} at {server.url} (revision {server.db.revision_text!r})", flush=True)
    while not done.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
