"""turso_dbapi — the standard library ``sqlite3``, plus lazily read remote databases.

Drop-in use::

    import turso_dbapi as sqlite3
    con = sqlite3.connect("app.db")          # exactly sqlite3's behaviour and speed
    con.execute("create table t(x)")

Remote databases are read lazily, page by page, from any static HTTP host, S3 or CDN
(``Range`` requests) or from a Turso sync server (``/pull-updates``)::

    con = turso_dbapi.connect("https://example.com/app.db", partial=True)
    con.execute("select * from t where id = ?", (42,)).fetchall()
    con.stats()                              # requests, bytes, pages fetched, hits

Every exception is the stdlib class itself (or a subclass of it), so existing
``except sqlite3.OperationalError`` handlers keep working.
"""

from __future__ import annotations

import os as _os
import sqlite3 as _sqlite3
import sqlite3.dump as _sqlite3_dump  # noqa: F401 - see below
import sys as _sys
import warnings as _warnings
from typing import TYPE_CHECKING, Any, Union

# Re-export everything the running stdlib module offers (names differ between 3.9 and
# 3.13, so copy what is there rather than keeping a list). ``connect`` and ``Connection``
# are ours; the rest are the very same objects.
if TYPE_CHECKING:  # the names type checkers see (the star import would shadow connect)
    from sqlite3 import (  # noqa: F401
        PARSE_COLNAMES, PARSE_DECLTYPES, Binary, Blob, Cursor, DatabaseError, DataError, Error,
        IntegrityError, InterfaceError, InternalError, NotSupportedError, OperationalError,
        PrepareProtocol, ProgrammingError, Row, Warning, adapt, adapters, complete_statement,
        converters, enable_callback_tracebacks, register_adapter, register_converter,
        sqlite_version, sqlite_version_info,
    )
else:
    from sqlite3 import *  # noqa: F401,F403

for _name in dir(_sqlite3):
    if not _name.startswith("__"):
        globals().setdefault(_name, getattr(_sqlite3, _name))
del _name

# Connection.iterdump() imports "sqlite3.dump" by name when called; loaded now, it is found
# in sys.modules even where an application made this module sys.modules["sqlite3"] (the
# usual way to swap a drop-in in), whose path has no dump module.

# Deprecated and lazy names (3.10/3.11 ``OptimizedUnicode``, 3.12+ ``version``/``version_info``)
# come from the stdlib module's ``__getattr__``: the very function, so the value, the warning
# and its stack level (the caller's line) are the running stdlib's own.
if hasattr(_sqlite3, "__getattr__"):
    __getattr__ = _sqlite3.__getattr__

from . import errors as _errors  # noqa: E402
from .connection import Connection  # noqa: E402
from .errors import (  # noqa: E402,F401
    HistoryResetError,
    ProtocolError,
    PushConstraintError,
    PushRejectedError,
    RemoteChangedError,
    RemoteError,
)
from .connection import Stats  # noqa: E402,F401
from .url import OPTIONS as _OPTIONS  # noqa: E402
from .url import ConnectArgs, ConnectOptions  # noqa: E402,F401
from .url import is_remote as _is_remote  # noqa: E402
from .storage.files import replica_kind as _replica_kind  # noqa: E402


def _replica_in_file_uri(database: Any, kwargs: Any) -> Any:
    """``(path, read-only?)`` when ``database`` is a ``file:`` URI (``uri=True``) naming a
    replica this driver made; None otherwise (SQLite handles it). Of SQLite's URI
    parameters only ``mode`` (ro, rw, rwc) means something for a replica."""
    if not kwargs.get("uri") or not isinstance(database, str) or not database.startswith("file:"):
        return None
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(database)
    if parts.netloc not in ("", "localhost") or _replica_kind(unquote(parts.path)) is None:
        return None
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "vfs" in params:  # a VFS URI (this driver's own opens, where sqlite3 is this module)
        return None
    mode = params.pop("mode", "rw")
    if mode not in ("ro", "rw", "rwc") or params:
        bad = ", ".join(sorted(params) + ([f"mode={mode}"] if mode not in ("ro", "rw", "rwc") else []))
        raise _errors.ProgrammingError(
            f"{database!r} names a replica, where only mode=ro|rw applies (not {bad}); "
            "its remote options are keywords of connect() (readonly=True is mode=ro)")
    return unquote(parts.path), mode == "ro"


dbapi2 = _sqlite3.dbapi2
apilevel = "2.0"
threadsafety = _sqlite3.threadsafety
paramstyle = "qmark"
__version__ = "0.1.0"


if TYPE_CHECKING:
    from typing_extensions import Unpack

Database = Union[str, bytes, "_os.PathLike[str]", "_os.PathLike[bytes]"]


