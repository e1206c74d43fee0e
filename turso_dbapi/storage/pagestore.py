"""The page store of a lazily read database: Python side of ``_native/pagestore.c``.

A replica at path ``P`` is four files (layout and rules in pagestore.c's header):
``P`` (synced layer, the file SQLite opens and locks), ``P-tdblocal`` (local layer),
``P-tdbmap`` (shared presence/CRC sidecar) and ``P-tdbmeta.json`` (what this cache
holds: URL, version, page size, size; written temp -> fsync -> rename -> fsync dir).

``PageStore`` owns one C store per path and process (``open_store``), and the miss
path: when SQLite reads an absent page, C calls ``tdb_py_miss`` ONCE for the run of
absent pages; the connection's ``MissHandler`` plans readahead, fetches through a
``SingleFlight`` shared by every connection of the store, and hands the bytes to C
(``put_synced``), which fills only absent slots. Errors never cross into C: they are
kept (per thread) so the cursor of a remote connection can raise the real cause
instead of SQLite's "disk I/O error".

Lifetime: ``open_store`` / ``release_store`` count users; the last release closes the C
store unless SQLite still has the replica open in this process (a C miss callback must
never find its Python object gone, and a lazy file must always find its store).
Reopening the same path reuses the open store.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from ..errors import OperationalError, RemoteError
from .._util.progress import Progress
from ..fetch.readahead import BtreeSiblings, Lookahead, Readahead, SingleFlight

log = logging.getLogger("turso_dbapi")

SUFFIXES = (
    "",
    "-tdblocal",
    "-tdbmap",
    "-tdbmeta.json",
    "-journal",
    "-wal",
    "-shm",
)
META_FORMAT = 1
PG_SYNCED = 1  # PageStore.state bits (pagestore.h TDB_PG_*)
PG_LOCAL = 2

_tls = threading.local()
_stores_lock = threading.Lock()
_stores: Dict[str, PageStore] = {}
_conn_ids = itertools.count(1)


def _lib():
    from .._native import ffi, lib

    if lib is None:
        from .vfs import ensure_registered

        ensure_registered()  # raises the clear NotSupportedError
    return ffi, lib


# -- error capture --------------------------------------------------------------------


def take_error() -> Optional[BaseException]:
    """The exception of the last failed miss on this thread (and forget it)."""
    exc = getattr(_tls, "error", None)
    _tls.error = None
    return exc


def clear_error() -> None:
    _tls.error = None


def _keep_error(exc: BaseException) -> None:
    _tls.error = exc


# -- metadata ---------------------------------------------------------------------------


def write_json_atomic(path: str, data: Mapping[str, Any]) -> None:
    """temp -> fsync -> rename -> fsync dir: after a crash the old or the new file, whole."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_replica_files(path: str) -> None:
    for suffix in SUFFIXES:
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def identity_of(url: str, version: str, page_size: int, size: int) -> bytes:
    """32 bytes naming what a replica caches; stored in the sidecar header."""
    return hashlib.sha256(f"{url}\n{version}\n{page_size}\n{size}".encode()).digest()


# -- the store --------------------------------------------------------------------------


