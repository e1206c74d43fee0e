"""``python -m turso_dbapi.server``: the reference server's command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Optional

from .app import ReferenceServer
from .streams import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_STREAMS


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
    parser.add_argument(
        "--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT,
        help="seconds an idle Hrana stream (and its transaction) lives (default: %(default)s)",
    )
    parser.add_argument(
        "--max-streams", type=int, default=DEFAULT_MAX_STREAMS,
        help="Hrana streams open at once (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log request lines")
    args = parser.parse_args(argv)
    try:
        server = ReferenceServer(
            args.db_path, args.host, args.port, args.auth_token, args.log_path, args.verbose,
            args.idle_timeout, args.max_streams,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    print(
        f"serving {args.db_path} at {server.url} (revision {server.db.revision_text!r}); "
        f"ranged GETs at {server.file_url}",
        flush=True,
    )
    while not done.wait(0.5):
        pass
    server.stop()
    return 0
