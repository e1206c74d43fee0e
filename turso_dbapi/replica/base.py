"""What every remote connection shares, whatever its source (HTTP ranges or Turso sync).

  * the options of ``connect`` (keywords and the URL's query string) and its target;
  * where a replica lives by default (the user cache directory);
  * the miss handler that logs a failed fetch (``ReportingMissHandler``);
  * error surfacing: the connection and cursor classes (``remote_class``) whose execute
    family re-raises the real cause of a failed page fetch.

A failed page fetch reaches SQLite as SQLITE_IOERR_READ ("disk I/O error"); the connection
class made here re-raises the real cause (a ``RemoteError`` with the URL, status, what failed)
from the execute family of its connections and cursors (see "error surfacing" below for what
iteration does). Local connections never see it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sqlite3
import threading
import weakref
from typing import Any, Callable, Dict, Mapping, NoReturn, Optional, Sequence, Tuple

from ..connection import StatsMethod
from ..errors import OperationalError, ProgrammingError, RemoteError, is_io_error
from ..fetch.miss import MissHandler
from ..storage import pagestore
from ..storage.callbacks import keep_error, take_error
from ..url import parse_options, split_url_options, with_defaults

log = logging.getLogger("turso_dbapi")

# sqlite3.connect's positional parameters after ``database``.
_CONNECT_PARAMS = (
    "timeout",
    "detect_types",
    "isolation_level",
    "check_same_thread",
    "factory",
    "cached_statements",
    "uri",
)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "turso_dbapi")


def default_replica_path(display_url: str, version: str, *, create: bool = True) -> str:
    """``<cache>/turso_dbapi/<sha256 of redacted URL + version>/db``; directories are
    created private (0700): cached pages of a token-protected database are as secret
    as the database. ``create=False``: only the name (read-only opens create nothing)."""
    key = hashlib.sha256(f"{display_url}\n{version}".encode()).hexdigest()
    base = default_cache_dir()
    if not create:
        return os.path.join(base, key, "db")
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(base, key), mode=0o700, exist_ok=True)
    return os.path.join(base, key, "db")


def existing_replica_path(local_path: Any) -> str:
    """The real path of a replica that must already exist (``readonly=true``: nothing is
    created); otherwise the OperationalError sqlite3 gives for a file it cannot open."""
    path = os.path.realpath(os.fsdecode(local_path))
    if not os.path.isfile(path):
        raise OperationalError(
            f"unable to open database file {path}: readonly=true opens an existing replica and "
            "never creates one; open it once without readonly")
    return path


def usable_local_path(local_path: Any) -> str:
    """The real path of a replica's file, its directory created; a path that cannot hold a
    replica is the OperationalError sqlite3 gives for a file it cannot open, naming the
    path and why (instead of a raw OSError from deep inside the open)."""
    given = os.fsdecode(local_path)
    path = os.path.realpath(given)
    why = None
    if os.path.isdir(path):
        why = "it is a directory"
    else:
        ancestor = os.path.dirname(path)
        while ancestor != os.path.dirname(ancestor) and not os.path.lexists(ancestor):
            ancestor = os.path.dirname(ancestor)
        try:
            if not os.path.isdir(ancestor):
                raise NotADirectoryError(0, f"{ancestor} is a file, not a directory")
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as exc:
            why = f"its directory cannot be created ({exc.strerror or exc})"
        else:
            if not os.access(os.path.dirname(path), os.W_OK):
                why = "its directory is not writable (a read-only file system?)"
    if why is not None:
        raise OperationalError(f"unable to open database file: local_path {given!r}: {why}")
    return path


# -- the miss handler of connections ------------------------------------------------------


def describe_error(exc: Optional[BaseException]) -> Optional[str]:
    return None if exc is None else f"{type(exc).__name__}: {exc}"


class ReadOnlyMissHandler(MissHandler):
    """The miss handler of read-only connections: storing a fetched page would write the
    replica's files, so a page the replica has not cached is an error naming it (no
    request is made). Runs on misses only."""

    def handle_miss(self, pgno: int, n_pages: int) -> int:
        exc = OperationalError(
            f"page {pgno} of {self.store.path} is not cached, and a read-only replica never "
            "writes its files, so it cannot fetch it (open it without readonly to fetch)")
        self.last_error = exc
        keep_error(exc)
        log.warning("%s", exc)
        return 1


class ReportingMissHandler(MissHandler):
    """The miss handler of remote connections: a failed fetch is also logged at WARNING.

    Iteration and fetch* do not translate errors (no Python per row, see "error
    surfacing"), so a failure there would otherwise only say "disk I/O error"; the log
    line and ``conn.stats().last_error`` name the cause. Runs on misses only."""

    def handle_miss(self, pgno: int, n_pages: int) -> int:
        rc = super().handle_miss(pgno, n_pages)
        if rc:
            log.warning("reading page %d of %s failed: %s", pgno, self.source.display_url,
                        describe_error(self.last_error))
        return rc


# -- error surfacing ---------------------------------------------------------------------
#
# A failed page fetch reaches SQLite as SQLITE_IOERR_READ ("disk I/O error"); the miss
# handler keeps the real cause (storage.callbacks.keep_error) and C marks the failure
# (pagestore.c rule (14): a thread-local mark, cleared at the start of each read
# transaction). The execute family of remote connections and cursors re-raises that cause,
# consuming it only when the SQLite error really is an I/O error and C says a Python
# callback failed under it: nothing is done per statement on success, and a cause left
# by an earlier statement is never attached to a later one.
#
# TRADE-OFF: iteration (``for row in cursor``) and fetchone/fetchmany/fetchall are the
# stdlib's own C methods (no Python call per row: ~0.35 instead of ~0.59 us per row on a
# warm scan), so a fetch failing there raises the plain "disk I/O error". The cause is
# still logged at WARNING on the "turso_dbapi" logger (with the redacted URL) and kept as
# ``conn.stats().last_error``. (Most failures surface in execute anyway: it runs the
# statement to its first row, which is all of an aggregate's work.)

_connection_cursor = sqlite3.Connection.cursor
_cursor_execute = sqlite3.Cursor.execute
_cursor_executemany = sqlite3.Cursor.executemany
_cursor_executescript = sqlite3.Cursor.executescript

def _py_failed() -> bool:
    from .._native import lib

    return bool(lib.tdb_take_py_failure())


def real_cause(exc: sqlite3.Error, url: str) -> BaseException:
    if not isinstance(exc, sqlite3.OperationalError) or not is_io_error(exc):  # errors' table
        return exc
    if not _py_failed():
        take_error()  # whatever is kept belongs to an earlier failure
        return exc
    cause = take_error()
    if cause is None:
        return exc
    if isinstance(cause, sqlite3.Error):  # a RemoteError, or a failed apply's own error
        return cause
    if not isinstance(cause, Exception):
        return cause  # KeyboardInterrupt and friends: as they were
    err = RemoteError(f"reading {url} failed: {type(cause).__name__}: {cause}", url=url)
    err.__cause__ = cause
    return err


def real_error(cur: sqlite3.Cursor, exc: sqlite3.Error) -> BaseException:
    """What to raise for ``exc`` raised by a statement of ``cur``."""
    replica = getattr(cur.connection, "_replica", None)
    return real_cause(exc, replica.url if replica is not None else "?")


def _raise_cause(real: BaseException, exc: sqlite3.Error) -> NoReturn:
    """Raise ``exc`` itself, or its real cause chained to it (error path only).

    Callers drop their cursor and connection locals first: the traceback of an exception
    a caller keeps holds these frames, and a live cursor keeps its statement, hence the
    replica's file and store, open after ``close()`` (issue 14.7)."""
    if real is exc:
        raise exc
    raise real from exc


# First characters of a statement that may be an ALTER TABLE (after blanks or comments):
# only those reach a class's ``_alter_check`` (sync/ddl.py), the rest pay one set lookup.
_ALTER_FIRST = frozenset("Aa-/ \t\r\n\f\v")


class RemoteCursor(sqlite3.Cursor):
    """A cursor whose execute family reports a failed page fetch as its real cause (a
    ``RemoteError``). Fetching and iteration are the stdlib's (see the trade-off above)."""

    __slots__ = ()  # no instance dict: cheaper to create and free
    _fail = real_error
    # A Turso replica's cursor class sets these (sync/ddl.py), as _RemoteMixin's below.
    _alter_check: Any = None
    _alter_execute: Any = None

    def execute(self, sql: str, parameters: Any = ()):  # type: ignore[override]
        if self._alter_check is not None and sql.__class__ is str and sql[:1] in _ALTER_FIRST \
                and self._alter_check(sql):
            return self._alter_execute(sql, parameters)
        try:
            return _cursor_execute(self, sql, parameters)
        except sqlite3.Error as exc:
            real, err = self._fail(exc), exc
        del self  # see _raise_cause
        _raise_cause(real, err)

    def executemany(self, sql: str, seq_of_parameters: Any):  # type: ignore[override]
        try:
            return _cursor_executemany(self, sql, seq_of_parameters)
        except sqlite3.Error as exc:
            real, err = self._fail(exc), exc
        del self  # see _raise_cause
        _raise_cause(real, err)

    def executescript(self, sql_script: str):  # type: ignore[override]
        try:
            return _cursor_executescript(self, sql_script)
        except sqlite3.Error as exc:
            real, err = self._fail(exc), exc
        del self  # see _raise_cause
        _raise_cause(real, err)


_DEFAULT: Any = object()


class _RemoteMixin(StatsMethod):
    """Connection methods of remote connections: cursors that surface fetch errors."""

    _cursor_class: Any = RemoteCursor

    def cursor(self, factory: Any = _DEFAULT):  # type: ignore[override]
        # cursor(None) is the stdlib's TypeError, not a default cursor
        return super().cursor(self._cursor_class if factory is _DEFAULT else factory)  # type: ignore[misc]

    # sqlite3.Connection.execute* build their cursor in C, out of our reach: redo execute
    # with the fewest steps, one Python frame around the stdlib's C cursor() (which also
    # copies row_factory) and C execute. The cursor is a plain sqlite3.Cursor, as the
    # stdlib's execute returns: a RemoteCursor (a heap subclass) costs ~0.2 us more to
    # create and free, 1.08x instead of 1.03x on a warm point select (measured). So
    # re-executing the cursor con.execute returned does not translate errors (they are
    # still logged and kept, like iteration's); con.cursor() gives RemoteCursors.
    # A Turso replica's class sets these (sync/ddl.py): ALTER TABLE keeps its change capture.
    _alter_check: Any = None
    _alter_execute: Any = None

    def execute(self, sql: str, parameters: Any = ()):  # type: ignore[override]
        if self._alter_check is not None and sql.__class__ is str and sql[:1] in _ALTER_FIRST \
                and self._alter_check(sql):
            return self._alter_execute(sql, parameters)
        cur = _connection_cursor(self)
        try:
            return _cursor_execute(cur, sql, parameters)
        except sqlite3.Error as exc:
            real, err = self._cursor_class._fail(cur, exc), exc
        del cur, self  # see _raise_cause
        _raise_cause(real, err)

    def executemany(self, sql: str, parameters: Any):  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str):  # type: ignore[override]
        return self.cursor().executescript(script)

    def close(self) -> None:  # type: ignore[override]
        try:
            super().close()  # type: ignore[misc]
        finally:  # also when a factory's __init__ never opened the connection
            if self._replica is not None:
                self._replica.close()  # the HTTP session; the cache stays for the next connect


