"""The HTTP-range cache: open a remote SQLite file through the lazy page store.

Steps (each one request or none):
  1. options from keywords and the URL's query string (``url.parse_options``);
  2. a source for the URL (``http_range_source``: an ``HttpRangeSource``; or the one the
     caller passed);
  3. ``source.open()`` — the ONE request that pins the remote version;
  4. the replica at ``local_path`` or, by default, in the user cache directory keyed by
     the redacted URL and the version (a new version starts a fresh cache; reopening the
     same version serves every cached page without a page request);
  5. ``sqlite3.connect("file:<replica>?vfs=turso_dbapi&tdbconn=<id>", uri=True)``.

Error surfacing (the real cause of a failed fetch from execute) is ``replica.base``'s.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional

from ..errors import NotSupportedError, ProgrammingError
from .._util.atomic import read_json
from ..fetch.miss import download_all
from ..storage import claim, files, pagestore
from ..storage.vfs import ensure_registered, replica_uri
from ..url import normalize_remote_url, redact
from .base import ReadOnlyMissHandler, RemoteReplica, ReportingMissHandler, StatsRecord, attach_replica
from .base import default_replica_path, existing_replica_path, open_connection, remote_class
from .base import usable_local_path
from .live import LiveReplica, claim_live, live_class

RANGE_SCHEMES = ("http", "https", "libsql", "turso", "s3")
S3_OPTIONS = ("endpoint_url", "region", "profile")


def http_range_source(url: str, options: Mapping[str, Any]) -> Any:
    """The source of ``url``: S3 (signed) for ``s3://`` and AWS S3 https URLs when botocore
    is installed, HTTP ranges otherwise (``libsql://``/``turso://`` mean https)."""
    scheme = url.partition("://")[0].lower()
    if scheme not in RANGE_SCHEMES:
        raise NotSupportedError(f"no source for URL scheme {scheme!r}")
    from ..sources import s3

    if scheme == "s3" or (s3.is_s3_url(url) and s3.botocore_available()):
        return s3.S3Source.from_options(url, options)
    given = sorted(k for k in S3_OPTIONS if options.get(k) is not None)
    if given:
        raise ProgrammingError(f"option(s) {', '.join(given)} apply to S3 URLs (s3://bucket/key); "
                               f"{redact(url)} is not one")
    from ..sources.range import HttpRangeSource

    return HttpRangeSource.from_options(normalize_remote_url(url), options)


def saved_range_url(replica: str) -> str:
    """The URL an HTTP-range cache at ``replica`` was made from (its ``-tdbmeta.json``), so
    ``connect(local_path)`` reopens it lazily instead of SQLite reading its sparse file.
    Credentials are never stored: a URL that had them must be given again."""
    meta = read_json(replica + files.CACHE_META) or {}
    url = meta.get("url")
    if not isinstance(url, str) or "***" in url:
        raise ProgrammingError(
            f"{replica} is the page cache of a remote database, not a plain SQLite file (its "
            "unfetched pages are holes); open it with turso_dbapi.connect(URL, "
            "local_path=...) — credentials are never saved, so the URL must be given again"
        )
    return url


# -- the replica object attached to connections ------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReplicaStats(StatsRecord):
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
    index_prefetched: int = 0  # table leaves fetched because an index leaf predicted them
    index_prefetch_used: int = 0  # ... that SQLite then read (the rest: wrong predictions)


class Replica(LiveReplica, RemoteReplica):
    """``conn._replica`` of an HTTP-range cache; ``pull()``/follow are ``replica.live``'s."""

    def __init__(self, store: Any, source: Any, handler: Any, conn_id: int, path: str, *,
                 follow_ms: Optional[int] = None, lock_fd: int = -1, private: bool = False,
                 handler_opts: Optional[Mapping[str, Any]] = None):
        super().__init__(store, source, handler, conn_id, path)
        self._live_init(follow_ms, lock_fd, private)
        self._handler_opts = dict(handler_opts or {})

    def stats(self) -> ReplicaStats:
        c = self.counters()
        net = c["net"]
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
            last_error=c["last_error"],
            index_prefetched=c["policy"]["index_prefetched"],
            index_prefetch_used=c["policy"]["index_prefetch_used"],
            **c["store"],
        )

    def pull(self, timeout: Optional[float] = None) -> bool:
        """The remote's current state (WAL frames, a new file version); True when changed."""
        from ..sources.live import LiveSource
        from ..sources.range import HttpRangeSource

        if not isinstance(self.source, LiveSource) and not hasattr(self.source, "observe"):
            if not isinstance(self.source, HttpRangeSource):
                raise NotSupportedError(f"{self.url}: pull() needs an http(s) source")
            self._follow_from_now_on()
        return LiveReplica.pull(self) if timeout is None else LiveReplica.pull(self, timeout)

    def _follow_from_now_on(self) -> None:
        """A plain range source becomes a live one: its pin is the snapshot, and the
        background read-ahead (which may hold pages of the pinned version) stops."""
        from ..sources.live import LiveSource

        live = LiveSource(self.source)
        live.adopt_pin(self.store.read_page(1))
        self.handler.close()
        self.handler = ReportingMissHandler(self.store, live, **self._handler_opts)
        self.store.attach(self.handler, self.conn_id)  # same tdbconn, new handler
        self.source = live

    def close(self) -> None:
        super().close()
        self._live_close()

    def push(self) -> None:
        raise NotSupportedError(
            f"{self.url} is a static file; local changes stay in the replica "
            f"{self.path} and cannot be pushed"
        )


