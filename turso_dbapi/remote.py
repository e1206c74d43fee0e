"""``connect_remote``: open a remote SQLite database through the lazy page store.

Steps (each one request or none):
  1. options from keywords and the URL's query string (``url.parse_options``);
  2. a source for the URL (``source_factory``: HTTP(S) -> ``HttpRangeSource``; other
     schemes are added by ``register_source``, e.g. the Turso sync source);
  3. ``source.open()`` — the ONE request that pins the remote version;
  4. the replica at ``local_path`` or, by default, in the user cache directory keyed by
     the redacted URL and the version (a new version starts a fresh cache; reopening the
     same version serves every cached page without a page request);
  5. ``sqlite3.connect("file:<replica>?vfs=turso_dbapi&tdbconn=<id>", uri=True)``.

A failed page fetch reaches SQLite as SQLITE_IOERR_READ ("disk I/O error"); the
connection class made here (``remote_class``) re-raises the real cause (a ``RemoteError``
with the URL, status, what failed) from the execute family of its connections and cursors
(see "error surfacing" below for what iteration does). Local connections never see it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sqlite3
import sys
import threading
from typing import Any, Callable, Dict, Mapping, NoReturn, Optional, Sequence, Tuple
from urllib.parse import quote

from . import apply_flag, pagestore  # noqa: F401 - apply_flag installs C's apply callback
from .connection import Connection
from .errors import NotSupportedError, ProgrammingError, RemoteError
from .url import normalize_remote_url, parse_options, redact, split_url_options, with_defaults
from .vfs import VFS_NAME, ensure_registered

log = logging.getLogger("turso_dbapi")

SourceFactory = Callable[[str, Mapping[str, Any]], Any]
_SOURCE_FACTORIES: Dict[str, SourceFactory] = {}

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


def register_source(scheme: str, factory: SourceFactory) -> None:
    """Let URLs of ``scheme`` (e.g. "libsql") be served by ``factory(url, options)``."""
    _SOURCE_FACTORIES[scheme.lower()] = factory


def _http_range_source(url: str, options: Mapping[str, Any]) -> Any:
    from .sources.range import HttpRangeSource

    return HttpRangeSource.from_options(normalize_remote_url(url), options)


def source_factory(url: str) -> SourceFactory:
    """The factory for a URL: a registered one for its scheme, else HTTP ranges."""
    scheme = url.partition("://")[0].lower()
    if scheme in _SOURCE_FACTORIES:
        return _SOURCE_FACTORIES[scheme]
    if scheme in ("http", "https", "libsql", "turso"):
        return _http_range_source
    raise NotSupportedError(f"no source for URL scheme {scheme!r}")


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "turso_dbapi")


def default_replica_path(display_url: str, version: str) -> str:
    """``<cache>/turso_dbapi/<sha256 of redacted URL + version>/db``; directories are
    created private (0700): cached pages of a token-protected database are as secret
    as the database."""
    key = hashlib.sha256(f"{display_url}\n{version}".encode()).hexdigest()
    base = default_cache_dir()
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(base, key), mode=0o700, exist_ok=True)
    return os.path.join(base, key, "db")


def saved_range_url(replica: str) -> str:
    """The URL an HTTP-range cache at ``replica`` was made from (its ``-tdbmeta.json``), so
    ``connect(local_path)`` reopens it lazily instead of SQLite reading its sparse file.
    Credentials are never stored: a URL that had them must be given again."""
    meta = pagestore.read_json(replica + "-tdbmeta.json") or {}
    url = meta.get("url")
    if not isinstance(url, str) or "***" in url:
        raise ProgrammingError(
            f"{replica} is the page cache of a remote database, not a plain SQLite file (its "
            "unfetched pages are holes); open it with turso_dbapi.connect(URL, "
            "local_path=...) — credentials are never saved, so the URL must be given again"
        )
    return url


# -- the miss handler of connections ------------------------------------------------------


def describe_error(exc: Optional[BaseException]) -> Optional[str]:
    return None if exc is None else f"{type(exc).__name__}: {exc}"


class ReportingMissHandler(pagestore.MissHandler):
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


# -- the replica object attached to connections ------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReplicaStats:
    """Counters of a remote connection (``conn.stats()``).

    Network counters (requests, bytes, pages_fetched, retries) are this connection's;
    page-store counters (hits, misses, pages_read, ...) are the replica's in this process.
    """

    url: str
    version: str
    page_size: int
    size: int
    requests: int
    bytes_received: int
    bytes_sent: int
    pages_fetched: int
    retries: int
    hits: int
    misses: int
    pages_read: int
    crc_failures: int
    prefetched: int
    prefetch_used: int
    local_writes: int
    last_error: Optional[str] = None  # the last failed page fetch of this connection

    def __getitem__(self, key: str) -> Any:  # stats()["requests"] works too
        return getattr(self, key)

    def asdict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class Replica:
    """What a remote connection carries as ``conn._replica``."""

    def __init__(
        self,
        store: pagestore.PageStore,
        source: Any,
        handler: pagestore.MissHandler,
        conn_id: int,
        path: str,
    ):
        self.store = store
        self.source = source
        self.handler = handler  # strong ref: the store routes this connection's misses here
        self.conn_id = conn_id
        self.path = path
        self._closed = False

    @property
    def url(self) -> str:
        return self.source.display_url

    def stats(self) -> ReplicaStats:
        net = self.source.stats.snapshot()
        c = self.store.counters()
        return ReplicaStats(
            url=self.url,
            version=self.source.version,
            page_size=self.store.page_size,
            size=self.store.remote_size,
            requests=net["requests"],
            bytes_received=net["bytes_received"],
            bytes_sent=net["bytes_sent"],
            pages_fetched=net["pages_fetched"],
            retries=net["retries"],
            last_error=describe_error(self.handler.last_error),
            **c,
        )

    def close(self) -> None:
        """After the SQLite connection closed: the HTTP session, and the store when no
        other connection of this process uses it (the cache files stay for reopening)."""
        if self._closed:
            return
        self._closed = True
        self.handler.close()  # background read-ahead stops before the source closes
        close = getattr(self.source, "close", None)
        if close is not None:
            close()
        pagestore.release_store(self.store)

    def pull(self) -> bool:
        raise NotSupportedError(
            f"{self.url} is read over HTTP ranges, which has no change feed; reconnect to read a "
            "newer version (the cache keeps pages of unchanged versions)"
        )

    def push(self) -> None:
        raise NotSupportedError(
            f"{self.url} is a static file; local changes stay in the replica "
            f"{self.path} and cannot be pushed"
        )


# -- error surfacing ---------------------------------------------------------------------
#
# A failed page fetch reaches SQLite as SQLITE_IOERR_READ ("disk I/O error"); the miss
# handler keeps the real cause (pagestore._keep_error) and C marks the failure
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
_SQLITE_IOERR = 10

def _io_error_by_code(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_IOERR


def _io_error_by_message(exc: sqlite3.Error) -> bool:
    return "disk I/O error" in str(exc)  # SQLite's message for every SQLITE_IOERR_*


# 3.9/3.10 exceptions carry no sqlite_errorcode: the message tells.
_is_io_error = _io_error_by_code if sys.version_info >= (3, 11) else _io_error_by_message


def _py_failed() -> bool:
    from ._native import lib

    return bool(lib.tdb_take_py_failure())


def _real_cause(exc: sqlite3.Error, url: str) -> BaseException:
    if not isinstance(exc, sqlite3.OperationalError) or not _is_io_error(exc):
        return exc
    if not _py_failed():
        pagestore.take_error()  # whatever is kept belongs to an earlier failure
        return exc
    cause = pagestore.take_error()
    if cause is None:
        return exc
    if isinstance(cause, sqlite3.Error):  # a RemoteError, or a failed apply's own error
        return cause
    if not isinstance(cause, Exception):
        return cause  # KeyboardInterrupt and friends: as they were
    err = RemoteError(f"reading {url} failed: {type(cause).__name__}: {cause}", url=url)
    err.__cause__ = cause
    return err


def _fail(cur: sqlite3.Cursor, exc: sqlite3.Error) -> BaseException:
    """What to raise for ``exc`` raised by a statement of ``cur``."""
    replica = getattr(cur.connection, "_replica", None)
    return _real_cause(exc, replica.url if replica is not None else "?")


def _raise_cause(real: BaseException, exc: sqlite3.Error) -> NoReturn:
    """Raise ``exc`` itself, or its real cause chained to it (error path only)."""
    if real is exc:
        raise exc
    raise real from exc


class RemoteCursor(sqlite3.Cursor):
    """A cursor whose execute family reports a failed page fetch as its real cause (a
    ``RemoteError``). Fetching and iteration are the stdlib's (see the trade-off above)."""

    __slots__ = ()  # no instance dict: cheaper to create and free
    _fail = _fail  # TursoCursor adds the refused-WAL message

    def execute(self, sql: str, parameters: Any = ()):  # type: ignore[override]
        try:
            return _cursor_execute(self, sql, parameters)
        except sqlite3.Error as exc:
            _raise_cause(self._fail(exc), exc)

    def executemany(self, sql: str, seq_of_parameters: Any):  # type: ignore[override]
        try:
            return _cursor_executemany(self, sql, seq_of_parameters)
        except sqlite3.Error as exc:
            _raise_cause(self._fail(exc), exc)

    def executescript(self, sql_script: str):  # type: ignore[override]
        try:
            return _cursor_executescript(self, sql_script)
        except sqlite3.Error as exc:
            _raise_cause(self._fail(exc), exc)


