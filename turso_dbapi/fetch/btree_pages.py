"""Reading SQLite B-tree pages in Python, for prefetch decisions only (never for results).

What the index-aware prefetch (``fetch.index_prefetch``) needs from pages that are local:
the rowids an index leaf page holds (the last column of each index record), the table
leaf a rowid lives in (a descent through table interior pages), and which table an index
belongs to (``sqlite_schema``). Everything here is defensive: a malformed or unexpected
page gives "unknown" (None / empty), never an exception — a wrong guess only costs a
fetched page, a crash would cost the read.

Layouts: https://www.sqlite.org/fileformat2.html §1.6 (B-tree pages), §2.1 (records).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Dict, List, Optional, Tuple

PAGE1_HEADER = 100
LEAF_INDEX = 0x0A
LEAF_TABLE = 0x0D
INTERIOR_INDEX = 0x02
INTERIOR_TABLE = 0x05
_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}

ReadPage = Callable[[int], Optional[bytes]]


def varint(buf: bytes, pos: int) -> Tuple[int, int]:
    """SQLite's big-endian varint at ``pos``: (value, next position)."""
    value = 0
    for i in range(8):
        b = buf[pos + i]
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, pos + i + 1
    return (value << 8) | buf[pos + 8], pos + 9


def _header(page: bytes, pgno: int) -> int:
    return PAGE1_HEADER if pgno == 1 else 0


def _cell_offsets(page: bytes, hdr: int, interior: bool) -> List[int]:
    n = int.from_bytes(page[hdr + 3:hdr + 5], "big")
    start = hdr + (12 if interior else 8)
    return [int.from_bytes(page[start + 2 * i:start + 2 * i + 2], "big") for i in range(n)]


def _local_size(payload: int, usable: int, table_leaf: bool) -> int:
    limit = usable - 35 if table_leaf else (usable - 12) * 64 // 255 - 23
    if payload <= limit:
        return payload
    low = (usable - 12) * 32 // 255 - 23
    k = low + (payload - low) % (usable - 4)
    return k if k <= limit else low


def _int_value(serial: int, data: bytes, pos: int) -> Optional[int]:
    if serial == 8:
        return 0
    if serial == 9:
        return 1
    size = _INT_SIZES.get(serial)
    if size is None or pos + size > len(data):
        return None
    return int.from_bytes(data[pos:pos + size], "big", signed=True)


def _serial_size(serial: int) -> int:
    if serial >= 12:
        return (serial - 12) // 2 if serial % 2 == 0 else (serial - 13) // 2
    return {0: 0, 7: 8, 8: 0, 9: 0}.get(serial, _INT_SIZES.get(serial, 0))


def _record(payload: bytes) -> Optional[List[Tuple[int, int]]]:
    """(serial type, offset) of each column of a record (offsets may pass a local part)."""
    size, pos = varint(payload, 0)
    cols: List[Tuple[int, int]] = []
    body = size
    while pos < size:
        serial, pos = varint(payload, pos)
        cols.append((serial, body))
        body += _serial_size(serial)
    return cols


IndexCell = Tuple[Optional[bytes], Optional[int]]


def index_leaf_cells(page: bytes, page_size: int) -> List[IndexCell]:
    """(key, rowid) of each cell of an index leaf page, in cell order: the rowid is the last
    record column, the key the bytes of the others (equal keys, equal bytes). (None, None)
    for a cell that is not wholly on the page (overflow) or unreadable."""
    out: List[IndexCell] = []
    try:
        if page[0] != LEAF_INDEX:
            return out
        for off in _cell_offsets(page, 0, False):
            payload_size, pos = varint(page, off)
            if _local_size(payload_size, page_size, False) < payload_size:
                out.append((None, None))
                continue
            rec = page[pos:pos + payload_size]
            cols = _record(rec)
            if not cols:
                out.append((None, None))
                continue
            serial, at = cols[-1]
            types = bytes(min(c[0], 255) for c in cols[:-1])
            key = types + rec[cols[0][1]:at] if len(cols) > 1 else types
            out.append((key, _int_value(serial, rec, at)))
    except (IndexError, ValueError):
        return out
    return out