def connect(database: Database, *args: Any, **kwargs: Unpack[ConnectArgs]) -> Connection:
    """Open a database; same signature as ``sqlite3.connect`` plus remote options.

    A local path or ``":memory:"`` is handed to ``sqlite3.connect`` unchanged, with
    ``factory=turso_dbapi.Connection`` unless you pass your own factory. A URL
    (``https://``, ``http://``, ``libsql://``, ``turso://``) or the ``url=`` option opens a
    remote database; see ``turso_dbapi.url.OPTIONS`` for every remote option (each is
    also accepted in the URL's query string).
    """
    remote_opts = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTIONS}  # type: ignore[misc]
    named = _replica_in_file_uri(database, kwargs)
    if named is not None:  # "file:replica.db?mode=ro" (uri=True) of a replica: its path
        database, readonly = named
        kwargs.pop("uri", None)
        if readonly:
            remote_opts.setdefault("readonly", True)
    kind = None if _is_remote(database) or remote_opts.get("url") else _replica_kind(database)
    if kind == "range":
        from .replica.range_cache import saved_range_url

        remote_opts["url"] = saved_range_url(_os.fsdecode(database))
        remote_opts.setdefault("partial", True)  # a cache reopens lazily, never downloads all
    if _is_remote(database) or remote_opts.get("url") or kind == "turso":
        try:
            return _connect_remote(database, args, kwargs, remote_opts)
        except OSError as exc:  # a local file the replica needs (network errors are ours already)
            where = f" {exc.filename!r}" if exc.filename else ""
            raise _errors.OperationalError(
                f"unable to open database file{where}: {exc.strerror or exc}") from exc
    if any(v not in (None, False) for v in remote_opts.values()):
        given = ", ".join(sorted(k for k, v in remote_opts.items() if v not in (None, False)))
        raise _errors.ProgrammingError(
            f"option(s) {given} apply to remote databases; {database!r} is a local path. "
            "Pass an http(s)://, libsql:// or turso:// URL, or url=..."
        )
    if len(args) < _FACTORY_POSITION:  # a factory given by position is the caller's
        kwargs.setdefault("factory", Connection)
    if args and _POSITIONAL_DEPRECATED:
        return _connect_positional(database, args, kwargs)
    return _sqlite3.connect(database, *args, **kwargs)


_FACTORY_POSITION = 5  # connect(database, timeout, detect_types, isolation_level, check_same_thread, factory)
# 3.13+ warns (from C, at the calling line) when connect() gets more than one positional
# argument; called from here, that line would be ours.
_POSITIONAL_DEPRECATED = _sys.version_info >= (3, 13)


def _connect_positional(database: Any, args: Any, kwargs: Any) -> Any:
    """``sqlite3.connect`` with its deprecation warnings moved to the caller's line, where the
    stdlib puts them; warnings raised elsewhere (a factory's own code) keep their place."""
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        con = _sqlite3.connect(database, *args, **kwargs)
    try:
        for w in caught:
            if w.filename == __file__:
                _warnings.warn(w.message, w.category, stacklevel=3)
            else:
                _warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    except BaseException:
        con.close()  # warnings are errors here: the stdlib would not have connected either
        raise
    return con


def _connect_remote(database: Any, args: Any, kwargs: Any, remote_opts: Any) -> Any:
    """Route a remote database to its kind of replica: a Turso sync replica (``sync``) or an
    HTTP-range cache (``replica.range_cache``). Imported lazily: local use never loads them."""
    from .replica import base
    from .url import wants_turso

    database, opts, explicit = base.remote_options(database, remote_opts)
    local_turso = False
    if not opts.get("url") and not (isinstance(database, str) and "://" in database):
        from .sync.replica import is_turso_replica

        local_turso = is_turso_replica(database)
    if local_turso:
        url, local_path = None, _os.fsdecode(database)  # reopen a Turso replica by its path
    else:
        url, local_path = base.target(database, opts)
    connect_kwargs = base.split_connect_args(args, kwargs)
    factory = connect_kwargs.pop("factory", None) or Connection
    connect_kwargs.pop("uri", None)
    try:
        if url is None or wants_turso(url, opts):
            from .sync import replica as sync_replica  # only for Turso (import cost)

            return sync_replica.connect_turso(url, local_path, opts, explicit, connect_kwargs, factory)
        from .replica.range_cache import connect_range

        if opts.get("protocol") == "libsql":  # libSQL embedded-replica protocol: frames
            from .sources.libsql import LibsqlSource
            from .url import normalize_remote_url

            source = LibsqlSource(normalize_remote_url(url), opts)
            return connect_range(url, local_path, opts, connect_kwargs, factory, source=source)
        return connect_range(url, local_path, opts, connect_kwargs, factory)
    except RemoteError as exc:
        raise exc.outside_a_read()  # open, bootstrap, download: no page read failed
