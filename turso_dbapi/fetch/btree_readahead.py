"""B-tree-aware readahead for Turso replicas (scattered page sets in one request).

``/pull-updates`` takes an explicit page-id bitmap, so one request can carry pages that are
far apart in the file — HTTP ranges cannot. ``BtreeHints`` learns the B-tree shape from the
pages that pass by (bootstrap and fetched pages: child -> parent, which parents have
interior children), and ``BtreeReadahead`` wraps the segment/window policy of
``readahead.Readahead`` with two rules:

(1) Siblings of interior pages: the SECOND miss below a parent whose children are known to
    be INTERIOR pages (B-trees are balanced: one interior child means all are) also fetches
    every missing child of that parent (the first descent stays small: a single cold point
    lookup does not pay for siblings it will never read). Upper levels are small (a 100 MiB table has ~80
    level-1 pages) and each later random lookup then needs one request (its leaf) instead
    of two, and a table scan stops jumping to the next interior page (which reset its window).
(2) Known B-tree pages only: when the missed page is a known child, the speculative pages
    of the segment/window are restricted to known children. A cold point lookup then does
    not drag 31 unrelated leaves along with the interior page it misses, and a scan's
    window does not run past the end of its table into an index's pages.

(3) A descent is not a scan: a miss on a child of the page the previous miss fetched (an
    interior page and, next to it in the file, its leaves) stays within its own segment,
    although the segment policy reads "just past the previous plan" as a growing scan.

Hints never affect correctness (they only choose what to fetch) and are dropped at pulls.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, Set

from .readahead import Readahead, btree_children

SIBLING_LIMIT = 1024  # pages added by rule (1) in one request, at most


class BtreeHints:
    """What the pages seen so far say about the B-trees of one replica (thread-safe)."""

    def __init__(self, page_size: int):
        self.page_size = page_size
        self._lock = threading.Lock()
        self._parent: Dict[int, int] = {}
        self._children: Dict[int, List[int]] = {}
        self._interior_parents: Set[int] = set()
        self._missed_parents: Set[int] = set()

    def note(self, pgno: int, page: bytes) -> None:
        kids = btree_children(page, pgno, self.page_size)
        with self._lock:
            if kids:
                self._children[pgno] = kids
                for c in kids:
                    self._parent[c] = pgno
                parent = self._parent.get(pgno)
                if parent is not None:
                    self._interior_parents.add(parent)
            else:
                self._children.pop(pgno, None)

    def parent_of(self, pgno: int) -> Optional[int]:
        with self._lock:
            return self._parent.get(pgno)

    def interior_siblings(self, pgno: int) -> List[int]:
        """The other children of pgno's parent when they are interior pages and an earlier
        miss already went below that parent (a second random descent), else []. Records
        this miss as that evidence for the next one."""
        with self._lock:
            parent = self._parent.get(pgno)
            if parent is None:
                return []
            repeated = parent in self._missed_parents
            self._missed_parents.add(parent)
            if not repeated or parent not in self._interior_parents:
                return []
            return list(self._children.get(parent, ()))

    def is_known_child(self, pgno: int) -> bool:
        with self._lock:
            return pgno in self._parent

    def clear(self) -> None:
        with self._lock:
            self._parent.clear()
            self._children.clear()
            self._interior_parents.clear()
            self._missed_parents.clear()


class BtreeReadahead:
    """``Readahead.plan`` plus the module's rules (1) and (2); same interface."""

    def __init__(self, inner: Readahead, hints: BtreeHints):
        self.inner = inner
        self.hints = hints
        self._last_miss = 0

    def __getattr__(self, name: str):  # window_pages, segment_pages, ... of the inner policy
        return getattr(self.inner, name)

    def plan(self, pgno: int, n_pages: int, is_present: Callable[[int], bool],
             was_read: Optional[Callable[[int], bool]] = None) -> List[int]:
        pages = self.inner.plan(pgno, n_pages, is_present, was_read)
        hints = self.hints
        parent = hints.parent_of(pgno)
        if parent is not None and parent == self._last_miss:  # (3)
            seg = self.inner.segment_pages
            lo = (pgno - 1) // seg * seg
            pages = [p for p in pages if lo < p <= lo + seg]
        self._last_miss = pgno
        if hints.is_known_child(pgno):
            pages = [p for p in pages if p == pgno or hints.is_known_child(p)]  # (2)
        siblings = [p for p in hints.interior_siblings(pgno) if p <= n_pages and not is_present(p)]
        if siblings:  # (1)
            pages = sorted(set(pages).union(siblings[:SIBLING_LIMIT]))
        return pages


_hints: Dict[str, BtreeHints] = {}
_hints_lock = threading.Lock()
HINT_PAGES = 32  # pages read at open to seed the B-tree hints (roots sit near the start)


def hints_for(store: Any, *, reset: bool = False) -> BtreeHints:
    """The B-tree hints of the replica of ``store`` in this process (shared by its
    connections), seeded from its first pages; ``reset`` after a pull changed the B-trees."""
    with _hints_lock:
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