_classes: Dict[Tuple[type, type], type] = {}  # the one cache of connection classes
_classes_lock = threading.Lock()


def remote_class(factory: type, cursor_class: type = RemoteCursor, prefix: str = "Remote") -> type:
    """``factory`` (a sqlite3.Connection subclass) with the remote mixin, its cursors of
    ``cursor_class`` (a ``RemoteCursor``); cached per (factory, cursor class). A class with
    another cursor class derives from the plain remote class of the same factory."""
    with _classes_lock:
        cls = _classes.get((factory, cursor_class))
        if cls is None:
            if cursor_class is RemoteCursor:
                cls = type(f"{prefix}{factory.__name__}", (_RemoteMixin, factory), {})
            else:
                base = _classes.get((factory, RemoteCursor))
                if base is None:
                    base = _classes[(factory, RemoteCursor)] = type(
                        f"Remote{factory.__name__}", (_RemoteMixin, factory), {})
                cls = type(f"{prefix}{factory.__name__}", (base,), {"_cursor_class": cursor_class})
            _classes[(factory, cursor_class)] = cls
        return cls


def open_connection(target: str, factory: Any, connect_kwargs: Dict[str, Any],
                    class_for: Callable[[type], type] = remote_class) -> Any:
    """``sqlite3.connect`` of a replica's VFS URI through the caller's ``factory``.

    A ``sqlite3.Connection`` subclass gets the remote mixin (``class_for``: error surfacing,
    ``close()`` that releases the replica). Any other callable is called as the stdlib calls it and
    must return a ``sqlite3.Connection``; that object is what the caller gets (see
    ``attach_replica``)."""
    if isinstance(factory, type) and issubclass(factory, sqlite3.Connection):
        return sqlite3.connect(target, uri=True, factory=class_for(factory), **connect_kwargs)
    conn = sqlite3.connect(target, uri=True, factory=factory, **connect_kwargs)
    if not isinstance(conn, sqlite3.Connection):
        close = getattr(conn, "close", None)
        if callable(close):
            close()
        raise ProgrammingError(
            f"factory= returned a {type(conn).__name__}, not a sqlite3.Connection: a remote "
            "database needs a connection to attach its replica to"
        )
    return conn


