"""Turso replicas: routing, open (bootstrap or reopen), ``stats()``; ``pull()`` is
``sync.engine``'s.

Routing (option ``protocol``: auto | range | turso): ``libsql://`` and ``turso://`` URLs
(https), and http(s) URLs with an empty path or "/", are Turso sync servers; other http(s)
URLs are files read with HTTP ranges. ``connect(local_path)`` of a path with
``<path>-tdbsync.json`` beside it reopens the Turso replica with its saved URL, with no
network at open (spec §6.1 step 7).

Pinned revision of lazy fetches: pyturso pins them to the bootstrap revision forever; we
pin them to the LATEST SYNCED revision. Both are correct: a pull stores every page that
changed in (old, new], so a page still absent from the synced layer is identical at the
bootstrap revision and at every later synced one. Pinning to the latest means the server
only needs history back to the last pull instead of back to the bootstrap. Every
connection's source re-reads the pin from the metadata at each miss (its ``pin``
parameter: one small file read next to a network round trip), so a pull by any connection
of any process moves it, and a page re-fetched after a torn write is of the right revision.

Journal mode: a new replica starts in WAL mode, as Turso's and pyturso's local files
(option ``journal_mode``: wal | delete; the switch is part of the bootstrap's one flush);
pulls then commit into the WAL (``sync.wal_apply``): readers of every process keep their
snapshot during a pull. ``journal_mode="delete"`` keeps the rollback journal (DESIGN §2.5).
An existing replica keeps its file's mode; ``PRAGMA journal_mode=WAL`` switches a rollback
one to WAL for good (as with any SQLite file).

Two-way sync: change capture (``capture``) is installed at open on a replica that has none;
``push()`` is ``sync.push``; ``pull()`` rebases (``sync.rebase``).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import weakref
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import OperationalError, ProgrammingError, RemoteError
from ..fetch.btree_readahead import hints_for
from ..protocol.sync_wire import PAGE_SIZE
from ..replica.base import (
    RemoteReplica,
    ReportingMissHandler,
    StatsRecord,
    ReadOnlyMissHandler,
    attach_replica,
    default_replica_path,
    existing_replica_path,
    open_connection,
    remote_class,
    usable_local_path,
)
from ..sources.turso import TursoSyncSource, base_url
from ..storage import apply_flag, claim, files, pagestore
from ..storage.vfs import ensure_registered, replica_uri
from ..transport.http import split_credentials
from ..url import redact
from . import bootstrap as boot
from . import capture, ddl, engine, internal, rebase, tail, wal_apply
from . import metadata as sync_meta
from . import push as sync_push

DEFAULT_JOURNAL_MODE = "wal"  # of a new replica (option journal_mode); tests run both


def is_turso_replica(path: Any) -> bool:
    """Sync metadata beside it, or (metadata lost) a page store made for a Turso replica:
    either way it must reopen as one, never as a plain file or a range cache."""
    try:
        base = os.fsdecode(path)
    except (TypeError, ValueError):
        return False
    return files.replica_kind(base) == "turso"


# -- stats ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TursoStats(StatsRecord):
    """``conn.stats()`` of a Turso replica: pyturso's fields (§6.9) plus our counters.

    Network counters are this connection's (body bytes, as pyturso counts them; bootstrap
    included when this connection bootstrapped). ``cdc_operations`` = ``pending_changes``:
    changed rows not pushed yet (our log records keys, not statements, so it counts rows,
    not pyturso's CDC rows). ``main_wal_size``: bytes of ``<replica>-wal`` (0 in
    rollback-journal mode); ``revert_wal_size`` is 0 (no revert log: local frames are told
    apart by ``-tdbwalsync``, storage.wal_writer).
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
    index_prefetched: int = 0  # table leaves fetched because an index leaf predicted them
    index_prefetch_used: int = 0  # ... that SQLite then read (the rest: wrong predictions)


# -- the replica object -------------------------------------------------------------------


