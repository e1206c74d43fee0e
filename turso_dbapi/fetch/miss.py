"""The miss path: what a connection does when SQLite reads pages its replica lacks.

``MissHandler.handle_miss`` is called (through ``PageStore.on_miss``) ONCE for a run of
absent pages; it plans what to fetch (``access.AccessPolicy``: scan, descent or random
from what the replica's ``BtreeMap`` knows; the table leaves an index leaf predicts,
``index_prefetch.IndexPrefetch``; with ``prefetch`` also the next B-tree siblings,
``BtreeSiblings``), fetches it in ONE ``source.fetch`` call through a ``SingleFlight``
shared by every connection of the store, and stores the pages. Errors never cross into C:
they are kept per thread (``storage.callbacks.keep_error``) and the failure code goes back.
``download_all`` fetches every absent page (``partial=False``).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional

from .._util.progress import Progress
from ..errors import RemoteError
from ..storage.callbacks import keep_error
from ..storage.pagestore import PageStore
from .access import AccessPolicy
from .btree_readahead import BtreeMap, BtreeSiblings, hints_for
from .index_prefetch import IndexPrefetch
from .readahead import Lookahead, SingleFlight

log = logging.getLogger("turso_dbapi")

_flights: weakref.WeakKeyDictionary[PageStore, SingleFlight] = weakref.WeakKeyDictionary()
_flights_lock = threading.Lock()


def single_flight(store: PageStore) -> SingleFlight:
    """The ``SingleFlight`` every connection of ``store`` in this process fetches through."""
    with _flights_lock:
        flight = _flights.get(store)
        if flight is None:
            flight = _flights[store] = SingleFlight()
        return flight


# Background read-ahead windows grow to this many times readahead_max: they cost the reader
# no wait, and per-request costs dominate (measured, 106 MB cold full scan, 20 ms/request:
# 33-35 requests / ~1.08 s with x1, 15-16 requests / ~0.79 s with x4). An early-stopping
# scan may have fetched up to about as much again as it read (2 windows ahead, doubling).
LOOKAHEAD_FACTOR = 4
# The look-ahead starts once a scan's synchronous window reaches 64 KiB (its second window
# with 4 KiB pages: 4 + 16 pages read in order): from there the link carries background
# windows while SQLite reads, instead of idling a round trip per synchronous window (issue
# 13, count(*) at 20 ms: 0.55 -> 0.52 s, 4.40 MB either way). Earlier (4 pages) bought
# nothing more and cost requests; in pages rather than bytes, 1 KiB pages started it at 16
# KiB, whose filtered windows were many tiny multi-range parts (+6% framing bytes). Two
# segments when that is less (small segment_size: the rule before this one).
LOOKAHEAD_FROM = 64 * 1024


class MissHandler:
    """Fetches absent pages for one connection: readahead, single-flight, B-tree prefetch.

    ``btree_hints``: the replica's ``BtreeMap`` when its source notes the pages it fetches
    (Turso, ``page_observer``); otherwise the store's map (``hints_for``), noted here.
    A miss: held tripwire pages of the background read-ahead are stored at once (no
    request); otherwise ``AccessPolicy.plan`` plus ``IndexPrefetch.extra`` (plus, with
    ``prefetch``, the next B-tree siblings of a level walked in order: ``BtreeSiblings``)
    is fetched in ONE ``source.fetch`` call through the store's ``SingleFlight``. A forward
    scan then starts or advances the ``Lookahead`` (background windows, kept to the scan's
    B-tree level; sources with ``pinned_pages``, or a ``current_pin`` naming the version a
    held page belongs to). ``close()`` stops it; call it before closing the source.

    (M1) A miss inside the look-ahead's windows advances it BEFORE waiting, so the next
         windows are on the link while this one arrives (it used to wait first: the link
         idled a round trip per window).
    (M2) Planned pages another fetch has in flight are left to it: the reader waits only
         for the flight holding its own pages (it used to wait for every window its plan
         touched: for a 1.5 MB window it did not need yet).
    """

    def __init__(
        self,
        store: PageStore,
        source: Any,
        *,
        segment_size: int = 128 * 1024,
        readahead_max: int = 4 * 1024 * 1024,
        prefetch: bool = False,
        btree_hints: Optional[BtreeMap] = None,
    ):
        self.store = store
        self.source = source
        self.single_flight = single_flight(store)
        # One B-tree map per replica: a Turso source notes every page it fetches into it;
        # for other sources this handler does.
        self.btree_map = btree_hints if btree_hints is not None else hints_for(store)
        self._note_map = btree_hints is None
        self.readahead = AccessPolicy(store.page_size, segment_size, readahead_max, self.btree_map)
        self.index = IndexPrefetch(store.read_page, store.page_size, self.btree_map, store.was_read)
        self.prefetch = prefetch
        self.siblings = (BtreeSiblings(store.page_size, limit=2 * self.readahead.segment_pages,
                                       btree_map=self.btree_map) if prefetch else None)
        self.last_error: Optional[BaseException] = None
        # pages of the scan window that starts the look-ahead: 64 KiB, or two segments when
        # smaller segments are configured (as before LOOKAHEAD_FROM)
        self._lookahead_from = min(max(1, LOOKAHEAD_FROM // store.page_size), 2 * self.readahead.segment_pages)
        # Background read-ahead of scans: only where pages cannot change under us (L6).
        self.lookahead: Optional[Lookahead] = None
        pinned = getattr(source, "pinned_pages", False)
        self._pin = None if pinned else getattr(source, "current_pin", None)  # (L6)
        if pinned or self._pin is not None:
            self.lookahead = Lookahead(
                self._fetch_window, store.is_present, self.single_flight.in_flight,
                lambda: store.remote_pages, LOOKAHEAD_FACTOR * self.readahead.max_pages,
                pin=self._pin,
            )

    def close(self) -> None:
        """Stop background read-ahead (before the source closes)."""
        if self.lookahead is not None:
            self.lookahead.close()

    def _fetch_window(self, pages: List[int], hold: Optional[int]) -> None:
        self.fetch_and_store(pages, requested=(), hold=hold, speculative=True)

    def stats(self) -> Dict[str, int]:
        """Counters of the miss path's policies (index prediction, background windows)."""
        out = dict(self.index.stats())
        if self.lookahead is not None:
            out.update(self.lookahead.stats())
        return out

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
                ahead.advance(wanted[0])  # (M1) the next windows go out before we wait
            total = store.remote_pages
            readahead = self.readahead
            plan = set(readahead.plan(wanted[0], total, store.is_present, store.was_read))
            plan.update(wanted)
            plan.update(p for p in self.index.extra(wanted[0], store.is_present, plan) if p <= total)
            siblings = self.siblings
            if siblings is not None and not readahead.scanning():  # B-tree prefetch, same request
                plan.update(siblings.plan(wanted[0], total, store.is_present, store.was_read, plan))
            last = max(plan)
            busy = self.single_flight.in_flight()  # (M2) wait for our pages only, not all theirs
            if busy:
                plan = {p for p in plan if p not in busy or p in wanted}
            self.fetch_and_store(sorted(p for p in plan if p <= total), requested=wanted)
            if ahead is not None:
                ahead.take(wanted)  # a tripwire stored through a shared flight: no longer held
                if readahead.direction == 1 and readahead.window_pages >= self._lookahead_from:
                    level, m = readahead.level, self.btree_map
                    keep = None if not level else (lambda p: m.parent_of(p) in level)
                    ahead.start(last + 1, readahead.window_pages, keep)
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
            keep_error(exc)
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
            ahead = self.lookahead
            if todo and ahead is not None and not speculative:  # a tripwire held since our take()
                held = ahead.take(todo)
                for p, data in held.items():
                    store.put_synced(p, data)
                if held:
                    todo = [p for p in todo if p not in held]
            if not todo:
                return {}
            t0 = time.perf_counter()
            pin = self._pin() if speculative and self._pin is not None else None
            got = self.source.fetch(todo)
            if pin is not None and self._pin() != pin:  # (L6) a pull moved the pin meanwhile:
                raise RemoteError("the replica was pulled during a background read-ahead; "
                                  "its pages are dropped", url=self.source.display_url)  # (L4)
            for p, data in got.items():
                if self._note_map and (p == 1 or data[:1] in (b"\x02", b"\x05")):
                    self.btree_map.note(p, data)  # children of every interior page fetched
                self.index.note(p, data)
            for p, data in got.items():
                if p == hold and self.lookahead is not None and self.lookahead.keep(p, data, pin):
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

        out = self.single_flight.fetch(pgnos, fetch, speculative)  # a reader never fails for a speculation
        for p in asked:  # pages shared from another flight that held them back (a tripwire)
            if p in out and not store.is_present(p) and store.put_synced(p, out[p]):
                stored += 1
        return stored


def download_all(store: PageStore, handler: MissHandler, batch_bytes: int = 4 * 1024 * 1024) -> int:
    """Fetch every absent page of ``store`` through ``handler`` (``partial=False``); returns
    pages fetched. A long download shows a progress bar on a terminal (never in pipes)."""
    batch = max(1, batch_bytes // store.page_size)
    total = store.remote_pages
    fetched = 0
    p = store.first_absent(1, total)
    absent = sum(1 for q in range(1, total + 1) if not store.is_present(q)) if p else 0
    with Progress(absent * store.page_size, f"download {handler.source.display_url}") as bar:
        while p:
            end = min(total, ((p - 1) // batch + 1) * batch)  # aligned batches (range_align)
            want = [q for q in range(p, end + 1) if not store.is_present(q)]
            fetched += handler.fetch_and_store(want, requested=want)
            missing = [q for q in want if not store.is_present(q)]
            if missing:
                raise RemoteError(
                    f"{handler.source.display_url}: pages {missing[:5]} missing from the reply",
                    url=handler.source.display_url,
                )
            bar.update(len(want) * store.page_size)
            p = store.first_absent(end + 1, total) if end < total else 0
    return fetched
