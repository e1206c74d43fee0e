"""The snapshot invariant of the concurrent reader/puller campaign.

Table ``a`` holds the version: revision ``v`` (one server transaction) sets every row of
``a`` to ``v`` and sets ``b.v = v`` in REGION ``v-1`` of ``b`` (ids ``(v-1)*REGION+1 ..
v*REGION``). A reader that sees version ``v`` in ``a`` reads a random window of region
``v``, which no revision up to ``v`` has touched: every row there must still read 0.

Why this shape: when the replica reaches version ``v``, nobody has read region ``v`` yet,
so in a partial replica its pages are fetched lazily, while the campaign's server is
already at ``v+1`` (it makes the next revision right after each pull), which changed them.
A fetch not pinned to the replica's revision shows ``v+1`` there (a mix); so does a
reader that sees ``a`` of one revision and ``b`` of another. To check another invariant,
extend ``SNAPSHOT_SQL`` and ``check_snapshot`` together.
"""

from __future__ import annotations

import random
from typing import Optional, Sequence, Tuple

REGIONS = 8  # versions 0 .. REGIONS-1 have a region of their own (at most 7 pulls)
REGION = 300  # rows of b per region (~150 pages)
WINDOW = 20
A_ROWS = 100
B_ROWS = REGIONS * REGION
SETUP_SQL = [
    "CREATE TABLE a(id INTEGER PRIMARY KEY, v INTEGER)",
    "CREATE TABLE b(id INTEGER PRIMARY KEY, v INTEGER, x BLOB)",
    f"INSERT INTO a SELECT value, 0 FROM generate_series(1, {A_ROWS})",
    f"INSERT INTO b SELECT value, 0, randomblob(1500) FROM generate_series(1, {B_ROWS})",
]
SNAPSHOT_SQL = (
    "WITH s AS (SELECT min(v) AS lo, max(v) AS hi, count(*) AS n FROM a) "
    "SELECT s.lo, s.hi, s.n, min(b.v), max(b.v), count(b.id), sum(length(b.x)) FROM s, b "
    f"WHERE b.id BETWEEN s.lo * {REGION} + ?1 AND s.lo * {REGION} + ?1 + {WINDOW - 1}"
)


def snapshot_args(rng: random.Random) -> Tuple[int]:
    return (rng.randint(1, REGION - WINDOW + 1),)


def revision_sql(version: int) -> list:
    """The statements of one server transaction making ``version``."""
    assert version < REGIONS
    first = (version - 1) * REGION + 1
    return ["BEGIN", f"UPDATE a SET v = {version}",
            f"UPDATE b SET v = {version} WHERE id BETWEEN {first} AND {first + REGION - 1}", "COMMIT"]


def check_snapshot(row: Sequence[int]) -> Optional[int]:
    """The version a snapshot shows, or None when it mixes revisions."""
    a_lo, a_hi, a_n, b_lo, b_hi, b_n, b_bytes = row
    if a_lo == a_hi and a_n == A_ROWS and b_lo == b_hi == 0 and b_n == WINDOW and b_bytes == WINDOW * 1500:
        return a_lo
    return None
