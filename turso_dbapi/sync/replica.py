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

Journal mode: the replica stays in rollback-journal mode (DESIGN §2.5); ``journal_mode=WAL``
is refused with a clear message (an authorizer on every connection we open; a user who
replaces it loses only the message: switching writes page 1 locally, and ``pull()`` refuses
replicas with local changes, so coherence still holds).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
import weakref
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import quote, urlsplit

from ..storage import apply_flag
from . import bootstrap as boot
from ..storage import pagestore
from . import apply as pull_apply, capture, internal, metadata as sync_meta, push as sync_push, rebase
from ..fetch.btree_readahead import BtreeHints, BtreeReadahead
from .stage import StageWriter
from ..errors import NotSupportedError, OperationalError, ProgrammingError
from ..sources.turso import TursoSyncSource, base_url
from ..replica.base import RemoteCursor, ReportingMissHandler, default_replica_path, describe_error
from ..replica.base import real_error as remote_fail
from ..replica.base import remote_class
from ..url import redact
from ..storage.vfs import VFS_NAME, ensure_registered

_tls = threading.local()
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
    included when this connection bootstrapped). ``cdc_operations`` = ``pending_changes``:
    changed rows not pushed yet (our log records keys, not statements, so it counts rows,
    not pyturso's CDC rows). The WAL sizes are 0: the replica runs in rollback-journal mode.
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
    pending_changes: int = 0  # changed rows not pushed yet (distinct keys)
    pushed_rows: int = 0  # row changes sent by pushes of this replica, all processes
    pushed_bytes: int = 0  # request bytes of those pushes

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
        self._conn = weakref.ref(conn)
        self._closed = False
        self._stage = pull_apply.stage_path(path)
        self.push_threshold: Optional[int] = None  # push_operations_threshold
        self.transform: Optional[sync_push.Transform] = None
        self.on_conflict: Optional[rebase.OnConflict] = None
        self.last_apply_misses = 0  # page misses inside the last apply's lock (partial mode)

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
        pushed = sync_push.load_state(self.path)
        conn = self._conn()
        waiting = sync_push.pending(conn, self.path) if conn is not None else 0
        return TursoStats(
            revision=meta.synced_revision, network_sent_bytes=net["bytes_sent"],
            network_received_bytes=net["bytes_received"], last_pull_unix_time=meta.last_pull_unix_time,
            last_push_unix_time=pushed.get("last_push_unix_time"), cdc_operations=waiting, main_wal_size=0,
            revert_wal_size=0, requests=net["requests"], pages_fetched=net["pages_fetched"],
            retries=net["retries"], hits=c["hits"], misses=c["misses"], pages_read=c["pages_read"],
            prefetched=c["prefetched"], prefetch_used=c["prefetch_used"], crc_failures=c["crc_failures"],
            local_writes=c["local_writes"], pull_gen=meta.pull_gen, db_size_pages=meta.db_size_pages,
            partial=meta.partial, url=self.url, path=self.path,
            last_error=describe_error(self.handler.last_error), pending_changes=waiting,
            pushed_rows=int(pushed.get("pushed_rows", 0)), pushed_bytes=int(pushed.get("pushed_bytes", 0)),
        )

    def pull(self, on_conflict: Optional[rebase.OnConflict] = None) -> bool:
        """Network first (no lock), then a coherent apply that replays the unpushed local
        changes on top (sync/rebase.py); True when pages changed."""
        on_conflict = on_conflict if on_conflict is not None else self.on_conflict
        conn = self._conn()
        if conn is not None and conn.in_transaction:
            raise OperationalError(
                f"pull from {self.url}: this connection is inside a transaction; commit or roll "
                "back first (a pull replaces the state every transaction reads)")
        _refuse_wal(self.store, self.url)
        with boot.replica_lock(self.path + "-pull"):  # one pull per replica at a time
            meta = self.meta()
            if meta.pending_pull is not None:  # an apply was interrupted: finish it first
                with apply_flag.applying():
                    pull_apply.apply_staged(self.store, self.path, self.conn_id, self.url)
                meta = self.meta()
            stage = StageWriter(self.path)  # pages go to disk as they arrive
            try:
                reply = self.source.changes_since(meta.synced_revision or "", on_page=stage.add,
                                                  on_reset=stage.reset)
                if stage.count:  # still no lock held: what the apply and the replay will read
                    needed = _replay_pages(self.store, stage.pgnos, reply.db_size)
                    if needed:
                        for p, data in self.source.fetch_at(needed, reply.revision).pages.items():
                            stage.add(p, data)
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
            misses = self.store.counters()["misses"]
            with apply_flag.applying():
                applied = pull_apply.apply_staged(self.store, self.path, self.conn_id, self.url,
                                                  on_conflict=on_conflict)
            self.last_apply_misses = self.store.counters()["misses"] - misses
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

    def push(self, transform: Optional[sync_push.Transform] = None) -> sync_push.PushResult:
        """Send the unpushed local changes (sync/push.py); no local lock is held on the
        network, so writers of every connection keep writing."""
        transform = transform if transform is not None else self.transform
        pipeline = sync_push.Pipeline(self.source.http, self.source.url, self.url)
        with boot.replica_lock(self.path + "-push"):
            ic = internal.connect(self.path, self.conn_id)
            try:
                return sync_push.push(ic, self.path, self.meta().client_unique_id, pipeline,
                                      transform=transform, threshold=self.push_threshold)
            finally:
                ic.close()


def _refuse_wal(store: pagestore.PageStore, display_url: str) -> None:
    """A connection whose authorizer was replaced can still switch the replica to WAL; a
    pull can neither lock nor keep such a replica coherent (DESIGN §2.5): refuse, before
    any network, with the way back."""
    page1 = store.read_page(1)
    if page1 is not None and (page1[18] == 2 or page1[19] == 2):
        raise OperationalError(
            f"pull from {display_url}: the replica {store.path} was switched to WAL mode "
            "(PRAGMA journal_mode=WAL with our authorizer replaced), which pull cannot keep coherent; "
            "nothing was changed. Run PRAGMA journal_mode=DELETE on it and pull again")


def _replay_pages(store: pagestore.PageStore, staged: Any, db_size: int) -> List[int]:
    """Pages to fetch before the lock (partial replicas): page 1 when the synced layer
    lacks it, and the synced version of every page the local layer changed - the replay
    rewrites the same rows, so it walks those B-tree pages again. (Pages it reaches that
    no local change touched are fetched inside the lock; ``last_apply_misses`` counts
    the misses an apply took.)"""
    def wanted(p: int) -> bool:
        return p <= db_size and p not in staged and not store.state(p) & pagestore.PG_SYNCED

    out = [1] if wanted(1) else []
    p = store.first_local(2)
    while p:
        if wanted(p):
            out.append(p)
        p = store.first_local(p + 1)
    return out


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


def _authorizer(action: int, arg1: Optional[str], arg2: Optional[str], db: Optional[str],
                source: Optional[str]) -> int:
    if (action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() == "journal_mode"
            and (arg2 or "").strip().lower() == "wal"):
        _tls.wal_refused = True
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


WAL_MESSAGE = ("journal_mode=WAL is not supported on a synced Turso replica: pull() keeps every "
               "connection coherent through the rollback journal's change counter (DESIGN 2.5); "
               "the replica stays in rollback-journal mode")


def _fail(cur: sqlite3.Cursor, exc: sqlite3.Error) -> BaseException:
    """The remote cursor's translation, plus the refused WAL switch (only on the error
    path: the authorizer's flag is read and reset when a statement failed)."""
    if getattr(_tls, "wal_refused", False):
        _tls.wal_refused = False
        if isinstance(exc, sqlite3.DatabaseError) and "not authorized" in str(exc):
            return NotSupportedError(WAL_MESSAGE)
    return remote_fail(cur, exc)


def connection_class(factory: type) -> type:
    """``remote_class(factory)`` whose cursors report a refused WAL switch clearly.

    A dead puller's half-done apply is finished by the VFS when a connection starts a
    read transaction (vfs.c rule (13), ``recover_dead_apply``): nothing per statement."""
    base = remote_class(factory)
    cls = _classes.get(base)
    if cls is not None:
        return cls

    class TursoCursor(RemoteCursor):
        __slots__ = ()
        _fail = _fail

    def iterdump(self: sqlite3.Connection, *args: Any, **kw: Any) -> Any:
        """The stdlib dump without the change-capture triggers (tables named sqlite_* are
        already skipped by it): the user's schema and rows only."""
        return (line for line in base.iterdump(self, *args, **kw) if not capture.hide_dump_line(line))

    cls = type(f"Turso{factory.__name__}", (base,), {"_cursor_class": TursoCursor, "iterdump": iterdump})
    _classes[base] = cls
    return cls


_classes: Dict[type, type] = {}


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
                rebase.remove_replay(path)
    target = f"file:{quote(path)}?vfs={VFS_NAME}&tdbconn={conn_id}"
    conn = sqlite3.connect(target, uri=True, factory=connection_class(factory), **connect_kwargs)
    conn.set_authorizer(_authorizer)
    conn._replica = replica = TursoReplica(store, source, handler, conn_id, path, conn)
    threshold = options.get("push_operations_threshold")
    replica.push_threshold = int(threshold) if threshold else None
    _install_capture(path, conn_id)
    return conn


def _install_capture(path: str, conn_id: int) -> None:
    """Change capture on a replica that has none yet (just bootstrapped, or made by an
    older version): one local write transaction, under the lock every writer takes."""
    ic = internal.connect(path, conn_id)
    try:
        if capture.installed(ic):
            return
        ic.execute("BEGIN IMMEDIATE")
        try:
            if not capture.installed(ic):
                capture.install(ic, gen=0)
            ic.execute("COMMIT")
        except BaseException:
            ic.execute("ROLLBACK")
            raise
    finally:
        ic.close()


def _saved_url(url: str) -> str:
    from ..transport.http import split_credentials

    return split_credentials(base_url(url))[0]
