"""Unpinned page reads of a live WAL-mode database (``live.py`` rule C), as cacheable blocks.

While a WAL is there, ``LiveSource`` reads database pages WITHOUT preconditions (a
checkpoint may rewrite the file under any validator; the WAL read after them is the
proof, live.py C). Those reads follow the database's range rules all the same:

(U1) The pages are asked as aligned blocks (``range_align``: one page, 4, 16, 64 KiB, ...
     starting at a multiple of their size), so readers of one file share CDN/S3 cache
     entries (range.py (9)).
(U2) The blocks go in multi-range requests (``HttpRangeSource._groups``: at most
     ``max_ranges`` runs and one header's length each), one request per group; a server
     that refuses multi-range (a ``200``, or parts that do not cover the blocks) switches
     the database source's ``multi_range`` off (range.py (6)) and gets one request per
     block.
(U3) Each block's bytes must be exactly the range asked (``206``, its ``Content-Range``, a
     body of that length; a short one is retried, transport rule); the last block may be
     cut at the end of the file, which is zero-padded to a page as SQLite reads it.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from ..transport.http import Reply, TransientReplyError
from .range import HttpRangeSource
from .range_align import page_runs
from .range_reply import content_range, is_encoded, parse_byteranges

Block = Tuple[int, int]  # first, last page (inclusive)


class _Refused(Exception):
    """A multi-range request answered with something else (U2)."""


def read_pages(db: HttpRangeSource, pgnos: List[int]) -> Dict[int, bytes]:
    """Pages ``pgnos`` of ``db``'s file as it is now (no preconditions): U1-U3."""
    blocks = db._blocks(page_runs(pgnos))  # (U1)
    groups = db._groups(blocks) if db.multi_range and len(blocks) > 1 else [[b] for b in blocks]
    out: Dict[int, bytes] = {}
    ps = db.page_size
    for group in groups:
        try:
            datas = _read(db, group)
        except _Refused:  # (U2) from now on one block per request, for this source
            db.multi_range = False
            datas = [d for block in group for d in _read(db, [block])]
        for (first, last), data in zip(group, datas):
            for i, p in enumerate(range(first, last + 1)):
                page = bytes(data[i * ps:(i + 1) * ps])
                out[p] = page if len(page) == ps else page.ljust(ps, b"\x00")
    return out


def _read(db: HttpRangeSource, group: List[Block]) -> List[bytes]:
    ranges = [db._byte_range(a, b) for a, b in group]
    multi = len(ranges) > 1
    what = f"cannot read pages {group[0][0]}-{group[-1][1]}"

    def check(reply: Reply) -> List[bytes]:
        if multi and reply.status == 200:
            raise _Refused()
        if reply.status != 206 or is_encoded(reply):
            raise db._http.error(reply, what)
        body = reply.body or b""
        ctype = reply.headers.get("Content-Type", "")
        if ctype.lower().lstrip().startswith("multipart/byteranges"):
            parts = [(a, b, d) for a, b, _total, d in parse_byteranges(body, ctype)]
        else:
            first, last, _total = content_range(reply)
            if len(body) != last - first + 1:
                raise TransientReplyError(f"short body: {len(body)} of {last - first + 1} bytes")
            parts = [(first, last, body)]
        out = []
        for a, b in ranges:  # (U3) each range from the part that holds it (servers may merge)
            part = next((p for p in parts if p[0] <= a and b <= p[1]), None)
            if part is None:
                if multi:
                    raise _Refused()
                raise TransientReplyError(f"wrong Content-Range {reply.headers.get('Content-Range')!r}"
                                          f" for bytes={a}-{b}")
            out.append(bytes(memoryview(part[2])[a - part[0]:b - part[0] + 1]))
        return out

    spec = ",".join(f"{a}-{b}" for a, b in ranges)
    return db._http.request("GET", headers={"Range": f"bytes={spec}"}, check=check, what=what)
