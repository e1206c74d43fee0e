"""``python -m turso_dbapi [options] [DATABASE] [SQL]`` — a shell like ``python -m sqlite3``.

DATABASE is a local path, ``:memory:`` (the default), a ``file:`` URI, or a remote URL
(``https://``, ``http://``, ``libsql://``, ``turso://``). With SQL, run it, print the
results as a table and exit; with a script on a pipe, run the script; on a terminal, an
interactive prompt. Exit status: 0 ok, 1 an SQL error, 2 bad usage, a bad URL or an
unreachable server — always one ``Error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

from . import __version__
from . import connect as _connect
from .errors import Error, ProgrammingError
from .cli.shell import OK, USAGE, Shell
from .url import OPTIONS, is_remote, parse_options, redact, split_url_options


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m turso_dbapi",
        description="Run SQL on a local or remote SQLite database (lazily read over HTTP).",
        epilog="Remote options (-o NAME=VALUE, also accepted in the URL query string): "
        + ", ".join(sorted(n for n in OPTIONS if n != "url")),
    )
    p.add_argument(
        "database", nargs="?", default=":memory:", help="path, file: URI or URL (default :memory:)"
    )
    p.add_argument("sql", nargs="?", help="SQL to run instead of the prompt")
    p.add_argument("--partial", action="store_true", help="read the remote lazily (partial=true)")
    p.add_argument("--local-path", metavar="PATH", help="where the replica lives (local_path=)")
    p.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="bearer token for the remote (default: $TURSO_AUTH_TOKEN)",
    )
    p.add_argument(
        "-o",
        dest="options",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="any remote option, e.g. -o segment_size=256k",
    )
    p.add_argument("-v", "--version", action="version", version=f"turso_dbapi {__version__}")
    return p


class UsageError(Exception):
    pass


def _options(args: argparse.Namespace, remote: bool) -> Dict[str, Any]:
    raw: Dict[str, Any] = {}
    for item in args.options:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"-o expects NAME=VALUE, got {item!r}")
        raw[name.strip()] = value
    if args.partial:
        raw["partial"] = True
    if args.local_path:
        raw["local_path"] = args.local_path
    token = args.auth_token or (os.environ.get("TURSO_AUTH_TOKEN") if remote else None)
    if token:
        raw["auth_token"] = token
    return parse_options(raw)  # unknown names and bad values raise ProgrammingError


def open_database(args: argparse.Namespace) -> Any:
    target: str = args.database
    scheme, sep, _ = target.partition("://")
    if sep and not is_remote(target):
        raise UsageError(
            f"unsupported URL scheme {scheme!r} in {redact(target)}; use http(s)://, "
            "libsql://, turso://, a file: URI or a local path"
        )
    remote = is_remote(target) or any(o.startswith("url=") for o in args.options)
    try:
        opts = _options(args, remote)
    except ProgrammingError as exc:
        raise UsageError(str(exc)) from None
    kwargs: Dict[str, Any] = {"isolation_level": None}  # autocommit, as python -m sqlite3
    if target.startswith("file:"):
        kwargs["uri"] = True
    conn = _connect(target, **kwargs, **opts)
    try:
        # Fail now (exit 2), not on the first statement, if it is not a database.
        conn.execute("PRAGMA schema_version").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def _open_error(target: str, exc: BaseException) -> str:
    shown = redact(split_url_options(target)[0]) if is_remote(target) else target
    text = str(exc)
    return text if shown in text else f"cannot open {shown}: {text}"


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_intermixed_args(argv)  # options may follow DATABASE
    try:
        conn = open_database(args)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return USAGE
    except (Error, ValueError, OSError, ImportError) as exc:
        print(f"Error: {_open_error(args.database, exc)}", file=sys.stderr)
        return USAGE
    shell = Shell(conn)
    try:
        if args.sql is not None:
            return shell.run_script(args.sql)
        if sys.stdin.isatty():
            from sqlite3 import sqlite_version

            shown = redact(args.database) if is_remote(args.database) else args.database
            return shell.interact(
                f"turso_dbapi {__version__} (SQLite {sqlite_version}) on {shown} — .help for commands"
            )
        return shell.run_script(sys.stdin.read())
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (`... | head`): stop quietly, as other Unix tools do. Point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