class _RemoteMixin:
    """Connection methods of remote connections: cursors that surface fetch errors."""

    _replica: Any = None
    _cursor_class: Any = RemoteCursor

    def cursor(self, factory: Any = None):  # type: ignore[override]
        return super().cursor(factory or self._cursor_class)  # type: ignore[misc]

    # sqlite3.Connection.execute* build their cursor in C, out of our reach: redo execute
    # with the fewest steps, one Python frame around the stdlib's C cursor() (which also
    # copies row_factory) and C execute. The cursor is a plain sqlite3.Cursor, as the
    # stdlib's execute returns: a RemoteCursor (a heap subclass) costs ~0.2 us more to
    # create and free, 1.08x instead of 1.03x on a warm point select (measured). So
    # re-executing the cursor con.execute returned does not translate errors (they are
    # still logged and kept, like iteration's); con.cursor() gives RemoteCursors.
    def execute(self, sql: str, parameters: Any = ()):  # type: ignore[override]
        cur = _connection_cursor(self)
        try:
            return _cursor_execute(cur, sql, parameters)
        except sqlite3.Error as exc:
            _raise_cause(self._cursor_class._fail(cur, exc), exc)

    def executemany(self, sql: str, parameters: Any):  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str):  # type: ignore[override]
        return self.cursor().executescript(script)

    def stats(self) -> Any:
        if self._replica is None:
            raise NotSupportedError("stats() needs a remote database")
        return self._replica.stats()

    def close(self) -> None:  # type: ignore[override]
        super().close()  # type: ignore[misc]
        if self._replica is not None:
            self._replica.close()  # the HTTP session; the cache stays for the next connect


