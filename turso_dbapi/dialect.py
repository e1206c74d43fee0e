"""SQLAlchemy dialect ``sqlite+turso_dbapi``: the pysqlite dialect, driven by turso_dbapi.

Registered through the ``sqlalchemy.dialects`` entry point as ``sqlite.turso_dbapi``
(pyturso owns ``sqlite.turso``). URL forms::

    sqlite+turso_dbapi://                       :memory:, exactly like sqlite://
    sqlite+turso_dbapi:///app.db                a local file, exactly like sqlite:///app.db
    sqlite+turso_dbapi:///replica.db?url=https://host/db.sqlite&partial=true
                                                a remote database; the local path is where
                                                its replica lives (turso_dbapi.connect(
                                                "replica.db", url=..., partial=True))
    sqlite+turso_dbapi:///?url=https://host/db.sqlite&partial=true
                                                a remote database, replica in the default
                                                cache location (turso_dbapi.connect(url, ...))
    sqlite+turso_dbapi://:TOKEN@/?url=libsql://db.turso.io
                                                the password slot carries ``auth_token``, so
                                                SQLAlchemy masks it in reprs and logs

Every option of ``turso_dbapi.url.OPTIONS`` is accepted in the query string with the same
meaning as the ``connect()`` keyword, as are pysqlite's own (``timeout``, ``uri``,
``check_same_thread``, ``isolation_level``, ``detect_types``, ``cached_statements``).
A remote URL that has its own query string must be percent-encoded
(``url=https%3A%2F%2Fhost%2Fdb%3Fsig%3Dabc``). Unlike pysqlite, which warns and ignores, an
unknown query parameter is an error — a misspelt ``partail=true`` would otherwise silently
download the whole database. With ``uri=true`` unknown parameters go to SQLite's URI, as in
pysqlite.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from sqlalchemy import exc, pool
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine.url import URL

from . import url as _url
from .errors import ProgrammingError

# Query parameters pysqlite itself understands (SQLAlchemy's own list, 2.0 and 2.1).
PYSQLITE_QUERY_ARGS = (
    "uri",
    "timeout",
    "isolation_level",
    "detect_types",
    "check_same_thread",
    "cached_statements",
)


def _shown(url: URL) -> str:
    return _url.redact(url.render_as_string(hide_password=True))


def _is_remote_url(url: URL) -> bool:
    return bool(url.query.get("url"))


class TursoDBAPIDialect(SQLiteDialect_pysqlite):
    """pysqlite with turso_dbapi as the DB-API module and remote options in the URL."""

    driver = "turso_dbapi"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> Any:
        import turso_dbapi

        return turso_dbapi

    @classmethod
    def load_provisioning(cls) -> None:
        # SQLAlchemy's test harness (sqlalchemy.testing) provisions databases per dialect;
        # the default looks for turso_dbapi.provision. Ours is SQLite's: file databases, and
        # the attached "test_schema" the suite's schema tests use.
        __import__("sqlalchemy.dialects.sqlite.provision")

    @classmethod
    def get_pool_class(cls, url: URL) -> Any:
        # A remote replica is a file shared by every connection, never a private
        # :memory: database, so it pools like a file even without a local path.
        if _is_remote_url(url):
            return pool.QueuePool
        return super().get_pool_class(url)

    def create_connect_args(self, url: URL) -> Tuple[List[Any], Dict[str, Any]]:
        if url.host or url.port:
            raise exc.ArgumentError(
                f"{_shown(url)}: a host goes in the url= parameter, not in the SQLAlchemy URL; "
                "use sqlite+turso_dbapi:///replica.db?url=https://host/db.sqlite (or ///?url=...)"
            )
        query = url.query
        ours_raw = {k: v for k, v in query.items() if k in _url.OPTIONS}
        if not query.get("uri"):
            unknown = sorted(set(query) - set(ours_raw) - set(PYSQLITE_QUERY_ARGS))
            if unknown:
                known = ", ".join(sorted(set(_url.OPTIONS) | set(PYSQLITE_QUERY_ARGS)))
                raise exc.ArgumentError(
                    f"unknown query parameter(s) {', '.join(unknown)} in {_shown(url)}; "
                    f"known: {known} (add uri=true to pass SQLite URI parameters)"
                )
        for key, value in ours_raw.items():
            if isinstance(value, tuple):
                raise exc.ArgumentError(
                    f"query parameter {key!r} given more than once in {_shown(url)}"
                )
        try:
            opts = _url.parse_options(ours_raw)
        except ProgrammingError as e:
            raise exc.ArgumentError(f"{e} (in {_shown(url)})") from None

        remote = opts.pop("url", None)
        if url.password is not None and remote is None:
            raise exc.ArgumentError(
                f"a password in {_shown(url)} is read as auth_token, which needs a remote "
                "database: add ?url=https://... or libsql://..."
            )
        if url.username:
            raise exc.ArgumentError(
                f"user names are not used in {_shown(url)}; put a token in the password "
                "slot (sqlite+turso_dbapi://:TOKEN@/...) or in auth_token="
            )
        if url.password is not None:
            if "auth_token" in opts:
                raise exc.ArgumentError(
                    f"{_shown(url)} gives the token twice (password and auth_token); keep one"
                )
            opts["auth_token"] = str(url.password)
        if remote is None and any(v is not False for v in opts.values()):
            given = ", ".join(sorted(k for k, v in opts.items() if v is not False))
            raise exc.ArgumentError(
                f"option(s) {given} apply to remote databases; {_shown(url)} names a local "
                "file. Add url=https://... (percent-encoded) to open a remote database"
            )

        # pysqlite does the rest: path resolution, its own options, uri=true handling.
        plain = URL.create(url.drivername, database=url.database, query=url.query)
        plain = plain.difference_update_query(list(ours_raw))
        cargs, cparams = super().create_connect_args(plain)
        if remote is None:
            return cargs, cparams

        if url.database == ":memory:":
            raise exc.ArgumentError(
                f"{_shown(url)}: a remote replica needs a file, not :memory:; "
                "give a path (sqlite+turso_dbapi:///replica.db?url=...) or none"
            )
        if url.database and "local_path" in opts:
            raise exc.ArgumentError(
                f"{_shown(url)} names the replica twice (database path and local_path); keep one"
            )
        if url.database:
            opts["url"] = remote  # cargs[0] is pysqlite's absolute path: the replica
        else:
            cargs = [remote]
            if "local_path" in opts:
                opts["local_path"] = os.path.abspath(opts["local_path"])
        # Pooled connections of a replica move between threads, as for a file database.
        if "check_same_thread" not in query:
            cparams["check_same_thread"] = False
        cparams.update(opts)
        return cargs, cparams


dialect = TursoDBAPIDialect
