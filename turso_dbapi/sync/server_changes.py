"""Which replayed rows did the server change in this pull? (the rebase's conflict hook)

A row is "changed by the server" when its leaf page in the new revision came with the pull
(page granularity: a neighbour's change on the same leaf counts too). The leaf is found by
walking the table's B-tree as stored, with no network (an absent page ends the walk: the
row counts as changed). For WITHOUT ROWID tables, whose keys are records, every
difference counts.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Dict, Optional, Set, Tuple

from . import capture


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    v = 0
    for n in range(9):
        b = buf[i + n]
        if n == 8:
            return (v << 8) | b, i + 9
        v = (v << 7) | (b & 0x7F)
        if b < 0x80:
            return v, i + n + 1
    raise AssertionError("unreachable")


def leaf_page(read_page: Callable[[int], Optional[bytes]], root: int, rowid: int) -> Optional[int]:
    """The leaf page of a rowid table's B-tree where ``rowid`` lives (or would), walking
    the pages as stored (no network: an absent page ends the walk with None)."""
    pgno = root
    for _ in range(64):  # deeper than any real B-tree: a loop means damage
        page = read_page(pgno)
        if page is None:
            return None
        h = 100 if pgno == 1 else 0
        kind = page[h]
        if kind == 0x0D:
            return pgno
        if kind != 0x05:
            return None
        n = int.from_bytes(page[h + 3:h + 5], "big")
        child = int.from_bytes(page[h + 8:h + 12], "big")  # right-most pointer
        lo, hi = 0, n  # first cell whose key >= rowid (cells are sorted)
        while lo < hi:
            mid = (lo + hi) // 2
            off = int.from_bytes(page[h + 12 + 2 * mid:h + 14 + 2 * mid], "big")
            key, _ = _varint(page, off + 4)
            if key >= rowid:
                hi = mid
            else:
                lo = mid + 1
        if lo < n:
            off = int.from_bytes(page[h + 12 + 2 * lo:h + 14 + 2 * lo], "big")
            child = int.from_bytes(page[off:off + 4], "big")
        pgno = child
    return None


class ServerChanges:
    """Did this pull change a row? The pages the pull brought, and the row's leaf page in
    the new revision: a row is "changed by the server" when its leaf page came with the
    pull (page granularity: a neighbour's change on the same leaf counts too). For
    WITHOUT ROWID tables, whose keys are records, every difference counts."""

    def __init__(self, rc: sqlite3.Connection, read_page: Callable[[int], Optional[bytes]], pages: Set[int]):
        self.rc, self.read_page, self.pages = rc, read_page, pages
        self._roots: Dict[str, Optional[int]] = {}

    def _root(self, table: str) -> Optional[int]:
        if table not in self._roots:
            row = self.rc.execute("SELECT rootpage FROM sqlite_schema WHERE type = 'table' AND name = ?",
                                  (table,)).fetchone()
            self._roots[table] = row[0] if row else None
        return self._roots[table]

    def changed(self, info: capture.TableInfo, key: Tuple[Any, ...], sql_without_rowid: bool) -> bool:
        root = self._root(info.name)
        if root is None:
            return True  # the table is new or gone on the server
        if info.kind == "pk":
            if sql_without_rowid:
                return True
            try:
                row = self.rc.execute(
                    f"SELECT rowid FROM {capture.qi(info.name)} WHERE "
                    + " AND ".join(f"{capture.qi(c)} IS ?" for c in info.pk), key).fetchone()
            except sqlite3.Error:
                return True
            if row is None:
                return True  # absent on the server: cannot place it without its rowid
            rowid = row[0]
        else:
            rowid = key[0]
        leaf = leaf_page(self.read_page, root, rowid)
        return leaf is None or leaf in self.pages
