"""Bootstrap of a Turso replica into the page store (spec §6.1-6.3, §9).

Strategies:
  * full    — one request with an empty body; every page of the server is stored;
  * prefix  — ``bootstrap_prefix`` bytes: pages ``[0, floor(L/4096))`` (spec §2.8). A prefix
              under 4096 bytes would select no page at all (§9: the header page would be a
              hole), so it is rounded up to one page;
  * query   — ``bootstrap_query``: ``server_query_selector`` (a real server returns the pages
              the query touches; the reference server returns all pages).
``partial=True`` without a strategy bootstraps page 1 alone (the header and schema root: a
cold point lookup then costs about its pages, issue 13; a segment cost it ~10x).

Order (crash safety, §6.1 step 2). Until its last step a bootstrap is a cache being
filled, and a crash anywhere before that step means bootstrapping again, so it has one
flush point instead of one per step (a cold connect: 4 fsyncs and 2 page-store flushes,
from 16; tests/sync/test_cold_connect.py pins them):

1. ``bootstrap``: the sync metadata is written with ``bootstrapping: true`` (durable: it is
   the claim of the path, claim.py rule 1, and it says the files hold nothing of the
   user's, so an open after a crash starts afresh instead of refusing to drop "local
   changes"); then the pages are stored, without a flush.
2. ``complete``: the caller's ``install`` (change capture: a local write transaction with
   no journal file and no flush, ``sync.replica``), then ONE flush of the page store
   (local layer and sidecar; the synced layer too for a full bootstrap, which is meant to
   work offline - a partial one's pages heal by re-fetching, pagestore.c rules (7), (22)),
   then the final metadata (temp, fsync, rename, fsync of the directory): the commit point.

Bootstraps of one path are serialised by a file lock (``open_lock``:
``<replica>-tdbsync.lock``), so a second process simply opens the result.
"""

from __future__ import annotations

import hashlib
import time
import contextlib
import dataclasses
import os
from typing import Any, Callable, ContextManager, List, Mapping, Optional, Tuple

from .._util.filelock import file_lock
from .._util.overlap import Overlap
from ..storage import files, pagestore
from . import metadata as sync_meta
from ..errors import OperationalError
from ..transport.http import split_credentials
from .._util.progress import Progress
from ..protocol.sync_wire import PAGE_SIZE
from .stage import remove_stage
from ..sources.turso import PullReply, TursoSyncSource



def store_identity(client_unique_id: str) -> bytes:
    """Stable for the replica's life (not the revision, which changes at every pull)."""
    return hashlib.sha256(f"turso-sync\n{client_unique_id}".encode()).digest()


def open_lock(replica: str, *, readonly: bool = False) -> ContextManager[bool]:
    """Serialises bootstraps and opens of ``replica`` across processes (``-tdbsync.lock``);
    ``readonly``: a shared lock, taken without writing (read-only opens only read)."""
    return file_lock(replica + files.LOCK, shared=readonly)


def pull_lock(replica: str, *, wait: bool = True) -> ContextManager[bool]:
    """One pull (or apply) of ``replica`` at a time, across processes; with ``wait=False``
    it yields False at once when another holds it."""
    return file_lock(replica + files.PULL_LOCK, wait=wait)


def push_lock(replica: str) -> ContextManager[bool]:
    """One push of ``replica`` at a time, across processes (``-push-tdbsync.lock``)."""
    return file_lock(replica + files.PUSH_LOCK)


