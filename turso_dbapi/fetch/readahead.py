"""The miss path's concurrency pieces; what to fetch is ``fetch.access.AccessPolicy``.

``SingleFlight`` makes concurrent misses of the same page share one fetch. ``Lookahead``
(rules L1-L7 on the class) fetches the NEXT windows of an established forward scan in a
background thread while SQLite reads the current one.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set

log = logging.getLogger("turso_dbapi")

SPREAD = 16  # (L7) page-number span of a filtered background window, in windows



class _Flight:
    __slots__ = ("pages", "done", "result", "error", "speculative")

    def __init__(self, pages: Sequence[int], speculative: bool = False):
        self.speculative = speculative
        self.pages = frozenset(pages)
        self.done = threading.Event()
        self.result: Mapping[int, bytes] = {}
        self.error: Optional[BaseException] = None


class SingleFlight:
    """Concurrent fetches of overlapping pages share one request.

    ``fetch(pgnos, fetch_fn)``: pages nobody is fetching are fetched by this thread with
    ``fetch_fn(those_pages)`` (one call); pages already in flight are waited for. Returns
    {pgno: bytes} for every requested page the fetches returned. If the fetch this thread
    waited for failed, its exception is raised here too, unless that fetch was
    ``speculative`` (a background read-ahead): then this thread fetches those pages
    itself, so a speculative failure never fails a reader.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: Dict[int, _Flight] = {}
        self.shared_pages = 0  # pages a caller got from another caller's fetch

    def in_flight(self) -> Set[int]:
        with self._lock:
            return set(self._inflight)

    def fetch(self, pgnos: Iterable[int], fetch_fn: Callable[[List[int]], Mapping[int, bytes]],
              speculative: bool = False) -> Dict[int, bytes]:
        want = sorted(set(pgnos))
        with self._lock:
            mine = [p for p in want if p not in self._inflight]
            theirs = {id(f): f for f in (self._inflight[p] for p in want if p in self._inflight)}
            flight = _Flight(mine, speculative) if mine else None
            for p in mine:
                self._inflight[p] = flight  # type: ignore[assignment]
        out: Dict[int, bytes] = {}
        if flight is not None:
            try:
                got = fetch_fn(mine)
                flight.result = got
                out.update((p, got[p]) for p in mine if p in got)
            except BaseException as exc:
                flight.error = exc
                raise
            finally:
                with self._lock:
                    for p in mine:
                        if self._inflight.get(p) is flight:
                            del self._inflight[p]
                flight.done.set()
        shared = 0
        again: List[int] = []
        for f in theirs.values():
            f.done.wait()
            if f.error is not None:
                if not f.speculative or speculative:
                    raise f.error
                again.extend(p for p in want if p in f.pages)  # fetch them ourselves
                continue
            for p in want:
                if p in f.pages and p in f.result:
                    out[p] = f.result[p]
                    shared += 1
        if shared:
            with self._lock:
                self.shared_pages += shared
        if again:
            out.update(self.fetch(again, fetch_fn))
        return out