# -- connect ------------------------------------------------------------------------------


def connect_range(
    url: str, local_path: Optional[str], opts: Mapping[str, Any], connect_kwargs: Dict[str, Any],
    factory: type, *, source: Any = None,
) -> Any:
    """Open the HTTP-range cache of ``url`` (see the module docstring); routed here by
    ``turso_dbapi.connect``. ``source`` (a ``PageSource``, not yet opened) replaces the HTTP
    one, e.g. a ``FileSource`` in tests."""
    ensure_registered()
    readonly = bool(opts.get("readonly"))  # nothing is written to the replica's files
    if local_path:  # before any request: a bad path fails first
        local_path = existing_replica_path(local_path) if readonly else usable_local_path(local_path)
    if source is None:
        source = http_range_source(url, opts)
    leading = source.open()
    live = _follows(source, leading, opts)
    if live is not None:  # a WAL-mode database or follow=: the snapshot of db + WAL
        source, leading = live, live.open(leading)
    display = source.display_url
    if local_path:
        path = local_path
    elif readonly:
        path = existing_replica_path(default_replica_path(redact(url), source.version, create=False))
    else:
        path = usable_local_path(default_replica_path(redact(url), source.version))
    claim.refuse_foreign(path, display)
    claim.refuse_repoint(path, claim.recorded_url(path), display)  # one remote per replica
    follows = live is not None or hasattr(source, "observe")  # pull() switches its pages
    lock_fd, private = -1, False
    if follows and readonly:
        raise NotSupportedError(
            f"readonly=true: {display} is followed live (a WAL-mode database, or follow=), "
            "and following writes the cache; open it without readonly")
    if follows:
        path, lock_fd, private = claim_live(path)
    try:
        identity = pagestore.identity_of(redact(url), source.version, source.page_size, source.size)
        store = pagestore.open_store(
            path,
            page_size=source.page_size,
            size=source.size,
            identity=identity,
            meta={"url": display, "version": source.version},
            readonly=readonly,
        )
        if not readonly:
            _store_leading_pages(store, leading)
        handler_opts = {"segment_size": opts["segment_size"], "readahead_max": opts["readahead_max"],
                        "prefetch": opts["prefetch"]}
        handler = (ReadOnlyMissHandler if readonly else ReportingMissHandler)(store, source, **handler_opts)
        conn_id = store.attach(handler)
        if not opts["partial"] and not readonly:
            download_all(store, handler, batch_bytes=max(opts["readahead_max"], store.page_size))
        class_for = live_class if follows else remote_class
        conn = open_connection(replica_uri(path, conn_id, readonly=readonly), factory, connect_kwargs,
                               class_for)
        replica = Replica(store, source, handler, conn_id, path, follow_ms=opts.get("follow"),
                          lock_fd=lock_fd, private=private, handler_opts=handler_opts)
        attach_replica(conn, replica)
        if follows:
            replica.keep_lock(conn)  # (replica.live (X)) one connection, pulls switch its pages
        return conn
    except BaseException:
        if lock_fd >= 0:
            os.close(lock_fd)  # another connection may follow this cache now
        raise


def _follows(source: Any, leading: bytes, opts: Mapping[str, Any]) -> Any:
    """A ``LiveSource`` around an HTTP source whose database is in WAL mode (SQLite reads
    its WAL only then) or that is to be followed; else None (no request either way)."""
    from ..sources.live import LiveSource, is_wal_mode
    from ..sources.range import HttpRangeSource

    if not isinstance(source, HttpRangeSource):
        return None
    if opts.get("follow") is None and not is_wal_mode(leading):
        return None
    return LiveSource(source)


def _store_leading_pages(store: pagestore.PageStore, leading: bytes) -> None:
    """open() already returned these bytes: keep the whole pages among them."""
    ps = store.page_size
    for i in range(min(len(leading) // ps, store.remote_pages)):
        store.put_synced(i + 1, leading[i * ps : (i + 1) * ps])