class TursoReplica(RemoteReplica):
    """``conn._replica`` of a Turso connection."""

    def __init__(self, store: pagestore.PageStore, source: TursoSyncSource,
                 handler: ReportingMissHandler, conn_id: int, path: str, conn: sqlite3.Connection):
        super().__init__(store, source, handler, conn_id, path)
        try:
            self._conn: Any = weakref.ref(conn)
        except TypeError:  # a bare sqlite3.Connection from a factory function
            self._conn = lambda: None
        self.push_threshold: Optional[int] = None  # push_operations_threshold
        self.lock_timeout: Optional[float] = None  # connect(timeout=): a pull's wait for locks too
        self.transform: Optional[sync_push.Transform] = None
        self.on_conflict: Optional[rebase.OnConflict] = None
        self.last_apply_misses = 0  # page misses inside the last apply's lock (partial mode)

    def meta(self) -> sync_meta.SyncMeta:
        return engine.load_meta(self.path)

    def stats(self) -> TursoStats:
        meta = self.meta()
        counters = self.counters()
        net, c = counters["net"], counters["store"]
        pushed = sync_push.load_state(self.path)
        conn = self._conn()
        waiting = sync_push.pending(conn, self.path) if conn is not None else 0
        return TursoStats(
            revision=meta.synced_revision, network_sent_bytes=net["bytes_sent"],
            network_received_bytes=net["bytes_received"], last_pull_unix_time=meta.last_pull_unix_time,
            last_push_unix_time=pushed.get("last_push_unix_time"), cdc_operations=waiting, main_wal_size=_size(self.path + "-wal"),
            revert_wal_size=0, requests=net["requests"], pages_fetched=net["pages_fetched"],
            retries=net["retries"], hits=c["hits"], misses=c["misses"], pages_read=c["pages_read"],
            prefetched=c["prefetched"], prefetch_used=c["prefetch_used"], crc_failures=c["crc_failures"],
            local_writes=c["local_writes"], pull_gen=meta.pull_gen, db_size_pages=meta.db_size_pages,
            partial=meta.partial, url=self.url, path=self.path, last_error=counters["last_error"],
            pending_changes=waiting, pushed_rows=int(pushed.get("pushed_rows", 0)),
            pushed_bytes=int(pushed.get("pushed_bytes", 0)),
            index_prefetched=counters["policy"]["index_prefetched"],
            index_prefetch_used=counters["policy"]["index_prefetch_used"],
        )

    readonly = False  # opened with readonly=true: pull() and push() would write its files

    def _refuse_readonly(self, what: str) -> None:
        if self.readonly:  # sqlite3's own words for a write to a read-only database
            raise OperationalError(
                f"attempt to write a readonly database: {what}() writes the replica {self.path}, "
                "which was opened with readonly=true")

    def pull(self, on_conflict: Optional[rebase.OnConflict] = None) -> bool:
        """Fetch and apply the server's changes, replaying the unpushed local ones on top
        (``sync.engine.pull``); True when pages changed."""
        self._refuse_readonly("pull")
        conn = self._conn()
        if conn is not None and conn.in_transaction:
            raise OperationalError(
                f"pull from {self.url}: this connection is inside a transaction; commit or roll "
                "back first (a pull replaces the state every transaction reads)")
        try:
            pulled = engine.pull(self.store, self.source, self.path, self.conn_id,
                                 on_conflict=on_conflict if on_conflict is not None else self.on_conflict,
                                 lock_timeout=self.lock_timeout)
        except RemoteError as exc:
            raise exc.outside_a_read()  # no page read failed: SQLITE_IOERR, not _READ
        self.last_apply_misses = pulled.apply_misses
        return pulled.changed

    def push(self, transform: Optional[sync_push.Transform] = None) -> sync_push.PushResult:
        """Send the unpushed local changes (sync/push.py); no local lock is held on the
        network, so writers of every connection keep writing."""
        self._refuse_readonly("push")
        transform = transform if transform is not None else self.transform
        pipeline = sync_push.Pipeline(self.source.http, self.source.url, self.url)
        with boot.push_lock(self.path):
            ic = internal.connect(self.path, self.conn_id)
            try:
                return sync_push.push(ic, self.path, self.meta().client_unique_id, pipeline,
                                      transform=transform, threshold=self.push_threshold)
            except RemoteError as exc:
                raise exc.outside_a_read()
            finally:
                ic.close()


# -- connections ---------------------------------------------------------------------------


_classes: Dict[type, type] = {}


