"""The shell behind ``python -m turso_dbapi``: statements, dot-commands, the prompt.

One ``Shell`` serves three inputs the way ``python -m sqlite3`` (3.12) and the ``sqlite3``
CLI do: SQL from the command line, a script from a pipe (no prompts; stops at the first
error), and an interactive prompt with readline history. Statements end where
``sqlite3.complete_statement`` says they do, so ``;`` inside strings, comments and
``CREATE TRIGGER ... BEGIN ...; END;`` bodies does not split them. A line starting with
``.`` at the start of a statement is a dot-command.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import sys
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import table
from ..errors import RemoteError

PROMPT = "turso> "
CONTINUATION = "  ...> "

HELP = """\
.tables            list tables and views
.schema [TABLE]    CREATE statements (of TABLE and its indexes and triggers)
.stats             requests, bytes and cache hits of the remote database
.pull              fetch and apply the remote's changes (local ones replayed on top)
.push              send the local changes to the remote
.sync              .push, then .pull
.version           versions of turso_dbapi and SQLite
.help              this text
.quit, .exit       leave (Ctrl-D does too)
SQL statements end with ';' and may span lines."""

# Exit codes (also used by __main__).
OK, SQL_ERROR, USAGE = 0, 1, 2


class Quit(Exception):
    """Raised by .quit/.exit; carries the exit code."""

    def __init__(self, code: int = OK) -> None:
        super().__init__(code)
        self.code = code


def history_path() -> str:
    """``$XDG_STATE_HOME/turso_dbapi/history`` (default ``~/.local/state/...``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "turso_dbapi", "history")


def split_statements(text: str) -> Tuple[List[str], str]:
    """Complete statements at the start of ``text`` and the incomplete remainder."""
    done: List[str] = []
    start = 0
    pos = text.find(";")
    while pos != -1:
        candidate = text[start : pos + 1]
        if sqlite3.complete_statement(candidate):
            if candidate.strip() != ";":
                done.append(candidate.strip())
            start = pos + 1
        pos = text.find(";", pos + 1)
    return done, text[start:]


def _stats_rows(stats: Any) -> List[Tuple[str, Any]]:
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        stats = dataclasses.asdict(stats)
    elif hasattr(stats, "_asdict"):
        stats = stats._asdict()
    if isinstance(stats, dict):
        return [(str(k), v) for k, v in stats.items()]
    return [("stats", stats)]