class PageStore:
    """One replica's C store in this process. Create with ``open_store``."""

    def __init__(self, path: str, page_size: int, size: int, identity: bytes):
        ffi, lib = _lib()
        self._ffi, self._lib = ffi, lib
        self.path = path
        self.page_size = page_size
        self.identity = identity
        self.single_flight = SingleFlight()
        self._handlers: weakref.WeakValueDictionary[int, MissHandler] = (
            weakref.WeakValueDictionary()
        )
        self._last_handler: Optional[Callable[[], Optional[MissHandler]]] = None
        self._handle = ffi.new_handle(self)  # kept alive by self: outlives the C pointer
        err = ffi.new("int *")
        sys_errno = ffi.new("int *")
        ptr = lib.tdb_store_open(
            path.encode(), page_size, size, identity, self._handle, err, sys_errno
        )
        if ptr == ffi.NULL:
            self._ptr = None
            raise StoreOpenError(int(err[0]), int(sys_errno[0]), path)
        self._ptr = ptr
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

    def set_remote_size(self, size: int) -> None:
        """For a new synced revision: the synced layer (and SQLite's view) has ``size`` bytes."""
        self._lib.tdb_store_set_remote_size(self._p, size)

    # pages ---------------------------------------------------------------------------
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

    def drop_synced(self, pgno: int) -> None:
        """Forget a synced page (it will be fetched again on its next read)."""
        self._lib.tdb_store_drop_synced(self._p, pgno)

    def drop_local(self) -> int:
        """Set the whole local layer aside (pagestore.c rule (16)); pages dropped. The
        caller holds SQLite's EXCLUSIVE lock and calls ``sync()`` to make it durable."""
        return int(self._lib.tdb_store_drop_local(self._p))

    def read_page(self, pgno: int) -> Optional[bytes]:
        """A page as SQLite sees it (local over synced), or None when absent; no network."""
        buf = self._ffi.new("uint8_t[]", self.page_size)  # per call: threads may read at once
        rc = self._lib.tdb_store_read_page(self._p, pgno, buf)
        if rc < 0:
            raise OperationalError(
                f"page store {self.path}: page {pgno} failed its check (code {-rc})"
            )
        return bytes(self._ffi.buffer(buf, self.page_size)) if rc == 1 else None

    def first_absent(self, start: int = 1, end: Optional[int] = None) -> int:
        return int(self._lib.tdb_store_first_absent(self._p, start, end or self.remote_pages))

    def first_local(self, start: int = 1, end: int = 0) -> int:
        """First page held in the local layer in [start, end] (end 0: all), or 0."""
        return int(self._lib.tdb_store_first_local(self._p, start, end))

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

    def sync(self) -> None:
        if self._lib.tdb_store_sync(self._p) != 0:
            raise OperationalError(f"page store {self.path}: fsync failed")

    # miss routing ---------------------------------------------------------------------
    def attach(self, handler: MissHandler) -> int:
        """Route misses of connections opened with ``tdbconn=<returned id>`` to handler."""
        conn_id = next(_conn_ids)
        self._handlers[conn_id] = handler
        self._last_handler = weakref.ref(handler)
        return conn_id

    def _handler_for(self, conn_id: int) -> Optional[MissHandler]:
        handler = self._handlers.get(conn_id)
        if handler is None and self._last_handler is not None:
            handler = self._last_handler()  # a connection without tdbconn: any live one
        return handler

    def _on_miss(self, conn_id: int, pgno: int, n_pages: int) -> int:
        handler = self._handler_for(conn_id)
        if handler is None:
            _keep_error(
                RemoteError(
                    f"page {pgno} of {self.path} is not cached and no remote "
                    "connection is open to fetch it"
                )
            )
            return 1
        return handler.handle_miss(pgno, n_pages)

    def download_all(self, handler: MissHandler, batch_bytes: int = 4 * 1024 * 1024) -> int:
        """Fetch every absent page (``partial=False``); returns pages fetched.

        A long download shows a progress bar on a terminal (never in pipes)."""
        batch = max(1, batch_bytes // self.page_size)
        total = self.remote_pages
        fetched = 0
        p = self.first_absent(1, total)
        absent = sum(1 for q in range(1, total + 1) if not self.is_present(q)) if p else 0
        with Progress(absent * self.page_size, f"download {handler.source.display_url}") as bar:
            while p:
                end = min(total, p + batch - 1)
                want = [q for q in range(p, end + 1) if not self.is_present(q)]
                fetched += handler.fetch_and_store(want, requested=want)
                missing = [q for q in want if not self.is_present(q)]
                if missing:
                    raise RemoteError(
                        f"{handler.source.display_url}: pages {missing[:5]} missing from the reply",
                        url=handler.source.display_url,
                    )
                bar.update(len(want) * self.page_size)
                p = self.first_absent(end + 1, total) if end < total else 0
        return fetched


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


def open_store(
    path: str,
    *,
    page_size: int,
    size: int,
    identity: bytes,
    meta: Optional[Mapping[str, Any]] = None,
) -> PageStore:
    """Open (or create) the replica at ``path`` for this identity.

    A replica left by another version or page size is removed first (a fresh cache,
    never a mix). ``meta`` is recorded in ``P-tdbmeta.json``.
    """
    path = os.path.realpath(path)  # the name SQLite's xFullPathname produces
    with _stores_lock:
        store = _stores.get(path)
        if store is not None:
            if store.identity == identity and store.page_size == page_size:
                store._users += 1
                return store
            raise OperationalError(
                f"the replica at {path} is open in this process for another version of the "
                "remote database; close those connections or use another local_path"
            )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        meta_path = path + "-tdbmeta.json"
        old = read_json(meta_path)
        if old is not None and old.get("identity") != identity.hex():
            log.info(
                "replica %s held another version (%s); starting a fresh cache",
                path,
                old.get("version"),
            )
            remove_replica_files(path)
        try:
            store = PageStore(path, page_size, size, identity)
        except StoreOpenError as exc:
            if exc.code != 2:
                raise
            log.info("replica %s: sidecar of another version; starting a fresh cache", path)
            remove_replica_files(path)
            store = PageStore(path, page_size, size, identity)
        if old is None or old.get("identity") != identity.hex():
            record = dict(meta or {})
            record.update(
                format=META_FORMAT,
                identity=identity.hex(),
                page_size=page_size,
                size=size,
                created=time.time(),
            )
            write_json_atomic(meta_path, record)
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
        if store._users or store._lib.tdb_store_refs(store._ptr) != 1:
            return False
        store._lib.tdb_store_release(store._ptr)
        store._ptr = None
        if _stores.get(store.path) is store:
            del _stores[store.path]
        return True


# -- the miss path ----------------------------------------------------------------------


# Background read-ahead windows grow to this many times readahead_max: they cost the reader
# no wait, and per-request costs dominate (measured, 106 MB cold full scan, 20 ms/request:
# 33-35 requests / ~1.08 s with x1, 15-16 requests / ~0.79 s with x4). An early-stopping
# scan may have fetched up to about as much again as it read (2 windows ahead, doubling).
LOOKAHEAD_FACTOR = 4


class MissHandler:
    """Fetches absent pages for one connection: readahead, single-flight, B-tree prefetch.

    A miss: held tripwire pages of the background read-ahead are stored at once (no
    request); otherwise ``Readahead.plan`` (plus, with ``prefetch``, the next B-tree
    siblings of a level walked in order: ``BtreeSiblings``) is fetched in ONE
    ``source.fetch`` call through the store's ``SingleFlight``. A forward scan then starts
    or advances the ``Lookahead`` (background windows; only for sources with
    ``pinned_pages``). ``close()`` stops it; call it before closing the source.
    """

    def __init__(
        self,
        store: PageStore,
        source: Any,
        *,
        segment_size: int = 128 * 1024,
        readahead_max: int = 4 * 1024 * 1024,
        prefetch: bool = False,
    ):
        self.store = store
        self.source = source
        self.readahead = Readahead(store.page_size, segment_size, readahead_max)
        self.prefetch = prefetch
        self.siblings = (BtreeSiblings(store.page_size, limit=2 * self.readahead.segment_pages)
                         if prefetch else None)
        self.last_error: Optional[BaseException] = None
        # Background read-ahead of scans: only where pages cannot change under us (L6).
        self.lookahead: Optional[Lookahead] = None
        if getattr(source, "pinned_pages", False):
            self.lookahead = Lookahead(
                self._fetch_window, store.is_present, store.single_flight.in_flight,
                lambda: store.remote_pages, LOOKAHEAD_FACTOR * self.readahead.max_pages,
            )

    def close(self) -> None:
        """Stop background read-ahead (before the source closes)."""
        if self.lookahead is not None:
            self.lookahead.close()

    def _fetch_window(self, pages: List[int], hold: Optional[int]) -> None:
        self.fetch_and_store(pages, requested=(), hold=hold, speculative=True)

    def handle_miss(self, pgno: int, n_pages: int) -> int:
        """C's callback for a run of absent pages; 0 when every one of them is now present."""
        try:
            store = self.store
            wanted = [p for p in range(pgno, pgno + n_pages) if not store.is_present(p)]
            if not wanted:
                return 0
            ahead = self.lookahead
            if ahead is not None:
                held = ahead.take(wanted)  # tripwires of the background read-ahead
                for p, data in held.items():
                    store.put_synced(p, data)
                if held:
                    ahead.advance(min(held))
                    wanted = [p for p in wanted if not store.is_present(p)]
                    if not wanted:
                        return 0
            total = store.remote_pages
            readahead = self.readahead
            plan = set(readahead.plan(wanted[0], total, store.is_present, store.was_read))
            plan.update(wanted)
            siblings = self.siblings
            if siblings is not None and not readahead.scanning():  # B-tree prefetch, same request
                plan.update(siblings.plan(wanted[0], total, store.is_present, store.was_read, plan))
            self.fetch_and_store(sorted(p for p in plan if p <= total), requested=wanted)
            if ahead is not None:
                ahead.take(wanted)  # a tripwire stored through a shared flight: no longer held
                if readahead.direction == 1 and readahead.window_pages >= 2 * readahead.segment_pages:
                    ahead.start(max(plan) + 1, readahead.window_pages)
                else:
                    ahead.advance(wanted[0])
                readahead.note_ahead(ahead.last_scheduled())
            missing = [p for p in wanted if not store.is_present(p)]
            if missing:
                raise RemoteError(
                    f"{self.source.display_url}: page {missing[0]} is missing from the "
                    f"reply (the remote has {total} pages)",
                    url=self.source.display_url,
                )
            return 0
        except BaseException as exc:  # never let an exception cross into C
            self.last_error = exc
            _keep_error(exc)
            log.debug("fetch for page %d failed: %r", pgno, exc)
            return 1

    def fetch_and_store(self, pgnos: List[int], *, requested: Iterable[int], hold: Optional[int] = None,
                        speculative: bool = False) -> int:
        """Fetch ``pgnos`` (sharing in-flight fetches) and store them; returns pages stored.

        ``hold``: a background read-ahead's tripwire, handed to ``lookahead.keep`` instead
        of being stored (stored after all when it is no longer wanted)."""
        if not pgnos:
            return 0
        asked = set(requested)
        store = self.store
        stored = 0

        def fetch(pages: List[int]) -> Dict[int, bytes]:
            # Runs while these pages are registered in flight: pages another thread
            # stored since our plan are skipped, and ours are stored before the flight
            # ends, so no page is ever fetched twice.
            nonlocal stored
            todo = [p for p in pages if not store.is_present(p)]
            if not todo:
                return {}
            t0 = time.perf_counter()
            got = self.source.fetch(todo)
            siblings = self.siblings
            if siblings is not None:  # children of every interior page fetched (prefetch=True)
                for p, data in got.items():
                    if p == 1 or data[:1] in (b"\x02", b"\x05"):
                        siblings.note(p, data)
            for p, data in got.items():
                if p == hold and self.lookahead is not None and self.lookahead.keep(p, data):
                    continue
                if store.put_synced(p, data, prefetched=p not in asked):
                    stored += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "fetched %d pages (%d..%d, %d asked) of %s in %.1f ms",
                    len(got),
                    todo[0],
                    todo[-1],
                    len(asked),
                    self.source.display_url,
                    (time.perf_counter() - t0) * 1000,
                )
            return got

        out = store.single_flight.fetch(pgnos, fetch, speculative)  # a reader never fails for a speculation
        for p in asked:  # pages shared from another flight that held them back (a tripwire)
            if p in out and not store.is_present(p) and store.put_synced(p, out[p]):
                stored += 1
        return stored


def _install_callback() -> None:
    ffi, lib = _lib()

    @ffi.def_extern()
    def tdb_py_miss(py_handle, conn_id, pgno, n_pages):  # noqa: ANN001 - cffi signature
        try:
            store: PageStore = ffi.from_handle(py_handle)
            return store._on_miss(int(conn_id), int(pgno), int(n_pages))
        except BaseException as exc:  # pragma: no cover - _on_miss catches its own
            _keep_error(exc)
            return 1


_install_callback()
