"""Turso replicas: routing, open (bootstrap or reopen), ``pull()``, ``stats()``.

Routing (option ``protocol``: auto | range | turso): ``libsql://`` and ``turso://`` URLs
(https), and http(s) URLs with an empty path or "/", are Turso sync servers; other http(s)
URLs are files read with HTTP ranges. ``connect(local_path)`` of a path with
``<path>-tdbsync.json`` beside it reopens the Turso replica with its saved URL, with no
network at open (spec §6.1 step 7).

Pinned revision of lazy fetches: pyturso pins them to the bootstrap revision forever; we
pin them to the LATEST SYNCED revision. Both are correct: a pull stores every page that
changed in (old, new], so a page still absent from the synced layer is identical at the
bootstrap revision and at every later synced one. Pinning to the latest means the server
only needs history back to the last pull instead of back to the bootstrap. A connection of
another process re-reads the pin from the metadata at each miss (one small file read next
to a network round trip), so a page re-fetched after a torn write is of the right revision.

Journal mode: the replica stays in rollback-journal mode (DESIGN §2.5) until WAL replicas
are proven. ``PRAGMA journal_mode=WAL`` never raises: like SQLite where a mode cannot be set,
it returns the mode in effect ("delete"). The VFS does it (vfs.c rule (16), URI parameter
``tdbnowal``), so it holds for every connection whatever authorizer its user sets.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
import weakref
from typing import Any, Dict, Mapping, Optional
from urllib.parse import quote, urlsplit

from ..storage import apply_flag
from . import bootstrap as boot
from ..storage import pagestore
from . import apply as pull_apply, metadata as sync_meta
from ..fetch.btree_readahead import BtreeHints, BtreeReadahead
from .stage import StageWriter
from ..errors import NotSupportedError, OperationalError, ProgrammingError
from ..sources.turso import TursoSyncSource, base_url
from ..replica.base import ReportingMissHandler, attach_replica, default_replica_path, describe_error
from ..replica.base import open_connection
from ..url import redact
from ..storage.vfs import VFS_NAME, ensure_registered

_live_sources: weakref.WeakValueDictionary[int, TursoSyncSource] = weakref.WeakValueDictionary()
_live_lock = threading.Lock()


def wants_turso(url: Optional[str], options: Mapping[str, Any]) -> bool:
    """Does this URL (with the ``protocol`` option) name a Turso sync server?"""
    protocol = options.get("protocol") or "auto"
    if protocol != "auto":
        return protocol == "turso"
    if not url:
        return False
    scheme = url.partition("://")[0].lower()
    if scheme in ("libsql", "turso"):
        return True
    if scheme in ("http", "https"):
        return urlsplit(url).path in ("", "/")
    return False


def is_turso_replica(path: Any) -> bool:
    try:
        return os.path.exists(sync_meta.meta_path(os.fsdecode(path)))
    except (TypeError, ValueError):
        return False


# -- stats ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TursoStats:
    """``conn.stats()`` of a Turso replica: pyturso's fields (§6.9) plus our counters.

    Network counters are this connection's (body bytes, as pyturso counts them; bootstrap
    included when this connection bootstrapped). ``cdc_operations`` is 0 and the WAL sizes
    are 0 because this replica keeps no change log (push is not implemented) and runs in
    rollback-journal mode (no main or revert WAL).
    """

    revision: Optional[str]
    network_sent_bytes: int
    network_received_bytes: int
    last_pull_unix_time: Optional[int]
    last_push_unix_time: Optional[int]
    cdc_operations: int
    main_wal_size: int
    revert_wal_size: int
    requests: int
    pages_fetched: int
    retries: int
    hits: int
    misses: int
    pages_read: int
    prefetched: int
    prefetch_used: int
    crc_failures: int
    local_writes: int
    pull_gen: int
    db_size_pages: int
    partial: bool
    url: str
    path: str
    last_error: Optional[str] = None  # the last failed page fetch of this connection

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def asdict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# -- the replica object -------------------------------------------------------------------


class TursoReplica:
    """``conn._replica`` of a Turso connection."""

    def __init__(self, store: pagestore.PageStore, source: TursoSyncSource, handler: pagestore.MissHandler,
                 conn_id: int, path: str, conn: sqlite3.Connection):
        self.store = store
        self.source = source
        self.handler = handler  # strong ref: the store routes this connection's misses here
        self.conn_id = conn_id
        self.path = path
        try:
            self._conn: Any = weakref.ref(conn)
        except TypeError:  # a bare sqlite3.Connection from a factory function
            self._conn = lambda: None
        self._closed = False
        self._stage = pull_apply.stage_path(path)

    @property
    def url(self) -> str:
        return self.source.display_url

    def meta(self) -> sync_meta.SyncMeta:
        meta = sync_meta.load(self.path)
        if meta is None:
            raise OperationalError(f"the sync metadata of {self.path} is missing")
        return meta

    def stats(self) -> TursoStats:
        meta = self.meta()
        net = self.source.stats.snapshot()
        c = self.store.counters()
        return TursoStats(
            revision=meta.synced_revision, network_sent_bytes=net["bytes_sent"],
            network_received_bytes=net["bytes_received"], last_pull_unix_time=meta.last_pull_unix_time,
            last_push_unix_time=meta.last_push_unix_time, cdc_operations=0, main_wal_size=0,
            revert_wal_size=0, requests=net["requests"], pages_fetched=net["pages_fetched"],
            retries=net["retries"], hits=c["hits"], misses=c["misses"], pages_read=c["pages_read"],
            prefetched=c["prefetched"], prefetch_used=c["prefetch_used"], crc_failures=c["crc_failures"],
            local_writes=c["local_writes"], pull_gen=meta.pull_gen, db_size_pages=meta.db_size_pages,
            partial=meta.partial, url=self.url, path=self.path,
            last_error=describe_error(self.handler.last_error),
        )

    def pull(self) -> bool:
        """Network first (no lock), then a coherent apply; True when pages changed."""
        conn = self._conn()
        if conn is not None and conn.in_transaction:
            raise OperationalError(
                f"pull from {self.url}: this connection is inside a transaction; commit or roll "
                "back first (a pull replaces the state every transaction reads)")
        with boot.replica_lock(self.path + "-pull"):  # one pull per replica at a time
            meta = self.meta()
            if meta.pending_pull is not None:  # an apply was interrupted: finish it first
                with apply_flag.applying():
                    pull_apply.apply_staged(self.store, self.path, self.conn_id, self.url)
                meta = self.meta()
            pull_apply.refuse_local_changes(self.store, self.url)
            stage = StageWriter(self.path)  # pages go to disk as they arrive
            try:
                reply = self.source.changes_since(meta.synced_revision or "", on_page=stage.add,
                                                  on_reset=stage.reset)
                if stage.count and 1 not in stage.pgnos and not self.store.is_present(1):
                    for p, data in self.source.fetch_at([1], reply.revision).pages.items():
                        stage.add(p, data)  # still no lock held
            except BaseException:
                stage.discard()
                raise
            if not stage.count:
                stage.discard()
                meta = self.meta()
                meta.synced_revision = reply.revision
                meta.last_pull_unix_time = int(time.time())
                sync_meta.save(self.path, meta)
                _repin(self.path, reply.revision)  # nothing changed: same pages at both
                return False
            stage.finish(reply.revision, reply.db_size)
            with apply_flag.applying():
                applied = pull_apply.apply_staged(self.store, self.path, self.conn_id, self.url)
        # §6.6: the pull state comes from local metadata after applying, never the remote.
        if applied is not None:
            _repin(self.path, applied.synced_revision or "")
            hints_for(self.store, reset=True)  # the B-trees changed: learn them again
        return applied is not None

    def close(self) -> None:
        """The connection closed: its HTTP session, and the store when no other connection
        of this process uses it (the replica files stay for later)."""
        if self._closed:
            return
        self._closed = True
        with _live_lock:
            _live_sources.pop(id(self.source), None)
        closer = getattr(self.handler, "close", None)
        if closer is not None:
            closer()
        self.source.close()
        pagestore.release_store(self.store)

    def push(self) -> None:
        raise NotSupportedError(
            f"push to {self.url} is not implemented yet; local changes stay in {self.path}, and "
            "pull() refuses to run while there are any (it never drops them)")


def recover_dead_apply(store: pagestore.PageStore, conn_id: int) -> int:
    """C found the apply flag set while a connection took its SHARED lock (vfs.c rule
    (13)): finish the apply of a puller that died mid-switch, so no connection of any
    process ever reads a mix of two revisions. Returns an ``apply_flag`` answer."""
    path = store.path
    with boot.replica_lock(path + "-pull", wait=False) as held:
        if not held:
            return apply_flag.BUSY  # a live pull: the busy handler retries after its apply
        meta = sync_meta.load(path)
        if meta is not None and meta.pending_pull is not None:
            url = redact(meta.remote_url or path)
            with apply_flag.applying():
                pull_apply.apply_staged(store, path, conn_id, url)
            hints_for(store, reset=True)
        else:
            apply_flag.ApplyFlag(path).clear()  # the apply finished; its process died before clearing
    return apply_flag.RECOVERED


_hints: Dict[str, BtreeHints] = {}
HINT_PAGES = 32  # pages read at open to seed the B-tree hints (roots sit near the start)


def hints_for(store: pagestore.PageStore, *, reset: bool = False) -> BtreeHints:
    """The B-tree hints of a replica in this process, seeded from its first pages."""
    with _live_lock:
        hints = _hints.get(store.path)
        if hints is not None and not reset:
            return hints
        if hints is None:
            hints = _hints[store.path] = BtreeHints(store.page_size)
        hints.clear()
    for p in range(1, min(HINT_PAGES, store.remote_pages) + 1):
        page = store.read_page(p)
        if page is not None:
            hints.note(p, page)
    return hints


def _synced_revision(path: str) -> Optional[str]:
    """The synced revision as the metadata says now (a miss runs inside a read transaction,
    so no apply is in progress and metadata and synced layer agree)."""
    try:
        meta = sync_meta.load(path)
    except (OSError, OperationalError):
        return None
    return meta.synced_revision if meta is not None else None


def _repin(path: str, revision: str) -> None:
    with _live_lock:
        sources = [s for s in _live_sources.values() if getattr(s, "_replica_path", None) == path]
    for s in sources:
        s.repin(revision)


# -- connections ---------------------------------------------------------------------------


def _effective(explicit: Mapping[str, Any], saved: Any, name: str, default: Any) -> Any:
    if explicit.get(name) is not None:
        return explicit[name]
    return saved if saved is not None else default


def connect_turso(url: Optional[str], local_path: Optional[str], options: Mapping[str, Any],
                  explicit: Mapping[str, Any], connect_kwargs: Dict[str, Any], factory: type) -> Any:
    """Open (bootstrapping if needed) the Turso replica at ``local_path``."""
    ensure_registered()
    if local_path is None:
        if url is None:
            raise ProgrammingError("a Turso replica needs a URL or an existing local_path")
        local_path = default_replica_path(redact(base_url(url)), "turso-sync")
    path = os.path.realpath(os.fsdecode(local_path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    client_name = str(options.get("client_name") or "turso-dbapi")
    with boot.replica_lock(path):
        meta = sync_meta.load(path)
        if meta is None:
            if url is None:
                raise ProgrammingError(f"{path} has no sync metadata; give the server URL to bootstrap it")
            source = TursoSyncSource(url, options)
            meta, store = boot.bootstrap(path, source, options, client_name)
        else:
            if url is None:
                if not meta.remote_url:
                    raise ProgrammingError(f"the replica {path} has no saved server URL; pass url=")
                url = meta.remote_url
            source = TursoSyncSource(url, options, pinned_revision=meta.synced_revision or "")
            changed = sync_meta.merge_configuration(
                meta, remote_url=_saved_url(url), segment_size=explicit.get("segment_size"),
                prefetch=explicit.get("prefetch"))
            if changed:
                sync_meta.save(path, meta)
            store = boot.open_replica_store(path, meta, source.display_url)
    source.pinned_revision = meta.synced_revision or ""
    source.size = meta.db_size_pages * pull_apply.PAGE_SIZE
    source._replica_path = path  # type: ignore[attr-defined]
    source.pin_provider = lambda: _synced_revision(path)
    with _live_lock:
        _live_sources[id(source)] = source
    handler = ReportingMissHandler(
        store, source,
        segment_size=_effective(explicit, meta.segment_size, "segment_size", options["segment_size"]),
        readahead_max=options["readahead_max"],
        prefetch=bool(_effective(explicit, meta.prefetch, "prefetch", False)),
    )
    hints = hints_for(store)
    source.page_observer = hints.note
    handler.readahead = BtreeReadahead(handler.readahead, hints)  # type: ignore[assignment]
    conn_id = store.attach(handler)
    apply_flag.register_recovery(path, recover_dead_apply)
    if meta.pending_pull is not None:  # a pull crashed mid-apply: redo it before any read
        with boot.replica_lock(path + "-pull"), apply_flag.applying():
            if (sync_meta.load(path) or meta).pending_pull is not None:
                pull_apply.apply_staged(store, path, conn_id, source.display_url)
    elif os.path.exists(pull_apply.stage_path(path)):
        with boot.replica_lock(path + "-pull"):
            current = sync_meta.load(path)
            if current is not None and current.pending_pull is None and os.path.exists(pull_apply.stage_path(path)):
                pull_apply.remove_stage(path)  # staged by a pull that never started applying
    # tdbnowal: the VFS answers PRAGMA journal_mode=WAL with the mode in effect (vfs.c (16))
    target = f"file:{quote(path)}?vfs={VFS_NAME}&tdbconn={conn_id}&tdbnowal=1"
    conn = open_connection(target, factory, connect_kwargs)
    attach_replica(conn, TursoReplica(store, source, handler, conn_id, path, conn))
    return conn


def _saved_url(url: str) -> str:
    from ..transport.http import split_credentials

    return split_credentials(base_url(url))[0]
