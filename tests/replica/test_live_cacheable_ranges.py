"""A WAL-mode database followed live over HTTP asks cacheable ranges too.

Real nginx serves a WAL-mode database that a stdlib sqlite3 writer keeps open
(tests/support/_live_db.py). A cold workload (a scan and point lookups, whose database
pages are read unpinned and confirmed by the WAL after them: sources/live.py C), then
commits and a pull: every Range header of nginx's access log is pinned exactly, and each
part is checked against the sizes listed HERE: database parts are aligned blocks (as in
tests/fetch/test_cacheable_ranges.py), WAL parts aligned blocks of 4 KiB units
(sources/wal_reader.py (5)); the only open-ended ranges start on a block boundary.
"""

from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

import pytest

import turso_dbapi

from support._live_db import LiveDb

PS = 4096
KIB = 1024
ALLOWED = {PS, 16 * KIB, 64 * KIB, 256 * KIB, 1024 * KIB, 4096 * KIB}


def parts_of(header: str) -> List[Tuple[int, Optional[int]]]:
    assert header.startswith("bytes="), header
    out: List[Tuple[int, Optional[int]]] = []
    for spec in header[len("bytes="):].split(","):
        a, _, b = spec.partition("-")
        out.append((int(a), int(b) if b else None))
    return out


def aligned(start: int, end: Optional[int], file_size: int) -> bool:
    """One block of an ALLOWED size starting at a multiple of it (cut at the end of the
    file), or open-ended from a 4 KiB boundary (the WAL grows)."""
    if end is None:
        return start % PS == 0
    length = end - start + 1
    return any(start % size == 0 and (length == size or (end >= file_size - 1 and length < size))
               for size in ALLOWED)


@pytest.fixture
def live(nginx):
    db = LiveDb(nginx, "cacheable-live.db", rows=3000, wal_rows=300, payload=200)
    db.settle()
    yield db
    db.close()


def test_every_range_of_a_live_wal_database_is_an_aligned_block(live, tmp_path):
    log_start = len(live.nginx.access_log_lines())
    db_size = os.path.getsize(live.path)
    con = turso_dbapi.connect(live.url, partial=True, local_path=str(tmp_path / "c" / "db"))
    assert con.execute("select v from t where id = 1717").fetchone() == ("v" * 200,)
    assert con.execute("select count(*), max(length(v)) from t").fetchone() == (3300, 200)
    live.insert(200, per_commit=50)
    assert con.pull() is True
    assert con.execute("select count(*) from t where id > 3000").fetchone() == (500,)
    con.close()
    lines = live.nginx.access_log_lines()[log_start:]
    got = [(re.match(r"GET /(\S+) ", ln).group(1), re.search(r"range=(\S+)", ln).group(1)) for ln in lines]
    wal_size = live.wal_size()
    for name, header in got:
        size = wal_size if name.endswith("-wal") else db_size
        if header == "bytes=0-":  # S2: the whole WAL
            assert name.endswith("-wal")
            continue
        bad = [p for p in parts_of(header) if not aligned(p[0], p[1], size)]
        assert not bad, (name, header, bad)
    assert got == EXPECTED, got


DB, WAL = "cacheable-live.db", "cacheable-live.db-wal"
# The WAL's header block and a 64 KiB window from the 4 KiB boundary below its end (77,824
# <= end < 81,920), as aligned blocks: the same for every reader of the WAL at this state.
TAIL = ("bytes=0-4095,77824-81919,81920-98303,98304-114687,114688-131071,131072-135167,"
        "135168-139263,139264-143359")
EXPECTED: List[Tuple[str, str]] = [
    (DB, "bytes=0-4095"),  # S1: the open
    (WAL, "bytes=0-"),  # S2: the whole WAL
    (DB, "bytes=0-4095"),  # S3: the open's block again, with If-Match
    (DB, "bytes=376832-380927"),  # the point lookup's leaf (root and interior are WAL pages)
    (WAL, TAIL),  # C: the WAL after it proves it unchanged
    # the scan: windows of 4, 16, 64, 256 pages, as aligned blocks, each proven by the WAL
    (DB, "bytes=8192-12287"),
    (WAL, TAIL),
    (DB, "bytes=12288-16383,16384-32767"),
    (WAL, TAIL),
    (DB, "bytes=32768-49151,49152-65535,65536-131071"),
    (WAL, TAIL),
    (DB, "bytes=131072-196607,196608-262143,262144-327679,327680-344063,344064-360447,360448-376831,"
         "380928-385023,385024-389119,389120-393215,393216-458751,458752-524287"),
    (WAL, TAIL),
    (DB, "bytes=524288-589823,589824-606207,606208-622591,622592-638975,638976-643071,643072-647167,"
         "647168-651263"),  # to the end of the file (page 159)
    (WAL, TAIL),
    # pull(): the window is full of new frames of this generation, so the rest follows,
    # open-ended from the window's end
    (WAL, TAIL),
    (WAL, "bytes=143360-"),
]