def connection_class(factory: type) -> type:
    """``remote_class(factory)`` whose ``iterdump`` leaves the capture machinery out, and
    whose ``execute`` / ``executescript`` and cursors keep the capture through ALTER TABLE
    (sync/ddl.py).

    A dead puller's half-done apply is finished by the VFS when a connection starts a
    read transaction (vfs.c rule (13), ``engine.recover_dead_apply``): nothing per statement."""
    base = remote_class(factory, ddl.CaptureCursor, "Remote")
    cls = _classes.get(base)
    if cls is None:
        def iterdump(self: sqlite3.Connection, *args: Any, **kw: Any) -> Any:
            """The stdlib dump without the change-capture triggers (tables named sqlite_*
            are already skipped by it): the user's schema and rows only."""
            return (line for line in base.iterdump(self, *args, **kw) if not capture.hide_dump_line(line))

        cls = _classes[base] = type(base.__name__, (base,), {"iterdump": iterdump, **ddl.connection_methods(base)})
    return cls


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
    readonly = bool(options.get("readonly"))  # nothing is written to the replica's files
    path = existing_replica_path(local_path) if readonly else usable_local_path(local_path)
    client_name = str(options.get("client_name") or "turso-dbapi")
    threshold = int(options["push_operations_threshold"]) if options.get("push_operations_threshold") else None
    client = None  # the bootstrap's HTTP client (and counters) carry on into the connection
    fresh = False
    with boot.open_lock(path, readonly=readonly):
        meta = sync_meta.load(path)
        if (meta is None or meta.bootstrapping) and readonly:
            raise OperationalError(
                f"unable to open the read-only replica {path}: it has no sync metadata; "
                "readonly=true never writes, so it cannot bootstrap one")
        if meta is not None and meta.bootstrapping:  # a bootstrap that never completed:
            url = url or meta.remote_url             # its files hold nothing of the user's
        elif meta is None:
            claim.refuse_foreign(path, redact(base_url(url)) if url else "a Turso server")
            claim.refuse_dropping_local(  # a bootstrap starts from nothing
                path, "has lost its sync metadata (-tdbsync.json: which server revision its pages "
                "are of)")
        if meta is None or meta.bootstrapping:
            if url is None:
                raise ProgrammingError(f"{path} has no sync metadata; give the server URL to bootstrap it")
            bootstrapper = TursoSyncSource(url, options)
            claim.refuse_repoint(path, claim.recorded_url(path), bootstrapper.display_url)
            meta, store = boot.bootstrap(path, bootstrapper, options, client_name)
            client = bootstrapper.http
            fresh = True
        else:
            if url is None:
                if not meta.remote_url:
                    raise ProgrammingError(f"the replica {path} has no saved server URL; pass url=")
                url = meta.remote_url
            elif meta.remote_url and _saved_url(url) != meta.remote_url:
                claim.refuse_repoint(path, redact(meta.remote_url), redact(_saved_url(url)))
            changed = sync_meta.merge_configuration(
                meta, remote_url=_saved_url(url), segment_size=explicit.get("segment_size"),
                prefetch=explicit.get("prefetch"))
            if changed and not readonly:
                sync_meta.save(path, meta)
            store = boot.open_replica_store(path, meta, redact(base_url(url)), readonly=readonly)
        if fresh:  # the bootstrap ends under the lock, with its source attached for misses
            source, handler, conn_id = _attach(store, url, options, explicit, client, path, meta, readonly)
            wal = (options.get("journal_mode") or DEFAULT_JOURNAL_MODE) == "wal"
            boot.complete(path, store, meta, lambda: _install_capture(store, path, conn_id, fresh=True, wal=wal,
                                                                     exact=threshold is not None))
    if not fresh:
        source, handler, conn_id = _attach(store, url, options, explicit, client, path, meta, readonly)
    apply_flag.register_recovery(path, engine.recover_dead_apply)
    if not readonly:
        engine.finish_interrupted(store, path, conn_id, source.display_url, meta)
    elif meta.pending_pull is not None and not wal_apply.one_commit(meta):  # that one: whole as it is
        pagestore.release_store(store)
        raise OperationalError(
            f"unable to open the read-only replica {path}: a pull was interrupted mid-apply; "
            "finishing it writes the replica: open it once without readonly")
    # PRAGMA journal_mode=WAL really switches the replica: pulls commit into the WAL then
    # (sync.wal_apply). A read-only replica cannot switch (SQLite answers the mode in effect).
    conn = open_connection(replica_uri(path, conn_id, readonly=readonly), factory,
                           connect_kwargs, connection_class)
    # An INSERT OR REPLACE that deletes a row through another UNIQUE key fires the capture's
    # delete trigger only with recursive triggers on (SQLite: "REPLACE ... delete triggers
    # fire if and only if recursive triggers are enabled"). Every replica connection, ours
    # and the user's, is opened here or by internal.connect, which do the same.
    try:
        conn.execute("PRAGMA recursive_triggers = ON")
    except sqlite3.ProgrammingError:  # a factory whose __init__ skipped the base: no database
        pass  # is open, so nothing can be written through it either
    replica = TursoReplica(store, source, handler, conn_id, path, conn)
    replica.readonly = readonly
    attach_replica(conn, replica)
    if connect_kwargs.get("timeout") is not None:  # as sqlite3's: how long a lock is waited for
        replica.lock_timeout = max(float(connect_kwargs["timeout"]), 0.0)
    replica.push_threshold = threshold
    replica.on_conflict = options.get("on_conflict")  # defaults of pull() / push()
    replica.transform = options.get("transform")
    if not readonly and not fresh:  # a fresh bootstrap installed it (boot.complete)
        _install_capture(store, path, conn_id, exact=threshold is not None)
    return conn