class Lookahead:
    """Background read-ahead of the next windows of a forward scan.

    (L1) ``start(next_page, window)`` after a synchronous forward-scan plan ending at
         ``next_page - 1``: windows of missing pages from ``next_page`` on are fetched in
         background threads so that ``depth`` windows lie beyond the one the reader is in.
         Each window is twice the previous one (the first twice the synchronous window), up
         to ``max_pages`` (segment multiples, so aligned; the miss handler allows several
         times the synchronous cap): what is fetched ahead stays proportional to what the
         scan has read, as the synchronous window does.
    (L2) Tripwire: the first page of each background window is NOT stored but held in
         memory. SQLite reading it misses; ``take`` hands it over at once (no request),
         and the miss handler calls ``advance(pgno)``, which schedules the next window.
         So the reader never waits while the server keeps up, with no C change.
    (L3) Fetches go through ``fetch(pages, hold)`` (the miss handler's single-flight fetch:
         pages present or in flight are skipped, present pages are never written; it hands
         the tripwire's bytes to ``keep`` while the pages are still in flight, so a reader
         of the tripwire finds it held or shares the flight); pages present or in flight
         when a window is planned are left out of it.
    (L4) Speculative: a failure is counted (``errors``) and logged at debug level, never
         raised; the reader's own miss fetches whatever is still absent.
    (L5) ``close()`` stops scheduling, drops held pages and waits for running fetches;
         call it before the source is closed. Held pages are bounded (``max_held``).
    (L6) A held page is stored later, so it must still be the page of the synced
         version: sources whose pages cannot change under an open connection (a pinned
         version, ``HttpRangeSource``) need nothing; for others (Turso: a pull moves the
         pin) ``pin()`` names the version, each held page keeps the one it was fetched at,
         and ``take`` drops a page whose version is no longer current (the reader fetches it).
    (L7) ``start(..., keep=)``: a filter of each window's pages (the scan's B-tree level,
         so a window never fetches other B-trees' pages lying between its leaves); a
         filtered window still holds up to its size in pages, over a span of at most
         ``SPREAD`` times that many page numbers.
    (L8) A window ends on a page-number boundary of its size (up to twice its size when
         it starts off one): its pages are aligned blocks of the sizes HTTP ranges use
         (``sources.range_align``), the same for every reader of the file (CDN caches).
    """

    def __init__(self, fetch: Callable[[List[int], Optional[int]], None],
                 is_present: Callable[[int], bool], in_flight: Callable[[], Set[int]],
                 n_pages: Callable[[], int], max_pages: int, depth: int = 2, max_held: int = 64,
                 pin: Optional[Callable[[], str]] = None):
        self._fetch = fetch
        self._is_present = is_present
        self._in_flight = in_flight
        self._n_pages = n_pages
        self.max_pages = max(1, max_pages)
        self.depth = max(1, depth)
        self.max_held = max_held
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._closed = False
        self._next = 0  # first page not yet scheduled (0: no scan)
        self._origin = 0  # where this scan's background windows began
        self._window = 0  # size of the last window scheduled
        self._starts: List[int] = []  # first pages of the scheduled windows
        self._held: Dict[int, bytes] = {}
        self._pin = pin  # (L6)
        self._held_pin: Dict[int, str] = {}
        self._keep: Optional[Callable[[int], bool]] = None  # (L7)
        self._trip: Dict[int, int] = {}  # tripwire page -> first page of its window
        self.windows = 0  # background windows scheduled
        self.pages = 0  # pages they asked for
        self.tripped = 0  # tripwires SQLite reached
        self.errors = 0  # background fetches that failed (never raised)

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {"lookahead_windows": self.windows, "lookahead_pages": self.pages,
                    "lookahead_tripped": self.tripped, "lookahead_errors": self.errors,
                    "lookahead_held": len(self._held)}

    def start(self, next_page: int, window: int, keep: Optional[Callable[[int], bool]] = None) -> None:
        """(L1) A synchronous forward plan ended at ``next_page - 1`` with this window."""
        with self._lock:
            if self._closed:
                return
            self._keep = keep  # (L7)
            if not (self._origin <= next_page <= self._next):
                self._origin = self._next = next_page  # a new scan (or one we lost): restart here
                self._window = max(1, window)
                self._starts = []
            self._schedule_locked(next_page - 1)

    def advance(self, pgno: int) -> None:
        """(L2) The reader reached ``pgno`` (a tripwire, or a miss in the windows scheduled):
        keep ``depth`` windows ahead. A page outside the scheduled windows does nothing."""
        with self._lock:
            if self._closed or not self._next:
                return
            if self._origin <= pgno < self._next:
                self._schedule_locked(pgno)

    def take(self, pgnos: Iterable[int]) -> Dict[int, bytes]:
        """(L2) Held tripwire pages among ``pgnos`` (removed from the hold)."""
        out: Dict[int, bytes] = {}
        with self._lock:
            for p in pgnos:
                data = self._held.pop(p, None)
                if data is not None:
                    out[p] = data
                    self._trip.pop(p, None)
            pins = {p: self._held_pin.pop(p, None) for p in out}
            self.tripped += len(out)
        if out and self._pin is not None:  # (L6) a pull since: not this version's page
            now = self._pin()
            out = {p: d for p, d in out.items() if pins[p] == now}
        return out

    def last_scheduled(self) -> int:
        with self._lock:
            return self._next - 1

    def _schedule_locked(self, position: int) -> None:
        n_pages = self._n_pages()
        self._starts = [f for f in self._starts if f > position]  # windows still ahead
        while self._next and self._next <= n_pages and len(self._starts) < self.depth:
            window = min(self.max_pages, self._window * 2)
            first = self._next
            busy = self._in_flight()
            keep = self._keep
            # (L7) with a filter, a window is ``window`` pages of the level (its span may be
            # up to SPREAD times longer: other B-trees' pages lie between them)
            end = min(n_pages, first + window * (2 if keep is None else SPREAD) - 1)
            pages, last, seen = [], first - 1, 0
            for p in range(first, end + 1):
                last = p
                if keep is None or keep(p):
                    seen += 1
                    if p not in busy and p not in self._held and not self._is_present(p):  # (L3)
                        pages.append(p)
                # (L8) on to a page-number boundary of the window's size, never past the cap
                if (seen >= window and p % window == 0) or seen >= self.max_pages:
                    break
            self._window = window
            self._next = last + 1
            self._starts.append(first)
            if not pages:
                continue
            hold = pages[0] if len(self._held) < self.max_held else None
            if hold is not None:
                self._trip[hold] = first
            self.windows += 1
            self.pages += len(pages)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.depth, thread_name_prefix="tdb-lookahead")
            self._pool.submit(self._run, pages, hold)

    def keep(self, hold: int, data: bytes, pin: Optional[str] = None) -> bool:
        """(L3) Hold a tripwire's bytes (fetched at version ``pin``, L6); False when it is
        no longer wanted (store it then)."""
        with self._lock:
            if self._closed or hold not in self._trip:
                return False
            self._held[hold] = data
            if pin is not None:
                self._held_pin[hold] = pin
            return True

    def _run(self, pages: List[int], hold: Optional[int]) -> None:
        if self._closed:
            return
        try:
            self._fetch(pages, hold)
        except BaseException as exc:  # (L4)
            with self._lock:
                self.errors += 1
            log.debug("background read-ahead of pages %d..%d failed: %r", pages[0], pages[-1], exc)
        finally:
            if hold is not None:
                with self._lock:
                    if hold not in self._held:
                        self._trip.pop(hold, None)

    def close(self) -> None:
        """(L5) Stop: no new windows, drop held pages, wait for running fetches."""
        with self._lock:
            self._closed = True
            self._held.clear()
            self._held_pin.clear()
            self._trip.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
