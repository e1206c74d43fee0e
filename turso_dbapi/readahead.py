"""Readahead policy for page misses: what to fetch besides the page SQLite asked for.

Pure policy, no I/O: the VFS miss handler asks ``Readahead.plan`` which pages to fetch,
``btree_children`` which pages an interior B-tree page points to, and ``SingleFlight``
makes concurrent misses of the same page share one fetch.

Rules (numbered; the code tags them):

(1) A plan always contains the missed page; every other page in it is missing (per
    ``is_present``) and lies in [1, n_pages]. Plans are sorted.
(2) Plans cover whole segments (``segment_size`` bytes, aligned to multiples of it in
    the file), so neighbouring misses land in already fetched segments.
(3) Window: a miss just past the previous plan (forward) or just before it (reverse)
    continues a scan and doubles the window, up to ``max_bytes``; a reverse scan reads the
    window backwards from the missed page. Any other miss is random: one segment.
(4) Waste: when more than half of the pages fetched speculatively by the previous plan
    were never read (``was_read``), the window halves instead of growing.
(5) One scan state per ``Readahead``: give each file handle (connection) its own.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set

PAGE1_HEADER = 100  # the database file header precedes page 1's B-tree header
INTERIOR_INDEX = 0x02
INTERIOR_TABLE = 0x05
_MAX_PGNO = 0xFFFFFFFE  # SQLite's largest page number


class Readahead:
    """Adaptive, segment-aligned readahead (module rules (1)-(5)). Thread-safe."""

    def __init__(self, page_size: int, segment_size: int = 128 * 1024, max_bytes: int = 4 * 1024 * 1024):
        if page_size <= 0:
            raise ValueError(f"page_size must be positive, got {page_size}")
        self.page_size = page_size
        self.segment_pages = max(1, segment_size // page_size)
        cap = max(1, max_bytes // page_size) // self.segment_pages * self.segment_pages
        self.max_pages = max(self.segment_pages, cap)
        self._lock = threading.Lock()
        self._window = self.segment_pages
        self._span: Optional[tuple] = None  # (first, last) of the previous plan's range
        self._speculative: List[int] = []  # pages the previous plan fetched besides the miss

    @property
    def window_pages(self) -> int:
        """Current window in pages (for stats and tests)."""
        with self._lock:
            return self._window

    def plan(self, pgno: int, n_pages: int, is_present: Callable[[int], bool],
             was_read: Optional[Callable[[int], bool]] = None) -> List[int]:
        """Sorted page numbers to fetch for a miss of ``pgno`` (rules (1)-(4))."""
        if pgno < 1:
            raise ValueError(f"page numbers start at 1, got {pgno}")
        if pgno > n_pages:
            return [pgno]  # (1) past the end: nothing to read around it
        seg = self.segment_pages
        with self._lock:
            wasted = False
            if was_read is not None and self._speculative:  # (4)
                unused = sum(1 for p in self._speculative if not was_read(p))
                wasted = unused * 2 > len(self._speculative)
            direction = 0
            if self._span is not None:
                first, last = self._span
                if last < pgno <= last + seg:
                    direction = 1
                elif first - seg <= pgno < first:
                    direction = -1
                elif first <= pgno <= last:
                    direction = 2  # a miss inside the previous plan (fetched elsewhere, or failed)
            if direction in (1, -1):  # (3)
                self._window = max(seg, self._window // 2) if wasted else min(self.max_pages, self._window * 2)
            elif direction == 0:
                self._window = seg
            elif wasted:
                self._window = max(seg, self._window // 2)
            window = self._window
            seg_index = (pgno - 1) // seg  # (2)
            if direction == -1:
                last = (seg_index + 1) * seg
                first = last - window + 1
            else:
                first = seg_index * seg + 1
                last = first + window - 1
            first, last = max(1, first), min(n_pages, last)
            pages = [p for p in range(first, last + 1) if p == pgno or not is_present(p)]  # (1)
            self._span = (first, last)
            self._speculative = [p for p in pages if p != pgno]
            return pages


def btree_children(page: bytes, pgno: int, page_size: int) -> List[int]:
    """Child page numbers of an interior table (0x05) or index (0x02) B-tree page.

    Child pointers are stored as 1-based page numbers, the same numbering the pager uses,
    so they are returned as stored (no -1/+1). Page 1 has the 100-byte file header before
    its B-tree header. Cell order, then the right-most pointer. Malformed pages -> [].
    """
    try:
        limit = min(len(page), page_size)
        hdr = PAGE1_HEADER if pgno == 1 else 0
        if limit < hdr + 12 or page[hdr] not in (INTERIOR_INDEX, INTERIOR_TABLE):
            return []
        n_cells = int.from_bytes(page[hdr + 3:hdr + 5], "big")
        ptr_array = hdr + 12
        if ptr_array + 2 * n_cells > limit:
            return []
        children: List[int] = []
        seen: Set[int] = set()
        for i in range(n_cells):
            off = int.from_bytes(page[ptr_array + 2 * i:ptr_array + 2 * i + 2], "big")
            if off < ptr_array + 2 * n_cells or off + 4 > limit:
                return []
            child = int.from_bytes(page[off:off + 4], "big")
            if not 1 <= child <= _MAX_PGNO:
                return []
            if child not in seen:
                seen.add(child)
                children.append(child)
        right = int.from_bytes(page[hdr + 8:hdr + 12], "big")
        if not 1 <= right <= _MAX_PGNO:
            return []
        if right not in seen:
            children.append(right)
        return children
    except (TypeError, IndexError):
        return []


def missing_children(page: bytes, pgno: int, page_size: int, n_pages: int,
                     is_present: Callable[[int], bool], limit: int = 256) -> List[int]:
    """The children of an interior page that are in the file and missing, sorted, at most ``limit``."""
    kids = [c for c in btree_children(page, pgno, page_size) if c <= n_pages and c != pgno and not is_present(c)]
    return sorted(kids[:limit])


class _Flight:
    __slots__ = ("pages", "done", "result", "error")

    def __init__(self, pages: Sequence[int]):
        self.pages = frozenset(pages)
        self.done = threading.Event()
        self.result: Mapping[int, bytes] = {}
        self.error: Optional[BaseException] = None


class SingleFlight:
    """Concurrent fetches of overlapping pages share one request.

    ``fetch(pgnos, fetch_fn)``: pages nobody is fetching are fetched by this thread with
    ``fetch_fn(those_pages)`` (one call); pages already in flight are waited for. Returns
    {pgno: bytes} for every requested page the fetches returned. If the fetch this thread
    waited for failed, its exception is raised here too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: Dict[int, _Flight] = {}
        self.shared_pages = 0  # pages a caller got from another caller's fetch

    def in_flight(self) -> Set[int]:
        with self._lock:
            return set(self._inflight)

    def fetch(self, pgnos: Iterable[int], fetch_fn: Callable[[List[int]], Mapping[int, bytes]]) -> Dict[int, bytes]:
        want = sorted(set(pgnos))
        with self._lock:
            mine = [p for p in want if p not in self._inflight]
            theirs = {id(f): f for f in (self._inflight[p] for p in want if p in self._inflight)}
            flight = _Flight(mine) if mine else None
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
        for f in theirs.values():
            f.done.wait()
            if f.error is not None:
                raise f.error
            for p in want:
                if p in f.pages and p in f.result:
                    out[p] = f.result[p]
                    shared += 1
        if shared:
            with self._lock:
                self.shared_pages += shared
        return out