# SQLite drops a connection's functions when it closes it: a function that holds the replica
# ties the replica's life to a connection whose class does not know about it.
_LIFETIME_FUNCTION = "turso_dbapi_replica_lifetime"


class _ReplicaLifetime:
    __slots__ = ("replica", "__weakref__")

    def __init__(self, replica: Any):
        self.replica = replica

    def __call__(self) -> None:
        return None


def attach_replica(conn: Any, replica: Any) -> None:
    """Make ``replica`` the remote state of ``conn`` (``conn._replica``).

    Connections of a class made by ``remote_class`` close it in ``close()``. Any other (a
    factory function's result) gets ``_replica`` when it can hold attributes (so a
    ``turso_dbapi.Connection``'s ``stats()``/``pull()`` work) and the replica is released
    when SQLite closes the connection. Such a connection's statements do not translate a
    failed fetch into its real cause (it is still logged and kept in ``stats()``)."""
    if isinstance(conn, _RemoteMixin):
        conn._replica = replica
        return
    try:
        conn._replica = replica
    except AttributeError:
        pass  # a bare sqlite3.Connection has no __dict__
    holder = _ReplicaLifetime(replica)
    weakref.finalize(holder, replica.close)
    try:
        conn.create_function(_LIFETIME_FUNCTION, 0, holder)
    except sqlite3.ProgrammingError:  # a factory whose __init__ never opened it: nothing to serve
        replica.close()