def _interior_keys(page: bytes, hdr: int) -> Tuple[List[int], List[int], int]:
    kids: List[int] = []
    keys: List[int] = []
    for off in _cell_offsets(page, hdr, True):
        kids.append(int.from_bytes(page[off:off + 4], "big"))
        keys.append(varint(page, off + 4)[0])
    return kids, keys, int.from_bytes(page[hdr + 8:hdr + 12], "big")


class TableLocator:
    """The table leaf holding a rowid, through table interior pages that are local.

    Parsed interior pages are cached by page number (bounded; ``clear()`` when pages may
    have changed, e.g. after a pull)."""

    def __init__(self, read_page: ReadPage, max_cached: int = 4096):
        self.read_page = read_page
        self.max_cached = max_cached
        self._cache: Dict[int, Optional[Tuple[List[int], List[int], int]]] = {}

    def clear(self) -> None:
        self._cache.clear()

    def _interior(self, pgno: int) -> Optional[Tuple[List[int], List[int], int]]:
        if pgno in self._cache:
            return self._cache[pgno]
        page = self.read_page(pgno)
        if page is None:
            return None  # absent: not cached, it may arrive
        hdr = PAGE1_HEADER if pgno == 1 else 0
        parsed: Optional[Tuple[List[int], List[int], int]] = None
        try:
            if page[hdr] == INTERIOR_TABLE:
                parsed = _interior_keys(page, hdr)
            elif page[hdr] == LEAF_TABLE:
                parsed = ([], [], 0)  # a leaf: the descent ends here
        except (IndexError, ValueError):
            parsed = None
        if len(self._cache) >= self.max_cached:
            self._cache.clear()
        self._cache[pgno] = parsed
        return parsed

    def leaf_of(self, root: int, rowid: int) -> Optional[int]:
        """The page a read of ``rowid`` in the table rooted at ``root`` misses first: its
        leaf, or the first absent interior page on the way (the next page that read
        needs); None when nothing is absent or a page on the way is not a table page."""
        pgno = root
        for _ in range(32):
            node = self._interior(pgno)
            if node is None:
                return pgno if pgno != root and pgno not in self._cache else None
            kids, keys, right = node
            if not right:
                return None  # a leaf that is local: nothing to fetch
            i = bisect_left(keys, rowid)
            pgno = kids[i] if i < len(kids) else right
        return None


def schema_roots(read_page: ReadPage, page_size: int) -> Dict[int, int]:
    """{index root page: its table's root page} from ``sqlite_schema`` as far as its pages
    are local (a cell whose columns overflow is skipped)."""
    tables: Dict[str, int] = {}
    indexes: List[Tuple[int, str]] = []
    todo, seen = [1], set()
    while todo and len(seen) < 256:
        pgno = todo.pop()
        if pgno in seen:
            continue
        seen.add(pgno)
        page = read_page(pgno)
        if page is None:
            continue
        hdr = PAGE1_HEADER if pgno == 1 else 0
        try:
            kind = page[hdr]
            if kind == INTERIOR_TABLE:
                kids, _keys, right = _interior_keys(page, hdr)
                todo.extend(kids + [right])
                continue
            if kind != LEAF_TABLE:
                continue
            for off in _cell_offsets(page, hdr, False):
                payload_size, pos = varint(page, off)
                _rowid, pos = varint(page, pos)
                local = _local_size(payload_size, page_size, True)
                rec = page[pos:pos + local]
                cols = _record(rec)
                if not cols or len(cols) < 4:
                    continue
                texts = []
                for serial, at in cols[:3]:
                    n = _serial_size(serial)
                    texts.append(rec[at:at + n].decode("utf-8", "replace") if at + n <= len(rec) else None)
                root = _int_value(cols[3][0], rec, cols[3][1])
                if root is None or None in texts:
                    continue
                if texts[0] == "table":
                    tables[texts[2].lower()] = root  # tbl_name (== name for a table)
                elif texts[0] == "index" and root > 0:
                    indexes.append((root, texts[2].lower()))
        except (IndexError, ValueError):
            continue
    return {root: tables[t] for root, t in indexes if t in tables}
