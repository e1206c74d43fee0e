"""Cheap sanity checks of SQLite pages received from a remote, before they are cached.

A page is cached with a checksum of its own bytes, so a body of garbage with the right
length would otherwise be served (and checksum-verified) forever. These checks refuse what
cannot be a page of a valid database, in O(cells) per page and without other pages:

(1) Page 1: the magic string, the page size the source pinned, the fixed payload
    fractions 64/32/32, a usable size of at least 480 bytes (file format §1.3), and the
    B-tree header at offset 100.
(2) A page starting with a B-tree type byte (2, 5, 10, 13) must have a sane B-tree header:
    fragmented bytes <= 60, the cell pointer array before the cell content area, every cell
    pointer inside the content area, the first freeblock inside the page, an interior
    page's right child within the file.
(3) Any other page inside the database's size must be all zeros, or start with a page number within the file (an
    overflow page or a freelist trunk page: their first 4 bytes are the next page, or 0),
    or sit where a pointer-map page or the lock-byte page belongs.
(4) A freelist LEAF page may hold anything (the bytes of whatever it was before), so a
    page failing (2)/(3) is only garbage if it is not a freelist leaf: callers with a
    freelist (header offset 36) ask ``freelist_leaves`` before refusing it.

The checks never reject a page of a valid database (see tests/test_page_check.py); random
bytes pass them with a probability below 1e-6 (a B-tree type byte and every other field
in range, or a first word below the page count).
"""

from __future__ import annotations

import struct
from typing import Callable, Optional, Set

SQLITE_MAGIC = b"SQLite format 3\x00"
BTREE_TYPES = (2, 5, 10, 13)  # interior index, interior table, leaf index, leaf table
LOCK_BYTE_OFFSET = 1 << 30


class PageGeometry:
    """What the checks need of the pinned page 1: sizes, page count, auto-vacuum."""

    def __init__(self, page1: bytes, page_size: int, n_pages: int):
        self.page_size = page_size
        self.n_pages = n_pages
        self.header = bytes(page1[:100])
        self.usable = page_size - (page1[20] if len(page1) > 20 else 0)
        self.auto_vacuum = len(page1) >= 56 and struct.unpack_from(">I", page1, 52)[0] != 0
        self.freelist_trunk = struct.unpack_from(">I", page1, 32)[0] if len(page1) >= 40 else 0
        self.freelist_count = struct.unpack_from(">I", page1, 36)[0] if len(page1) >= 40 else 0
        # The in-header size, when valid (its "version-valid-for" equals the change counter):
        # bytes past it are not part of the database (a file with trailing bytes).
        self.db_pages = in_header_size(page1) or n_pages

    def is_ptrmap(self, pgno: int) -> bool:
        if not self.auto_vacuum or pgno < 2:
            return False
        per = self.usable // 5 + 1  # a pointer-map page, then the pages it maps
        base = (pgno - 2) // per * per + 2
        lock = LOCK_BYTE_OFFSET // self.page_size + 1
        if base == lock:
            base += 1
        return pgno == base

    def is_lock_byte_page(self, pgno: int) -> bool:
        return pgno == LOCK_BYTE_OFFSET // self.page_size + 1


def header_problem(page1: bytes, page_size: int) -> Optional[str]:
    """(1) Why these bytes cannot be page 1 of a database of ``page_size`` pages, or None."""
    if len(page1) < 100 or page1[:16] != SQLITE_MAGIC:
        return "it does not start with the SQLite header"
    raw = int.from_bytes(page1[16:18], "big")
    if (65536 if raw == 1 else raw) != page_size:
        return f"its header says page size {raw}, not {page_size}"
    if page1[21:24] != b"\x40\x20\x20":
        return "its header's payload fractions are not 64/32/32"
    if page_size - page1[20] < 480:
        return f"its header reserves {page1[20]} bytes per page (usable size below 480)"
    return None


def in_header_size(page1: bytes) -> Optional[int]:
    """The database size page 1 records (offset 28), or None when the header says that
    field is stale (its version-valid-for, offset 92, differs from the change counter)."""
    if len(page1) < 96:
        return None
    counter, size = struct.unpack_from(">II", page1, 24)
    return size if size and struct.unpack_from(">I", page1, 92)[0] == counter else None


def _btree_problem(page: bytes, offset: int, usable: int, n_pages: int) -> Optional[str]:
    kind = page[offset]
    interior = kind in (2, 5)
    hsize = 12 if interior else 8
    first_free, ncells, content, frag = struct.unpack_from(">HHHB", page, offset + 1)
    content = content or 65536
    array_end = offset + hsize + 2 * ncells
    if frag > 60:
        return f"B-tree page with {frag} fragmented bytes"
    if array_end > content or content > usable:
        return f"B-tree page with {ncells} cells and content at {content}"
    if first_free and not (array_end <= first_free <= usable - 4):
        return f"B-tree page with its first freeblock at {first_free}"
    if interior:
        right = struct.unpack_from(">I", page, offset + 8)[0]
        if not 1 <= right <= n_pages:
            return f"interior B-tree page whose right child is page {right}"
    if ncells:
        ptrs = struct.unpack_from(f">{ncells}H", page, offset + hsize)
        if min(ptrs) < content or max(ptrs) > usable - 4:
            return "B-tree page with a cell pointer outside its content area"
    return None


def page_problem(pgno: int, page: bytes, geo: PageGeometry) -> Optional[str]:
    """Why ``page`` cannot be page ``pgno`` of the pinned database, or None (rules 1-3).

    A page failing only rule (3) may still be a freelist leaf (rule 4): see
    ``freelist_leaves``."""
    if len(page) != geo.page_size:
        return f"{len(page)} bytes, not {geo.page_size}"
    if pgno > geo.db_pages:
        return None  # past the database's own size: SQLite never reads it
    if pgno == 1:
        if page[:100] != geo.header:
            return "page 1 differs from the header pinned when the database was opened"
        return _btree_problem(page, 100, geo.usable, geo.n_pages) if page[100] in BTREE_TYPES \
            else "page 1 has no B-tree header at offset 100"
    if page[0] in BTREE_TYPES:
        problem = _btree_problem(page, 0, geo.usable, geo.n_pages)
        if problem is None:
            return None
    else:
        problem = "neither a B-tree page nor an overflow or freelist page"
    if not any(page):
        return None
    if struct.unpack_from(">I", page, 0)[0] <= geo.n_pages:
        return None  # an overflow or freelist trunk page (3)
    if geo.is_ptrmap(pgno) or geo.is_lock_byte_page(pgno):
        return None
    return problem


def freelist_leaves(geo: PageGeometry, read: Callable[[int], bytes]) -> Set[int]:
    """(4) The freelist leaf pages, from the trunk chain (``read(pgno)`` gives a page)."""
    leaves: Set[int] = set()
    seen: Set[int] = set()
    trunk = geo.freelist_trunk
    per_trunk = geo.usable // 4 - 2
    while trunk and trunk not in seen and 1 < trunk <= geo.n_pages and len(seen) <= geo.freelist_count:
        seen.add(trunk)
        page = read(trunk)
        nxt, count = struct.unpack_from(">II", page, 0)
        count = min(count, per_trunk)
        leaves.update(p for p in struct.unpack_from(f">{count}I", page, 8) if 1 < p <= geo.n_pages)
        trunk = nxt
    return leaves
