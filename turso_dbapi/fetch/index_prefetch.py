"""Index-aware prefetch: the rowids in an index leaf tell which table leaves come next.

A query that reads rows through an index (``WHERE user_id = ?``, a join on an indexed
column) reads an index leaf, then for each matching cell descends the table by rowid: one
table leaf per row, and without this one round trip per row. When the table's interior
pages are local, the table leaf of every cell of that index leaf can be computed here
(``btree_pages.TableLocator``), so those pages can be fetched together.

Rules (the miss handler calls ``extra(pgno)`` on each miss, ``note`` on each fetched page):

(I1) The last ``RECENT`` index leaves fetched are remembered (their B-tree root through
     the shared ``BtreeMap``, their table through ``sqlite_schema``, both local).
(I2) A miss on a page that is the table leaf of cell ``i`` of a remembered leaf is a row
     read through that index (the first page that read misses: its leaf, or an absent
     interior page on the way). The pages of the cells after ``i`` with the same key (the
     rest of this key's rows: SQLite reads them all) join the miss's request. A page
     that rows of several keys need (an interior page) says nothing yet: no prefetch.
(I3) Evidence of a range over keys — a second such miss on a later cell with another key
     of the same leaf (an ascending range or a join walking the index) — adds the next
     cells too, a window that doubles from ``FIRST_WINDOW`` cells per such miss.
(I4) Bounded: never more pages than the leaf has cells, at most ``max_bytes`` per miss;
     pages present or already planned are skipped.
(I5) ``stats()``: pages prefetched this way and how many of them SQLite then read
     (``index_prefetched`` / ``index_prefetch_used``; the difference is the misses of the
     prediction). A point lookup through a unique index prefetches nothing.

Only choices of what to fetch: a stale or wrong guess costs bytes, never a wrong result.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Set

from .btree_pages import INTERIOR_TABLE, LEAF_INDEX, IndexCell, TableLocator, index_leaf_cells, schema_roots
from .btree_readahead import BtreeMap

RECENT = 8  # (I1) index leaves remembered
FIRST_WINDOW = 8  # (I3) cells added past the key's own rows at the first evidence of a range
DEFAULT_MAX_BYTES = 1024 * 1024  # (I4)
_ISSUED_MAX = 1 << 16  # prefetched pages remembered for (I5)


class _Leaf:
    __slots__ = ("pgno", "page", "_cells", "targets", "gen", "pos", "key", "window")

    def __init__(self, pgno: int, page: bytes):
        self.pgno = pgno
        self.page = page
        self._cells: Optional[List[IndexCell]] = None  # parsed when first needed
        self.targets: Optional[List[Optional[int]]] = None
        self.gen = -1  # interior pages seen when targets were computed
        self.pos = -1  # cell of the last row read through this leaf
        self.key: Optional[bytes] = None
        self.window = 0

    def cells(self, page_size: int) -> List[IndexCell]:
        if self._cells is None:
            self._cells = index_leaf_cells(self.page, page_size)
        return self._cells


class IndexPrefetch:
    """Rules (I1)-(I5) for one connection, over the store's pages and a ``BtreeMap``."""

    def __init__(self, read_page: Callable[[int], Optional[bytes]], page_size: int, btree_map: BtreeMap,
                 was_read: Callable[[int], bool], max_bytes: int = DEFAULT_MAX_BYTES):
        self.read_page = read_page
        self.page_size = page_size
        self.map = btree_map
        self.was_read = was_read
        self.max_pages = max(1, max_bytes // page_size)
        self.locator = TableLocator(read_page)
        self._lock = threading.Lock()
        self._leaves: OrderedDict[int, _Leaf] = OrderedDict()
        self._schema: Dict[int, int] = {}
        self._stamp: Optional[bytes] = None
        self._issued: List[int] = []
        self.prefetched = 0
        self._gen = 0  # table interior pages fetched: incomplete targets may complete

    def note(self, pgno: int, page: bytes) -> None:
        """(I1) A fetched page: remember it when it is an index leaf."""
        if pgno == 1 or page[:1] != bytes([LEAF_INDEX]):
            if page[:1] == bytes([INTERIOR_TABLE]) or pgno == 1:
                with self._lock:
                    self._gen += 1
            return
        with self._lock:
            self._leaves.pop(pgno, None)
            self._leaves[pgno] = _Leaf(pgno, page)
            while len(self._leaves) > RECENT:
                self._leaves.popitem(last=False)

    def _refresh(self) -> None:
        """The schema and parsed interior pages, again when the file changed (header bytes
        24..27: the change counter; 40..43: the schema cookie)."""
        page1 = self.read_page(1)
        stamp = page1[24:28] + page1[40:44] if page1 is not None else None
        if stamp != self._stamp or not self._schema:
            self._stamp = stamp
            self.locator.clear()
            self._schema = schema_roots(self.read_page, self.page_size) if page1 is not None else {}
            for leaf in self._leaves.values():
                leaf.targets = None
            self._gen += 1

    def _targets(self, leaf: _Leaf) -> List[Optional[int]]:
        if leaf.targets is not None and leaf.gen == self._gen:
            return leaf.targets  # no table interior page arrived since
        table = self._schema.get(self.map.root_of(leaf.pgno))
        targets: List[Optional[int]] = []
        if table is not None:  # else not an index of a rowid table known here
            targets = [self.locator.leaf_of(table, rowid) if rowid is not None else None
                       for _key, rowid in leaf.cells(self.page_size)]
        leaf.targets, leaf.gen = targets, self._gen
        return targets

    def extra(self, pgno: int, is_present: Callable[[int], bool], planned: Set[int]) -> List[int]:
        """(I2)-(I4) Pages to fetch with the miss of ``pgno`` (possibly none)."""
        with self._lock:
            if not self._leaves:
                return []
            self._refresh()
            if self.map.root_of(pgno) in self._schema:
                return []  # a page of an index itself (an index scan): not a row read
            for leaf in reversed(self._leaves.values()):
                targets = self._targets(leaf)
                if pgno not in targets:
                    continue
                start = leaf.pos + 1 if pgno in targets[leaf.pos + 1:] else 0
                cells = [j for j in range(start, len(targets)) if targets[j] == pgno]
                index_cells = leaf.cells(self.page_size)
                if len({index_cells[j][0] for j in cells}) > 1:
                    return []  # (I2) rows of several keys need this page (an interior page): wait
                i = cells[0]
                key = index_cells[i][0]
                if leaf.pos >= 0 and i > leaf.pos and key != leaf.key:  # (I3) a range over keys
                    leaf.window = FIRST_WINDOW if not leaf.window else leaf.window * 2
                leaf.pos, leaf.key = i, key
                out: List[int] = []
                seen = set(planned)
                seen.add(pgno)
                beyond = 0
                for j in range(i + 1, len(targets)):  # (I4) at most the leaf's cells
                    if index_cells[j][0] != key or key is None:
                        if beyond >= leaf.window:
                            break
                        beyond += 1
                    t = targets[j]
                    if t is None or t in seen or is_present(t):
                        continue
                    seen.add(t)
                    out.append(t)
                    if len(out) >= self.max_pages:
                        break
                self.prefetched += len(out)
                if len(self._issued) + len(out) <= _ISSUED_MAX:
                    self._issued.extend(out)
                return out
            return []

    def stats(self) -> Dict[str, int]:
        """(I5) Pages prefetched from index leaves, and how many SQLite then read."""
        with self._lock:
            issued = list(self._issued)
            total = self.prefetched
        return {"index_prefetched": total, "index_prefetch_used": sum(1 for p in issued if self.was_read(p))}