_classes: Dict[type, type] = {}
_classes_lock = threading.Lock()


def remote_class(factory: type) -> type:
    """``factory`` (a sqlite3.Connection subclass) with the remote mixin; cached."""
    if not (isinstance(factory, type) and issubclass(factory, sqlite3.Connection)):
        raise ProgrammingError(
            "factory= must be a subclass of sqlite3.Connection for remote databases"
        )
    with _classes_lock:
        cls = _classes.get(factory)
        if cls is None:
            cls = type(f"Remote{factory.__name__}", (_RemoteMixin, factory), {})
            _classes[factory] = cls
        return cls


# -- connect ------------------------------------------------------------------------------


def _split_args(args: Sequence[Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
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


def _target(database: Any, opts: Dict[str, Any]) -> Tuple[str, Optional[str]]:
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


def connect_remote(
    database: Any, args: Sequence[Any], kwargs: Dict[str, Any], remote_opts: Mapping[str, Any]
) -> Any:
    """Open a remote database (see the module docstring); called by ``turso_dbapi.connect``."""
    raw = dict(remote_opts)
    if isinstance(database, str) and "://" in database:
        database, from_query = split_url_options(database)
        for key, value in from_query.items():
            raw.setdefault(key, value)  # keywords win over the query string
    if isinstance(raw.get("url"), str):
        raw["url"], from_query = split_url_options(raw["url"])
        for key, value in from_query.items():
            raw.setdefault(key, value)
    opts = with_defaults(parse_options(raw))
    from . import turso_replica

    if (
        not opts.get("url")
        and not (isinstance(database, str) and "://" in database)
        and turso_replica.is_turso_replica(database)
    ):
        url, local_path = None, os.fsdecode(database)  # reopen a Turso replica by its path
    else:
        url, local_path = _target(database, opts)
    connect_kwargs = _split_args(args, kwargs)
    factory = connect_kwargs.pop("factory", None) or Connection
    connect_kwargs.pop("uri", None)
    if url is None or turso_replica.wants_turso(url, opts):
        return turso_replica.connect_turso(
            url, local_path, opts, parse_options(raw), connect_kwargs, factory
        )

    ensure_registered()
    source_opts = opts
    if local_path and os.path.exists(local_path + "-tdbmap"):
        # A cache is there: open() only revalidates, so it reads the header, not the
        # first segment (which the cache most likely holds already).
        source_opts = dict(opts, segment_size=None)
    source = source_factory(url)(url, source_opts)
    leading = source.open()
    display = source.display_url
    path = os.path.realpath(local_path or default_replica_path(redact(url), source.version))
    identity = pagestore.identity_of(redact(url), source.version, source.page_size, source.size)
    store = pagestore.open_store(
        path,
        page_size=source.page_size,
        size=source.size,
        identity=identity,
        meta={"url": display, "version": source.version},
    )
    _store_leading_pages(store, leading)
    handler = ReportingMissHandler(
        store,
        source,
        segment_size=opts["segment_size"],
        readahead_max=opts["readahead_max"],
        prefetch=opts["prefetch"],
    )
    conn_id = store.attach(handler)
    if not opts["partial"]:
        store.download_all(handler, batch_bytes=max(opts["readahead_max"], store.page_size))
    target = f"file:{quote(path)}?vfs={VFS_NAME}&tdbconn={conn_id}"
    conn = sqlite3.connect(target, uri=True, factory=remote_class(factory), **connect_kwargs)
    conn._replica = Replica(store, source, handler, conn_id, path)
    return conn


def _store_leading_pages(store: pagestore.PageStore, leading: bytes) -> None:
    """open() already returned these bytes: keep the whole pages among them."""
    ps = store.page_size
    for i in range(min(len(leading) // ps, store.remote_pages)):
        store.put_synced(i + 1, leading[i * ps : (i + 1) * ps])
