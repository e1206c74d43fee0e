"""What a miss is, from what the miss path knows about B-tree pages: scan, descent or random.

The same policy for every source (HTTP ranges and Turso ``/pull-updates``), one per
connection, over the replica's shared ``BtreeMap`` (every fetched interior page is noted
into it). Page numbers alone cannot tell these apart: walking down a B-tree reads pages in
increasing order, which looks like a scan continuing (issue 13: the window doubled on a
descent and an index lookup fetched 2,112 pages to use 45).

Rules (the code tags them):

(A1) A random miss or a descent (a page whose previous page in key order on its B-tree
     level was not read: a root, an interior page, the leaf of a lookup) costs its page:
     the plan is that page alone (one page: aligned, the same bytes for every user).
(A2) A scan is a run of pages of ONE B-tree level in key order: a miss whose previous page
     in key order (``BtreeMap.prev_in_level``) was read. Its plan is the page and the next
     pages of that level in key order, as far as the map knows them (never pages of other
     B-trees), a window of ``FIRST_SCAN`` pages growing ``GROWTH`` times on each miss that
     continues the scan, up to the readahead cap (a scan that stops early fetched at most
     about GROWTH times what it read; one that runs on pays few round trips). The first scan plan also brings the missing interior
     pages of the level above (the parent's siblings: ~1/300 of the level), so the rest of
     the level is known and the background read-ahead can follow it.
(A3) Pages the map does not know (overflow chains, pages below interior pages learnt in an
     earlier session): a miss at most a segment past the previous such plan (page-number
     order; known B-tree pages read in between do not break it; page 1, read at every
     open, starts none) is a run and gets the same growing window of page numbers
     (every missing page: overflow pages lie between the leaves that own them); anything
     else is (A1).
(A4) The second miss below a parent whose children are interior pages also brings every
     missing child of that parent (``BtreeMap.interior_siblings``: the upper levels are
     small, and each later random lookup then costs one request, its leaf).
(A5) ``direction``/``window_pages``/``level`` describe the last plan for the background
     read-ahead (``Lookahead``): it starts on a forward scan window of at least 64 KiB
     (``miss.LOOKAHEAD_FROM``: the scan's second window with 4 KiB pages) and keeps to
     ``level`` (the scan's B-tree level) when that is known.
(A6) A window ends on a boundary of its own size in page numbers (it runs on to the end
     of the aligned block of ``window`` pages holding its last page): the miss that continues the scan
     then starts the next block, and its window is one aligned block of the sizes HTTP
     ranges use (``sources.range_align``: 4, 16, 64, ... pages of 4 KiB), the same for
     every reader of the file (CDN/S3 caches). A level not laid out in page order (its next
     pages spread over more than twice the window) is followed in key order, uncut.
"""

from __future__ import annotations

import threading
from typing import Callable, List, Optional, Set

from .btree_readahead import SIBLING_LIMIT, BtreeMap

FIRST_SCAN = 4  # (A2) pages of the first scan window
GROWTH = 4  # (A2) each miss that continues a scan multiplies its window by this


def _block_end(pgno: int, window: int) -> int:
    """The last page of the aligned block of ``window`` pages that holds ``pgno``."""
    return ((pgno - 1) // window + 1) * window


class AccessPolicy:
    """Rules (A1)-(A5); the interface the miss handler uses (``plan``, ``scanning``, ...)."""

    def __init__(self, page_size: int, segment_size: int, max_bytes: int, btree_map: BtreeMap):
        if page_size <= 0:
            raise ValueError(f"page_size must be positive, got {page_size}")
        self.page_size = page_size
        self.segment_pages = max(1, segment_size // page_size)
        cap = max(1, max_bytes // page_size) // self.segment_pages * self.segment_pages
        self.max_pages = max(self.segment_pages, cap)
        self.map = btree_map
        self._lock = threading.Lock()
        self._window = 0  # current scan window, pages (0: no scan)
        self._run_end = 0  # (A3) last page of the previous page-number plan
        self.direction = 0  # 1: the last plan continued a forward scan
        self.level: Optional[Set[int]] = None  # (A5) parents of the scanned level
        self.kind = ""  # "scan" | "run" | "page" (for stats and tests)

    @property
    def window_pages(self) -> int:
        with self._lock:
            return self._window

    def scanning(self) -> bool:
        """A scan window of more than one page is running (sibling prefetch then waits)."""
        with self._lock:
            return self._window > 1

    def note_ahead(self, last: int) -> None:
        """The background read-ahead scheduled up to ``last`` (a run continues past it)."""
        with self._lock:
            if self.kind == "run" and last > self._run_end:
                self._run_end = last

    def _grow(self) -> int:
        self._window = min(self.max_pages, FIRST_SCAN if not self._window else self._window * GROWTH)
        return self._window

    def _end(self, pgno: int, window: int) -> int:
        """(A6) The last page of a window from ``pgno``: the end of the aligned block of
        ``window`` pages holding its last page, or of pgno's own block past the cap."""
        end = _block_end(pgno + window - 1, window)
        return end if end - pgno < self.max_pages else _block_end(pgno, window)

    def plan(self, pgno: int, n_pages: int, is_present: Callable[[int], bool],
             was_read: Optional[Callable[[int], bool]] = None) -> List[int]:
        """Sorted pages to fetch for a miss of ``pgno`` (always containing it)."""
        if pgno < 1:
            raise ValueError(f"page numbers start at 1, got {pgno}")
        m = self.map
        read = was_read if was_read is not None else is_present
        with self._lock:
            pages = [pgno]
            self.direction, self.level = 0, None
            if m.is_known_child(pgno):
                prev = m.prev_in_level(pgno)
                if prev is not None and is_present(prev) and read(prev):  # (A2)
                    first = not self._window
                    window = self._grow()
                    ahead = m.next_in_level(pgno, 2 * window - 1)
                    end = self._end(pgno, window)
                    if ahead[:window - 1] and max(ahead[:window - 1]) - pgno < 2 * window:  # (A6)
                        ahead = [p for p in ahead if p <= end]  # laid out in page order
                    else:
                        ahead = ahead[:window - 1]
                    pages += [p for p in ahead if p <= n_pages and not is_present(p)]
                    parent = m.parent_of(pgno)
                    if first and parent is not None:  # the level above, so the rest is known
                        pages += [p for p in m.interior_siblings_of(parent)
                                  if p <= n_pages and not is_present(p)][:SIBLING_LIMIT]
                    self.direction, self.kind = 1, "scan"
                    self.level = m.level_parents(pgno)
                else:  # (A1)
                    self._window, self.kind = 0, "page"
            elif self._run_end and self._run_end < pgno <= self._run_end + self.segment_pages:  # (A3)
                window = self._grow()
                last = min(n_pages, self._end(pgno, window))  # (A6)
                pages += [p for p in range(pgno + 1, last + 1) if not is_present(p)]
                self.direction, self.kind = 1, "run"
                self._run_end = max(pages)
            else:  # (A1)
                self._window, self.kind = 0, "page"
                self._run_end = pgno if pgno > 1 else 0  # page 1 (read at every open) starts no run
            return self._with_siblings(pages, pgno, n_pages, is_present)

    def _with_siblings(self, pages: List[int], pgno: int, n_pages: int,
                       is_present: Callable[[int], bool]) -> List[int]:
        siblings = [p for p in self.map.interior_siblings(pgno) if p <= n_pages and not is_present(p)]
        if siblings:  # (A4)
            pages = pages + siblings[:SIBLING_LIMIT]
        return sorted(set(pages))
