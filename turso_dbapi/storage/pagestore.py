"""The page store of a lazily read database: Python side of ``_native/pagestore.c``.

A replica's store at path ``P`` is four files (``storage.files``; layout and rules in
pagestore.c's header): ``P`` (synced layer, the file SQLite opens and locks), ``P-tdblocal``
(local layer), ``P-tdbmap`` (shared presence/CRC sidecar) and ``P-tdbmeta.json`` (what this
cache holds: URL, version, page size, size; written by ``_util.atomic``).

``PageStore`` owns one C store per path and process (``open_store``) and routes misses:
when SQLite reads an absent page, C calls ``tdb_py_miss`` (``storage.callbacks``) ONCE for
the run of absent pages, and the store hands it to the miss handler its connection was
attached with (``fetch.miss.MissHandler``), which fetches and hands the bytes back
(``put_synced``); C fills only absent slots.

Lifetime: ``open_store`` / ``release_store`` count users; the last release closes the C
store unless SQLite still has the replica open in this process (a C miss callback must
never find its Python object gone, and a lazy file must always find its store).
Reopening the same path reuses the open store.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from .._util.atomic import read_json, write_json_atomic
from ..errors import OperationalError, RemoteError
from . import callbacks, claim, files, header

log = logging.getLogger("turso_dbapi")

META_FORMAT = 1
PG_SYNCED = 1  # PageStore.state bits (pagestore.h TDB_PG_*)
PG_LOCAL = 2

_stores_lock = threading.Lock()
_stores: Dict[str, PageStore] = {}
_conn_ids = itertools.count(1)


def _lib():
    from .._native import ffi, lib

    if lib is None:
        from .vfs import ensure_registered

        ensure_registered()  # raises the clear NotSupportedError
    return ffi, lib


# -- identity --------------------------------------------------------------------------


def identity_of(url: str, version: str, page_size: int, size: int) -> bytes:
    """32 bytes naming what a replica caches; stored in the sidecar header."""
    return hashlib.sha256(f"{url}\n{version}\n{page_size}\n{size}".encode()).digest()


# -- the store --------------------------------------------------------------------------


class PageStore:
    """One replica's C store in this process. Create with ``open_store``."""

    def __init__(self, path: str, page_size: int, size: int, identity: bytes, readonly: bool = False):
        ffi, lib = _lib()
        self._ffi, self._lib = ffi, lib
        self.path = path
        self.page_size = page_size
        self.identity = identity
        self._handlers: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._last_handler: Optional[Callable[[], Any]] = None
        callbacks.install(ffi)  # C may call back as soon as it holds our handle
        self._handle = ffi.new_handle(self)  # kept alive by self: outlives the C pointer
        err = ffi.new("int *")
        sys_errno = ffi.new("int *")
        opener = lib.tdb_store_open_readonly if readonly else lib.tdb_store_open  # (18)
        ptr = opener(path.encode(), page_size, size, identity, self._handle, err, sys_errno)
        if ptr == ffi.NULL:
            self._ptr = None
            raise StoreOpenError(int(err[0]), int(sys_errno[0]), path)
        self._ptr = ptr
        self.readonly = bool(lib.tdb_store_readonly(ptr))  # pagestore.c rule (18)
        self._users = 0  # open_store() calls not yet matched by release_store(); under _stores_lock

    @property
    def _p(self) -> Any:
        if self._ptr is None:
            raise OperationalError(f"page store {self.path} is closed")
        return self._ptr

    @property
    def closed(self) -> bool:
        return self._ptr is None

    # sizes ---------------------------------------------------------------------------
    @property
    def remote_size(self) -> int:
        return int(self._lib.tdb_store_remote_size(self._p))

    @property
    def logical_size(self) -> int:
        return int(self._lib.tdb_store_logical_size(self._p))

    @property
    def remote_pages(self) -> int:
        return -(-self.remote_size // self.page_size)

    @property
    def max_pages(self) -> int:
        """The highest page number this store can ever hold (its sidecar reservation, fixed
        at open). A build of the core without the accessor guarantees its minimum, 2^24."""
        getter = getattr(self._lib, "tdb_store_max_pages", None)
        return int(getter(self._p)) if getter is not None else 1 << 24

    def set_remote_size(self, size: int) -> None:
        """For a new synced revision: the synced layer (and SQLite's view) has ``size`` bytes."""
        self._lib.tdb_store_set_remote_size(self._p, size)

    # pages ---------------------------------------------------------------------------
    def raise_remote_size(self, size: int) -> None:
        """WAL replicas: the synced layer may hold pages up to ``size`` bytes (the size
        SQLite sees is unchanged: old snapshots read it)."""
        self._lib.tdb_store_raise_remote_size(self._p, size)

    def state(self, pgno: int) -> int:
        return int(self._lib.tdb_store_page_state(self._p, pgno))

    def is_present(self, pgno: int) -> bool:
        return bool(self._lib.tdb_store_page_state(self._p, pgno) & 3)

    def was_read(self, pgno: int) -> bool:
        """False only for pages readahead stored and nobody has read yet (in this process)."""
        return not (self._lib.tdb_store_page_state(self._p, pgno) & self._lib.TDB_PG_PREFETCHED)

    def put_synced(
        self, pgno: int, data: bytes, *, overwrite: bool = False, prefetched: bool = False
    ) -> bool:
        """Store a page of the synced version; True when written, False when one was kept.

        Without ``overwrite`` only absent slots are filled (rule (5)); ``overwrite`` is for
        a new synced revision applied under SQLite's exclusive lock.
        """
        if len(data) != self.page_size:
            raise ValueError(f"page {pgno}: {len(data)} bytes, expected {self.page_size}")
        rc = self._lib.tdb_store_put_synced(self._p, pgno, data, int(overwrite), int(prefetched))
        if rc < 0:
            raise OperationalError(
                f"page store {self.path}: cannot store page {pgno} "
                f"(past the remote size of {self.remote_pages} pages, or disk full)"
            )
        return rc == 1

    def put_synced_many(self, buf: bytes, pgnos: Sequence[int], offsets: Sequence[int], *,
                        overwrite: bool = False) -> None:
        """``put_synced`` of ``buf[offsets[i]:offsets[i] + page_size]`` as page ``pgnos[i]``
        for every i, in one C call (pagestore.c rule (19)); raises as ``put_synced`` does,
        naming the first page that could not be stored."""
        n = len(pgnos)
        if len(offsets) != n:
            raise ValueError(f"{n} page numbers but {len(offsets)} offsets")
        if n and (min(offsets) < 0 or max(offsets) + self.page_size > len(buf)):
            raise ValueError(f"a page at offsets {min(offsets)}..{max(offsets)} is past the "
                             f"{len(buf)} bytes given")
        ffi = self._ffi
        done = self._lib.tdb_store_put_synced_many(self._p, ffi.from_buffer(buf), ffi.new("uint32_t[]", pgnos),
                                                   ffi.new("uint32_t[]", offsets), n, int(overwrite))
        if done < n:
            raise OperationalError(
                f"page store {self.path}: cannot store page {pgnos[done]} "
                f"(past the remote size of {self.remote_pages} pages, or disk full)"
            )

    def drop_synced(self, pgno: int) -> None:
        """Forget a synced page (it will be fetched again on its next read)."""
        self._lib.tdb_store_drop_synced(self._p, pgno)

    def drop_local(self) -> int:
        """Set the whole local layer aside (pagestore.c rule (18)); pages dropped. The
        caller holds SQLite's EXCLUSIVE lock and calls ``sync()`` to make it durable."""
        return int(self._lib.tdb_store_drop_local(self._p))

    def exclusive_held(self) -> bool:
        """Whether some connection may hold SQLite's EXCLUSIVE lock on the file: False only
        when a probe of the store's own descriptor says none does (pagestore.c rule (23))."""
        return int(self._lib.tdb_store_exclusive_holder(self._p)) != 0

    def read_page(self, pgno: int) -> Optional[bytes]:
        """A page as SQLite sees it (local over synced), or None when absent; no network."""
        buf = self._ffi.new("uint8_t[]", self.page_size)  # per call: threads may read at once
        rc = self._lib.tdb_store_read_page(self._p, pgno, buf)
        if rc < 0:
            raise OperationalError(
                f"page store {self.path}: page {pgno} failed its check (code {-rc})"
            )
        return bytes(self._ffi.buffer(buf, self.page_size)) if rc == 1 else None

    def read_synced(self, pgno: int) -> Optional[bytes]:
        """The synced layer's page (no local layer, no network), or None when absent."""
        buf = self._ffi.new("uint8_t[]", self.page_size)
        rc = self._lib.tdb_store_read_synced(self._p, pgno, buf)
        if rc < 0:
            raise OperationalError(f"page store {self.path}: page {pgno} could not be read")
        return bytes(self._ffi.buffer(buf, self.page_size)) if rc == 1 else None

    def first_absent(self, start: int = 1, end: Optional[int] = None) -> int:
        return int(self._lib.tdb_store_first_absent(self._p, start, end or self.remote_pages))

    def first_local(self, start: int = 1, end: int = 0) -> int:
        """First page held in the local layer in [start, end] (end 0: all), or 0."""
        return int(self._lib.tdb_store_first_local(self._p, start, end))

    def forget_unchanged_local(self, pgno: int) -> bool:
        """True when ``pgno`` holds no local change; a local entry that changes nothing
        (bytes equal to the synced page, e.g. after a rolled-back transaction spilled it)
        is cleared first (pagestore.c rule (17))."""
        rc = self._lib.tdb_store_forget_unchanged_local(self._p, pgno)
        if rc < 0:
            raise OperationalError(f"page store {self.path}: cannot read page {pgno}")
        return rc == 1

    def counters(self) -> Dict[str, int]:
        c = self._ffi.new("tdb_store_counters *")
        self._lib.tdb_store_get_counters(self._p, c)
        return {
            name: int(getattr(c, name))
            for name in (
                "hits",
                "misses",
                "pages_read",
                "crc_failures",
                "prefetched",
                "prefetch_used",
                "local_writes",
            )
        }

    def flushes(self) -> Dict[str, int]:
        """Flushes this process issued (pagestore.c rule (22)): fdatasync of the local and
        of the synced layer, msync of the sidecar."""
        c = self._ffi.new("tdb_store_counters *")
        self._lib.tdb_store_get_counters(self._p, c)
        return {"local": int(c.local_syncs), "synced": int(c.synced_syncs), "map": int(c.map_syncs)}

    def sync(self, *, synced: bool = True) -> None:
        """Flush the local layer, the sidecar and (``synced``) the synced layer. Without
        ``synced`` the synced layer's pages written so far count as flushed: for a cache
        whose lost pages heal themselves (pagestore.c rules (7) and (22))."""
        lib = self._lib
        parts = lib.TDB_SYNC_LOCAL | lib.TDB_SYNC_MAP
        parts |= lib.TDB_SYNC_SYNCED if synced else lib.TDB_SYNC_FORGET
        if lib.tdb_store_sync_parts(self._p, parts) != 0:
            raise OperationalError(f"page store {self.path}: fsync failed")

    def apply_flag(self) -> bool:
        """The sidecar's apply flag (``storage.apply_flag``)."""
        return bool(self._lib.tdb_store_applying(self._p))

    def set_apply_flag(self, on: bool) -> None:
        if self._lib.tdb_store_set_applying(self._p, int(on)) != 0:
            raise OSError(f"msync of the apply flag of {self.path} failed")

    def close(self) -> None:
        """Close a private store (made with ``PageStore(...)``, never by ``open_store``: a
        pull's scratch view, ``sync.side_replay``) once SQLite has closed its file."""
        if self._ptr is not None:
            self._lib.tdb_store_release(self._ptr)
            self._ptr = None

    # miss routing ---------------------------------------------------------------------
    def attach(self, handler: Any, conn_id: Optional[int] = None) -> int:
        """Route misses of connections opened with ``tdbconn=<returned id>`` to ``handler``
        (anything with ``handle_miss(pgno, n_pages) -> int``, e.g. ``fetch.miss.MissHandler``;
        held weakly: the connection's replica keeps it alive). ``conn_id``: replace the
        handler of that connection instead (a pull that changes its source)."""
        if conn_id is None:
            conn_id = next(_conn_ids)
        self._handlers[conn_id] = handler
        self._last_handler = weakref.ref(handler)
        return conn_id

    def _handler_for(self, conn_id: int) -> Any:
        handler = self._handlers.get(conn_id)
        if handler is None and self._last_handler is not None:
            handler = self._last_handler()  # a connection without tdbconn: any live one
        return handler

    def on_miss(self, conn_id: int, pgno: int, n_pages: int) -> int:
        """C's ``tdb_py_miss`` for a connection of this store (``storage.callbacks``)."""
        handler = self._handler_for(conn_id)
        if handler is None:
            callbacks.keep_error(
                RemoteError(
                    f"page {pgno} of {self.path} is not cached and no remote "
                    "connection is open to fetch it"
                )
            )
            return 1
        return handler.handle_miss(pgno, n_pages)

def open_readonly(path: str, page_size: int, size: int, identity: bytes) -> PageStore:
    """The store of an existing replica, read-only (pagestore.c rule (18)): no file is
    created, removed or written; anything but a replica of this identity is refused."""
    meta = read_json(path + files.CACHE_META)
    if not os.path.exists(path + files.SIDECAR) or meta is None:
        raise OperationalError(
            f"unable to open a read-only replica at {path}: there is none (readonly=true "
            "never writes, so it cannot create one; open it once without readonly)")
    if meta.get("identity") != identity.hex() or claim.sidecar_state(path, page_size, identity) != "ok":
        raise OperationalError(
            f"unable to open the read-only replica at {path}: it holds another version of the "
            f"remote database ({meta.get('version')}), and a read-only replica cannot refresh "
            "its cache; open it without readonly")
    try:
        store = PageStore(path, page_size, size, identity, readonly=True)
    except StoreOpenError as exc:
        raise OperationalError(f"unable to open the read-only replica at {path}: {exc}") from None
    page1 = store.read_page(1)
    missing = [s for s in ("-wal", "-shm") if not os.path.exists(path + s)]
    if page1 is not None and page1[header.READ_VERSION] == header.WAL and missing:
        store.close()  # SQLite opens a read-only WAL database only when both exist (vfs.c (23))
        raise OperationalError(
            f"unable to open the read-only WAL replica at {path}: its {' and '.join(missing)} "
            "file is missing and a read-only open creates none; open it once without readonly")
    return store


class StoreOpenError(OperationalError):
    def __init__(self, code: int, sys_errno: int, path: str):
        reason = {
            1: f"I/O error ({os.strerror(sys_errno) if sys_errno else 'unknown'})",
            2: "its sidecar belongs to another version or page size",
            3: "bad page size or path",
            4: "it is open in this process for another version",
        }.get(code, f"error {code}")
        super().__init__(f"cannot open the page store at {path}: {reason}")
        self.code = code
        self.sys_errno = sys_errno


_SIDECAR_TROUBLE = {
    "missing": "has lost its sidecar (-tdbmap, which records which pages are valid)",
    "damaged": "has a damaged sidecar (-tdbmap: its header is not ours)",
    "other": "has a sidecar (-tdbmap) of another replica, version or page size",
}


def open_store(
    path: str,
    *,
    page_size: int,
    size: int,
    identity: bytes,
    meta: Optional[Mapping[str, Any]] = None,
    readonly: bool = False,
    durable_claim: bool = True,
) -> PageStore:
    """Open (or create) the replica at ``path`` for this identity.

    ``readonly``: open an existing replica of exactly this identity without writing
    anything (``open_readonly``). ``durable_claim=False``: ``P-tdbmeta.json`` is written
    without fsyncs, for a caller whose own file already claims the path durably (a Turso
    bootstrap's sync metadata: claim.py rule 1 accepts either).

    A replica left by another version or page size, or whose sidecar is missing or
    damaged, is removed first (a fresh cache, never a mix) unless it holds local changes:
    then, and for a file we did not create, it raises (``claim``). ``meta`` is recorded in
    ``P-tdbmeta.json``.
    """
    path = os.path.realpath(path)  # the name SQLite's xFullPathname produces
    with _stores_lock:
        store = _stores.get(path)
        if store is not None and not store._users and _close_if_unused(store):
            store = None  # its last lazy file closed after its last release (a late cursor)
        if store is not None:
            if store.readonly and not readonly:
                raise OperationalError(
                    f"the replica at {path} is open read-only in this process; close those "
                    "connections to open it writable")
            if store.identity == identity and store.page_size == page_size:
                store._users += 1
                return store
            raise OperationalError(
                f"the replica at {path} is open in this process for another version of the "
                "remote database; close those connections (and drop their cursors: a cursor "
                "keeps its statement, hence the file, open) or use another local_path"
            )
        if readonly:
            store = open_readonly(path, page_size, size, identity)
            _stores[path] = store
            store._users += 1
            return store
        os.makedirs(os.path.dirname(path), exist_ok=True)
        claim.refuse_foreign(path, str((meta or {}).get("url") or "a remote database"))
        meta_path = path + files.CACHE_META
        old = read_json(meta_path)
        if old is not None and old.get("identity") != identity.hex():
            claim.refuse_dropping_local(
                path, f"holds another version of its remote database ({old.get('version')})")
            log.info("replica %s held another version (%s); starting a fresh cache", path,
                     old.get("version"))
            files.remove_store_files(path)
            old = None
        state = claim.sidecar_state(path, page_size, identity)
        if state != "ok" and (os.path.exists(path) or os.path.exists(path + files.SIDECAR)):
            claim.refuse_dropping_local(path, _SIDECAR_TROUBLE[state])
            if state != "missing":
                log.warning("replica %s %s; starting a fresh cache (it held no local changes)",
                            path, _SIDECAR_TROUBLE[state])
            files.remove_store_files(path)
            old = None
        record = dict(meta or {}, format=META_FORMAT, identity=identity.hex(),
                      page_size=page_size, size=size, created=time.time())
        if old is None:  # the claim (claim.py rule 1) is written before the files exist
            write_json_atomic(meta_path, record, durable=durable_claim)
        try:
            store = PageStore(path, page_size, size, identity)
        except StoreOpenError as exc:  # another process changed the sidecar meanwhile
            if exc.code != 2:
                raise
            claim.refuse_dropping_local(path, _SIDECAR_TROUBLE["other"])
            log.info("replica %s: sidecar of another version; starting a fresh cache", path)
            files.remove_store_files(path)
            write_json_atomic(meta_path, record, durable=durable_claim)
            store = PageStore(path, page_size, size, identity)
        _stores[path] = store
        store._users += 1
        return store


def release_store(store: PageStore) -> bool:
    """Undo one ``open_store``; the last one closes the store's files, unless SQLite
    still has the replica open in this process (then it stays open: a lazy file must
    always find its store, or it would read the sparse synced layer). True when closed."""
    with _stores_lock:
        if store._ptr is None:
            return True
        store._users = max(0, store._users - 1)
        return not store._users and _close_if_unused(store)


def _close_if_unused(store: PageStore) -> bool:
    """Close a store no ``open_store`` user holds once SQLite has no file of it open (a
    cursor of a closed connection keeps its statement, hence the file, open until it is
    freed: then the next ``open_store`` of the path closes it). Under ``_stores_lock``."""
    if store._ptr is not None:
        if store._lib.tdb_store_refs(store._ptr) != 1:
            return False
        store._lib.tdb_store_release(store._ptr)
        store._ptr = None
    if _stores.get(store.path) is store:
        del _stores[store.path]
    return True