def _attach(store: pagestore.PageStore, url: Any, options: Mapping[str, Any], explicit: Mapping[str, Any],
            client: Any, path: str, meta: sync_meta.SyncMeta, readonly: bool) -> Tuple[TursoSyncSource, Any, int]:
    """The connection's source and miss handler, attached to the store: (source, handler, id)."""
    hints = hints_for(store)
    source = TursoSyncSource(
        url, options, client=client, pinned_revision=meta.synced_revision or "",
        size=meta.db_size_pages * PAGE_SIZE, pin=lambda: engine.synced_revision(path),
        page_observer=hints.note,
    )
    handler = (ReadOnlyMissHandler if readonly else ReportingMissHandler)(
        store, source,
        segment_size=_effective(explicit, meta.segment_size, "segment_size", options["segment_size"]),
        readahead_max=options["readahead_max"],
        prefetch=bool(_effective(explicit, meta.prefetch, "prefetch", False)),
        btree_hints=hints,
    )
    return source, handler, store.attach(handler)


def _install_capture(store: pagestore.PageStore, path: str, conn_id: int, fresh: bool = False,
                     wal: bool = False, exact: bool = False) -> None:
    """Change capture on a replica that has none yet (just bootstrapped, or made by an
    older version), or upgraded (capture.upgrade): one local write transaction, under the
    lock every writer takes. Local changes made before (an older version's scratchpad) are
    kept: every row is logged.

    ``fresh``: step 2 of a bootstrap (sync.bootstrap), whose files are still a cache that a
    crash makes bootstrap again: no journal file and no flush (``journal_mode=MEMORY``,
    ``synchronous=OFF``); the bootstrap's one flush covers these pages too. ``wal``: a
    fresh replica then switches to WAL (SQLite writes the header's version bytes straight
    to the file, as it goes through journal_mode=OFF from MEMORY), in the same flush.
    ``exact``: the connection has a push_operations_threshold: the tails go off (tail.py
    EXACT BATCHES)."""
    ic = internal.connect(path, conn_id)
    try:
        if fresh:
            ic.execute("PRAGMA journal_mode = MEMORY")
            ic.execute("PRAGMA synchronous = OFF")
        elif capture.installed(ic) and not capture.outdated(ic) and not (exact and capture.tails_enabled(ic)):
            return
        elif exact and capture.installed(ic):
            tail.needed(ic, False)  # the fold's reads before the lock (nothing fetched under it)
        ic.execute("BEGIN IMMEDIATE")
        try:
            if not capture.installed(ic):
                # a fresh bootstrap holds no local change: no scan of the sidecar for one;
                # tails start now if reading each table's largest rowid fetches nothing
                capture.install(ic, gen=0, log_rows=not fresh and bool(rebase.local_changes(store)),
                                tails=store.first_absent(1) == 0, tails_enabled=not exact)
            elif capture.outdated(ic):  # made by an older version: keep its log
                capture.upgrade(ic, tails=store.first_absent(1) == 0)
            if exact:
                tail.set_enabled(ic, False)
            ic.execute("COMMIT")
        except BaseException:
            ic.execute("ROLLBACK")
            raise
        if wal:
            if str(ic.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower() != "wal":
                raise OperationalError(f"unable to switch the new replica {path} to WAL mode")
            # one read opens the WAL: its -wal and -shm then exist for good (vfs.c rule (23)),
            # which a later read-only open needs and cannot create
            ic.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
    finally:
        ic.close()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _saved_url(url: str) -> str:
    return split_credentials(base_url(url))[0]