def prefix_pages(options: Mapping[str, Any]) -> Optional[int]:
    """Pages of a prefix bootstrap, or None for full/query (see the module docstring)."""
    if options.get("bootstrap_query"):
        return None
    length = options.get("bootstrap_prefix")
    if length is None:
        if not options.get("partial"):
            return None
        length = PAGE_SIZE  # page 1: a query's other pages come on evidence (issue 13)
    return max(1, int(length) // PAGE_SIZE)


def is_partial(options: Mapping[str, Any]) -> bool:
    return bool(options.get("partial") or options.get("bootstrap_prefix") is not None
                or options.get("bootstrap_query"))


def open_replica_store(replica: str, meta: sync_meta.SyncMeta, display_url: str,
                       readonly: bool = False) -> pagestore.PageStore:
    return pagestore.open_store(
        replica, page_size=PAGE_SIZE, size=meta.db_size_pages * PAGE_SIZE,
        identity=store_identity(meta.client_unique_id),
        meta={"url": display_url, "version": f"turso-sync:{meta.client_unique_id}"},
        readonly=readonly,
        # A bootstrap's metadata already claims the path durably (step 1).
        durable_claim=not meta.bootstrapping,
    )


class _Into:
    """Streams bootstrap pages into the page store as they arrive (bounded memory)."""

    def __init__(self, replica: str, meta: sync_meta.SyncMeta, display_url: str,
                 prefix: Optional[int] = None, claimed: Callable[[], Any] = lambda: None):
        self.replica, self.meta, self.display_url = replica, meta, display_url
        self.claimed = claimed  # returns once the claim is durable (bootstrap step 1)
        self.store: Optional[pagestore.PageStore] = None
        self.db_size = 0
        self.stored: List[int] = []
        self.prefix = prefix
        # Long bootstraps show a bar on a terminal (never in pipes); see _util/progress.py.
        self.progress: Optional[Progress] = None

    def on_header(self, header: Any) -> None:
        self.claimed()  # before the first file of the store is created
        self.db_size = int(header.db_size)
        self.meta.db_size_pages = self.db_size
        expected = self.db_size if self.prefix is None else min(self.prefix, self.db_size)
        if self.progress is None:
            self.progress = Progress(expected * PAGE_SIZE, f"bootstrap {self.display_url}")
        if self.store is None:
            self.store = open_replica_store(self.replica, self.meta, self.display_url)
        else:  # a retry may answer at a newer revision (on_reset dropped the old pages)
            self.store.set_remote_size(self.db_size * PAGE_SIZE)

    def on_page(self, pgno: int, data: bytes) -> None:
        if self.store is not None and pgno <= self.db_size:
            self.store.put_synced(pgno, data, overwrite=True)
            self.stored.append(pgno)
            if self.progress is not None:
                self.progress.update(len(data))

    def on_pages(self, run: Any) -> None:
        """A run of pages (``sync_wire.PageRun``, 1-based): one store call for all."""
        if self.store is None:
            return
        pgnos, offsets = run.page_ids, run.offsets
        if max(pgnos) > self.db_size:  # pages past the size are ignored, as on_page does
            keep = [i for i, p in enumerate(pgnos) if p <= self.db_size]
            pgnos, offsets = [pgnos[i] for i in keep], [offsets[i] for i in keep]
        self.store.put_synced_many(run.buf, pgnos, offsets, overwrite=True)
        self.stored.extend(pgnos)
        if self.progress is not None:
            self.progress.update(len(pgnos) * PAGE_SIZE)

    def on_reset(self) -> None:
        if self.store is not None:
            for p in self.stored:
                self.store.drop_synced(p)
        self.stored.clear()

    def abandon(self) -> None:
        abandon(self.replica, self.store)
        self.store = None


def abandon(replica: str, store: Optional[pagestore.PageStore]) -> None:
    """The bootstrap failed (a refused reply, a network error, the capture install): close
    the store it opened and remove the files it created, its metadata included, so the
    path is as it was and the next connect (in this process too) bootstraps afresh."""
    if store is not None:
        pagestore.release_store(store)
    files.remove_store_files(replica)
    with contextlib.suppress(FileNotFoundError):
        os.remove(sync_meta.meta_path(replica))


def bootstrap(replica: str, source: TursoSyncSource, options: Mapping[str, Any],
              client_name: str) -> Tuple[sync_meta.SyncMeta, pagestore.PageStore]:
    """Step 1 of the module docstring (caller holds ``open_lock`` and found no metadata,
    or a bootstrap's that never completed): the pages are stored, not flushed; the
    caller finishes with ``complete`` (or ``abandon``)."""
    files.remove_store_files(replica)  # a stale journal would be rolled "back" into new pages
    remove_stage(replica)
    meta = sync_meta.SyncMeta.new(client_name)
    meta.remote_url = split_credentials(source.url)[0]  # never a secret in the file
    meta.bootstrapping = True
    # The claim, durable before any file of the store exists (the first page's arrival
    # waits for it); its fsyncs run while the request is on the network.
    claim = Overlap(sync_meta.save, replica, dataclasses.replace(meta))
    partial = is_partial(options)
    prefix = prefix_pages(options) if partial else None
    into = _Into(replica, meta, source.display_url, prefix, claimed=claim.result)
    try:
        out = _bootstrap(replica, source, options, into, meta, partial, prefix)
        claim.result()
        return out
    except BaseException:
        claim.wait()  # it must not write the metadata after abandon removed it
        into.abandon()
        raise


def _bootstrap(replica: str, source: TursoSyncSource, options: Mapping[str, Any], into: _Into,
               meta: sync_meta.SyncMeta, partial: bool,
               prefix: Optional[int]) -> Tuple[sync_meta.SyncMeta, pagestore.PageStore]:
    try:
        reply: PullReply = source.bootstrap(prefix_pages=prefix,
                                            query=options.get("bootstrap_query") or None, sink=into)
    finally:
        if into.progress is not None:
            into.progress.close()
    store = into.store
    if store is None:  # a header always comes first; this is only a guard
        raise OperationalError(f"bootstrap from {source.display_url}: the reply had no header")
    if reply.db_size and not store.is_present(1):
        # The header page must be present (§6.3); a query bootstrap may not include it.
        more = source.fetch_at([1], reply.revision).pages
        if 1 in more:
            store.put_synced(1, more[1], overwrite=True)
    meta.synced_revision = reply.revision
    meta.partial_bootstrap_server_revision = reply.revision if partial else None
    meta.last_pull_unix_time = int(time.time())
    meta.segment_size = options.get("segment_size")
    meta.prefetch = options.get("prefetch")
    return meta, store


def complete(replica: str, store: pagestore.PageStore, meta: sync_meta.SyncMeta,
             install: Callable[[], None]) -> None:
    """Step 2 of the module docstring: ``install`` (written to the store, not flushed),
    one flush, the final metadata. On failure the bootstrap is abandoned."""
    tmp: Optional[Overlap] = None
    try:
        install()
        # The final metadata's temp file is written and flushed while the page store
        # flushes; only the rename, the commit point of the bootstrap, waits for both.
        meta.bootstrapping = False
        tmp = Overlap(sync_meta.prepare, replica, dataclasses.replace(meta))
        # The flush the final metadata relies on. A partial replica's synced pages are
        # left to heal by re-fetching (pagestore.c (7)); a full one keeps them offline.
        store.sync(synced=not meta.partial)
        sync_meta.publish(replica, tmp.result())
    except BaseException:
        meta.bootstrapping = True
        if tmp is not None:
            tmp.wait()
            with contextlib.suppress(Exception):
                os.remove(tmp.result())
        abandon(replica, store)
        raise
