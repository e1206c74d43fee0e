"""B-tree prefetch: ONE map of the B-trees (``BtreeMap``) and the sibling prefetch reading it.

``BtreeMap`` learns the shape of the B-trees from the pages that pass by (child -> parent,
the children of each interior page in cell order, which parents have interior children).

``BtreeSiblings`` (option ``prefetch=True``, every remote kind) adds the next siblings of a
B-tree level walked in order to the miss's own request (rules B1-B3 on the class).

``access.AccessPolicy`` (every replica) reads the map to tell scans, descents and random
misses apart; ``index_prefetch.IndexPrefetch`` to find an index leaf's B-tree.

The map never affects correctness (it only chooses what to fetch) and is relearnt at pulls.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, Set


SIBLING_LIMIT = 1024  # interior siblings added to one request, at most (access.py (A2), (A4))
PAGE1_HEADER = 100  # the database file header precedes page 1's B-tree header
INTERIOR_INDEX = 0x02
INTERIOR_TABLE = 0x05
_MAX_PGNO = 0xFFFFFFFE  # SQLite's largest page number


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


class BtreeMap:
    """What the pages seen so far say about the B-trees of one database (thread-safe).

    ``max_parents`` bounds memory: the children of the last ``max_parents`` interior pages
    noted are kept (None: all; a replica's map, relearnt at each pull)."""

    def __init__(self, page_size: int, max_parents: Optional[int] = None):
        self.page_size = page_size
        self.max_parents = max_parents
        self._lock = threading.Lock()
        self._parent: Dict[int, int] = {}
        self._children: Dict[int, List[int]] = {}
        self._interior_parents: Set[int] = set()
        self._missed_parents: Set[int] = set()

    def _forget_locked(self, pgno: int) -> None:
        for k in self._children.pop(pgno, None) or ():
            if self._parent.get(k) == pgno:
                del self._parent[k]
        self._interior_parents.discard(pgno)

    def note(self, pgno: int, page: bytes) -> None:
        kids = btree_children(page, pgno, self.page_size)
        with self._lock:
            self._forget_locked(pgno)  # what it said before (it may have changed)
            if not kids:
                return
            self._children[pgno] = kids
            for c in kids:
                self._parent[c] = pgno
            parent = self._parent.get(pgno)
            if parent is not None:
                self._interior_parents.add(parent)
            while self.max_parents is not None and len(self._children) > self.max_parents:
                self._forget_locked(next(iter(self._children)))

    def parent_of(self, pgno: int) -> Optional[int]:
        with self._lock:
            return self._parent.get(pgno)

    def children_of(self, pgno: int) -> List[int]:
        """The children of an interior page, in cell order ([] when unknown)."""
        with self._lock:
            return list(self._children.get(pgno, ()))

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

    def interior_siblings_of(self, parent: int) -> List[int]:
        """The interior pages on ``parent``'s level under its own parent ([] when unknown)."""
        with self._lock:
            grand = self._parent.get(parent)
            return list(self._children.get(grand, ())) if grand is not None else []

    def prev_in_level(self, pgno: int) -> Optional[int]:
        """The page before ``pgno`` in key order on its level: the previous child of its
        parent, or the last child of the parent's previous sibling (None when unknown)."""
        with self._lock:
            parent = self._parent.get(pgno)
            if parent is None:
                return None
            kids = self._children.get(parent, [])
            i = kids.index(pgno) if pgno in kids else -1
            if i > 0:
                return kids[i - 1]
            grand = self._parent.get(parent)
            uncles = self._children.get(grand, []) if grand is not None else []
            j = uncles.index(parent) if parent in uncles else -1
            if j > 0:
                cousins = self._children.get(uncles[j - 1])
                if cousins:
                    return cousins[-1]
            return None

    def next_in_level(self, pgno: int, n: int) -> List[int]:
        """Up to ``n`` pages after ``pgno`` in key order on its level, as far as known
        (its parent's later children, then those of the parent's later siblings)."""
        out: List[int] = []
        with self._lock:
            parent = self._parent.get(pgno)
            if parent is None or n <= 0:
                return out
            kids = self._children.get(parent, [])
            i = kids.index(pgno) if pgno in kids else len(kids)
            out.extend(kids[i + 1:i + 1 + n])
            grand = self._parent.get(parent)
            uncles = self._children.get(grand, []) if grand is not None else []
            j = uncles.index(parent) if parent in uncles else len(uncles)
            for uncle in uncles[j + 1:]:
                if len(out) >= n:
                    break
                cousins = self._children.get(uncle)
                if cousins is None:
                    break  # an interior page not seen yet: key order unknown past it
                out.extend(cousins[:n - len(out)])
        return out

    def level_parents(self, pgno: int) -> Set[int]:
        """The interior pages that hold ``pgno``'s level under its grandparent (its
        parent alone when the grandparent is unknown; empty when the parent is)."""
        with self._lock:
            parent = self._parent.get(pgno)
            if parent is None:
                return set()
            grand = self._parent.get(parent)
            return set(self._children.get(grand, ())) if grand is not None else {parent}

    def root_of(self, pgno: int) -> int:
        """The top of ``pgno``'s chain of known parents (a B-tree root when the chain is whole)."""
        with self._lock:
            seen = 0
            while pgno in self._parent and seen < 64:
                pgno = self._parent[pgno]
                seen += 1
            return pgno

    def is_known_child(self, pgno: int) -> bool:
        with self._lock:
            return pgno in self._parent

    def clear(self) -> None:
        with self._lock:
            self._parent.clear()
            self._children.clear()
            self._interior_parents.clear()
            self._missed_parents.clear()


class BtreeSiblings:
    """B-tree prefetch (``prefetch=True``) as part of the miss's own request.

    (B1) ``note(pgno, page)`` records the children of every interior page fetched (no
         fetch of its own: children alone would cost a request, usually for nothing).
    (B2) ``plan(pgno, ...)``: when ``pgno`` is a recorded child whose previous sibling was
         read (SQLite walks this B-tree level in order: an index range or a table scan), the
         next missing siblings in cell order, at most ``limit`` pages, join the miss's plan:
         one request (one bitmap for Turso, one multi-range GET for HTTP). A point lookup
         never reads the previous sibling first, so it fetches exactly what it would
         without prefetch.
    (B3) Bounded memory: the children of the last ``max_parents`` interior pages, unless
         it reads a replica's map (``btree_map``, kept up to date by whoever owns it).
    """

    def __init__(self, page_size: int, limit: int = 32, max_parents: int = 256,
                 btree_map: Optional[BtreeMap] = None):
        self.page_size = page_size
        self.limit = max(1, limit)
        self.map = btree_map if btree_map is not None else BtreeMap(page_size, max_parents)
        self._lock = threading.Lock()
        self.added = 0  # pages added to plans

    def note(self, pgno: int, page: bytes) -> None:
        self.map.note(pgno, page)  # (B1)

    def plan(self, pgno: int, n_pages: int, is_present: Callable[[int], bool],
             was_read: Optional[Callable[[int], bool]], planned: Set[int]) -> List[int]:
        parent = self.map.parent_of(pgno)
        kids = self.map.children_of(parent) if parent is not None else []
        if not kids:
            return []
        try:
            i = kids.index(pgno)
        except ValueError:
            return []
        prev = kids[i - 1] if i > 0 else None
        if prev is None or not is_present(prev) or (was_read is not None and not was_read(prev)):
            return []  # (B2) not walking this level in order
        out: List[int] = []
        for k in kids[i + 1:]:
            if len(out) >= self.limit:
                break
            if k <= n_pages and k not in planned and not is_present(k):
                out.append(k)
        with self._lock:
            self.added += len(out)
        return out


_hints: Dict[str, BtreeMap] = {}
_hints_lock = threading.Lock()
HINT_PAGES = 32  # pages read at open to seed the B-tree hints (roots sit near the start)


def hints_for(store: Any, *, reset: bool = False) -> BtreeMap:
    """The B-tree hints of the replica of ``store`` in this process (shared by its
    connections), seeded from its first pages; ``reset`` after a pull changed the B-trees."""
    with _hints_lock:
        hints = _hints.get(store.path)
        if hints is not None and not reset:
            return hints
        if hints is None:
            hints = _hints[store.path] = BtreeMap(store.page_size)
        hints.clear()
    for p in range(1, min(HINT_PAGES, store.remote_pages) + 1):
        page = store.read_page(p)
        if page is not None:
            hints.note(p, page)
    return hints