# -- what a remote connection carries ------------------------------------------------------


class StatsRecord:
    """What every ``conn.stats()`` result offers besides its fields (frozen dataclasses)."""

    def __getitem__(self, key: str) -> Any:  # stats()["requests"] works too
        return getattr(self, key)

    def asdict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


class RemoteReplica:
    """``conn._replica`` of a remote connection: its store, source and miss handler.
    ``replica.range_cache.Replica`` and ``sync.replica.TursoReplica`` add stats, pull and
    push; this is what they share."""

    def __init__(self, store: Any, source: Any, handler: MissHandler, conn_id: int, path: str):
        self.store = store
        self.source = source
        self.handler = handler  # strong ref: the store routes this connection's misses here
        self.conn_id = conn_id
        self.path = path
        self._closed = False

    @property
    def url(self) -> str:
        return self.source.display_url

    def counters(self) -> Dict[str, Any]:
        """This connection's network counters and the replica's page-store counters."""
        return {"net": self.source.stats.snapshot(), "store": self.store.counters(),
                "policy": self.handler.stats(), "last_error": describe_error(self.handler.last_error)}

    def close(self) -> None:
        """After the SQLite connection closed: background read-ahead, the HTTP session, and
        the store when no other connection of this process uses it (the files stay)."""
        if self._closed:
            return
        self._closed = True
        self.handler.close()  # background read-ahead stops before the source closes
        self.source.close()
        pagestore.release_store(self.store)


# -- connect's arguments ------------------------------------------------------------------


def split_connect_args(args: Sequence[Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    if len(args) > len(_CONNECT_PARAMS):
        raise ProgrammingError(
            f"connect() takes at most {len(_CONNECT_PARAMS) + 1} positional arguments"
        )
    merged = dict(kwargs)
    for name, value in zip(_CONNECT_PARAMS, args):
        if name in merged:
            raise ProgrammingError(f"connect() got multiple values for argument {name!r}")
        merged[name] = value
    return merged


def target(database: Any, opts: Dict[str, Any]) -> Tuple[str, Optional[str]]:
    """(remote URL, local path or None) from the first argument and ``url=``."""
    url_opt = opts.pop("url", None)
    if isinstance(database, str) and "://" in database:
        if url_opt and url_opt != database:
            raise ProgrammingError("give the remote URL once: as the first argument or as url=")
        return database, opts.get("local_path")
    if url_opt:
        local = os.fspath(database) if database not in (None, "", ":memory:") else None
        if local and opts.get("local_path") and opts["local_path"] != local:
            raise ProgrammingError("the first argument and local_path= name different replicas")
        return url_opt, local or opts.get("local_path")
    raise ProgrammingError(f"{database!r} is not a remote URL")


def remote_options(database: Any, remote_opts: Mapping[str, Any]) -> Tuple[Any, Dict[str, Any], Dict[str, Any]]:
    """``(database, options with defaults, options given explicitly)``: keywords win over
    the query strings of ``database`` and of ``url=`` (which are taken off them)."""
    raw = dict(remote_opts)
    if isinstance(database, str) and "://" in database:
        database, from_query = split_url_options(database)
        for key, value in from_query.items():
            raw.setdefault(key, value)  # keywords win over the query string
    if isinstance(raw.get("url"), str):
        raw["url"], from_query = split_url_options(raw["url"])
        for key, value in from_query.items():
            raw.setdefault(key, value)
    return database, with_defaults(parse_options(raw)), parse_options(raw)