class Shell:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        out: Optional[IO[str]] = None,
        err: Optional[IO[str]] = None,
    ) -> None:
        self.conn = conn
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.commands: Dict[str, Callable[[List[str]], None]] = {
            ".tables": self.cmd_tables,
            ".schema": self.cmd_schema,
            ".stats": self.cmd_stats,
            ".pull": self.cmd_pull,
            ".push": self.cmd_push,
            ".sync": self.cmd_sync,
            ".version": self.cmd_version,
            ".help": self.cmd_help,
            ".quit": self.cmd_quit,
            ".exit": self.cmd_quit,
        }

    # -- output ------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def error(self, exc: BaseException) -> int:
        """Print ``Error: ...`` and return the exit code this error deserves."""
        print(f"Error: {exc}", file=self.err, flush=True)
        return USAGE if isinstance(exc, RemoteError) else SQL_ERROR

    # -- running -------------------------------------------------------------------------

    def execute(self, sql: str) -> None:
        cur = self.conn.execute(sql)
        if cur.description is None:
            return
        rows = cur.fetchall()
        if rows:
            self.say(table.render([d[0] for d in cur.description], rows))

    def dot(self, line: str) -> None:
        words = line.split()
        handler = self.commands.get(words[0])
        if handler is None:
            raise sqlite3.ProgrammingError(f"unknown command {words[0]}; .help lists commands")
        handler(words[1:])

    def run_one(self, item: str) -> int:
        """Run one statement or dot-command; print any error; return an exit code."""
        try:
            if item.startswith("."):
                self.dot(item)
            else:
                self.execute(item)
        except sqlite3.Error as exc:
            return self.error(exc)
        except KeyboardInterrupt:
            print("Interrupted", file=self.err, flush=True)
            return SQL_ERROR
        return OK

    def items(self, lines: Iterator[str]) -> Iterator[str]:
        """Statements and dot-commands from lines of a script, in order."""
        pending = ""
        for line in lines:
            if not pending.strip() and line.lstrip().startswith("."):
                pending = ""
                yield line.strip()
                continue
            pending += line if line.endswith("\n") else line + "\n"
            done, pending = split_statements(pending)
            yield from done
        if pending.strip():
            # A last statement without ';' still runs, as in sqlite3 and python -m sqlite3.
            yield pending.strip()

    def run_script(self, text: str) -> int:
        """Run a whole script; stop at the first error and return its exit code."""
        try:
            for item in self.items(iter(text.splitlines(keepends=True))):
                code = self.run_one(item)
                if code != OK:
                    return code
        except Quit as q:
            return q.code
        return OK

    def interact(self, banner: str) -> int:
        """The prompt: readline editing and history, multi-line statements."""
        history = _open_history()
        # SQLite runs a statement without returning to Python, so Ctrl-C would wait for it
        # to end. A progress handler gives Python a moment every N VM steps: the
        # KeyboardInterrupt raised there makes SQLite abort with "interrupted".
        self.conn.set_progress_handler(_keep_going, 100_000)
        print(banner, file=self.err, flush=True)
        pending = ""
        try:
            while True:
                try:
                    line = input(CONTINUATION if pending else PROMPT)
                except KeyboardInterrupt:
                    print(file=self.out)
                    pending = ""
                    continue
                except EOFError:
                    print(file=self.out)
                    return OK
                if not pending.strip() and line.lstrip().startswith("."):
                    self.run_one(line.strip())
                    continue
                pending += line + "\n"
                done, pending = split_statements(pending)
                if not pending.strip():
                    pending = ""  # only the line break after ';' is left
                for statement in done:
                    self.run_one(statement)
        except Quit as q:
            return q.code
        finally:
            if history is not None:
                history()

    # -- dot-commands --------------------------------------------------------------------

    def cmd_tables(self, args: List[str]) -> None:
        pattern = args[0] if args else "%"
        names = [
            r[0]
            for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' AND name LIKE ? ORDER BY name",
                (pattern,),
            )
        ]
        if not names:
            return
        w = max(map(len, names))
        cols = max(1, shutil.get_terminal_size((80, 24)).columns // (w + 2))
        for i in range(0, len(names), cols):
            self.say("  ".join(n.ljust(w) for n in names[i : i + cols]).rstrip())

    def cmd_schema(self, args: List[str]) -> None:
        pattern = args[0] if args else "%"
        rows = self.conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name LIKE ? "
            "AND name NOT LIKE 'sqlite\\_tdb\\_%' ESCAPE '\\' ORDER BY tbl_name, type = 'table' DESC, name",
            (pattern,),
        ).fetchall()
        if args and not rows:
            raise sqlite3.OperationalError(f"no such table: {args[0]}")
        for (sql,) in rows:
            self.say(sql + ";")

    def cmd_stats(self, args: List[str]) -> None:
        stats = getattr(self.conn, "stats", None)
        if stats is None:
            raise sqlite3.NotSupportedError(".stats needs a turso_dbapi connection")
        try:
            result = stats()
        except sqlite3.NotSupportedError:
            raise sqlite3.NotSupportedError(
                ".stats counts a remote database's requests, bytes and hits; this is a local "
                "file, so there is nothing to count (open an http(s)://, libsql:// or turso:// URL)"
            ) from None
        self.say(table.render(["counter", "value"], _stats_rows(result)))

    def cmd_pull(self, args: List[str]) -> None:
        try:
            changed = self.conn.pull()  # type: ignore[attr-defined]
        except sqlite3.NotSupportedError as exc:
            raise sqlite3.NotSupportedError(f".pull: {exc}") from None
        self.say("pulled: changes applied" if changed else "already up to date")

    def cmd_push(self, args: List[str]) -> None:
        try:
            result = self.conn.push()  # type: ignore[attr-defined]
        except sqlite3.NotSupportedError as exc:
            raise sqlite3.NotSupportedError(f".push: {exc}") from None
        self.say(f"pushed: {result.rows} row changes in {result.batches} batch(es)" if result.rows
                 else "nothing to push")

    def cmd_sync(self, args: List[str]) -> None:
        self.cmd_push(args)
        self.cmd_pull(args)

    def cmd_version(self, args: List[str]) -> None:
        from .. import __version__

        self.say(f"turso_dbapi {__version__}, SQLite {sqlite3.sqlite_version}")

    def cmd_help(self, args: List[str]) -> None:
        self.say(HELP)

    def cmd_quit(self, args: List[str]) -> None:
        raise Quit(OK)


def _keep_going() -> int:
    return 0  # 0 = continue; a pending Ctrl-C raises here instead


def _open_history() -> Optional[Callable[[], None]]:
    """Load readline history; return the function that saves it (None without readline)."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline
        return None
    path = history_path()
    try:
        readline.read_history_file(path)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(1000)

    def save() -> None:
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            readline.write_history_file(path)
        except OSError as exc:
            print(f"warning: history not saved to {path}: {exc}", file=sys.stderr)

    return save
