"""Exact request/byte counts of cold queries, in both modes, on a generated database.

A descent (point lookup), an index range (one user's rows: ~20 rows in 20 table leaves
spread over the table) and a scan (a full-table aggregate), each on a fresh replica
served by the reference server (HTTP ranges with multi-range, and ``/pull-updates``).
The counts are pinned exactly, so a change of the miss policy (fetch/access.py,
fetch/index_prefetch.py) shows here; each is also checked against the minimum: the pages
SQLite read (``was_read``), beyond page 1.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

import pytest

import turso_dbapi
from turso_dbapi.demo import generate
from turso_dbapi.server import ReferenceServer
from turso_dbapi.server.query_pages import QueryPages

PS = 4096
ROWS = 20_000

# mode -> query -> (requests, bytes received, pages fetched), measured with this policy.
# Turso bytes: the pages' bytes exactly, plus the protocol's framing (revision strings,
# protobuf headers: the server's business), at most FRAMING per request and PAGE_FRAMING
# per page.
# Minimum (traced pages beyond page 1): descent 3, index range 26, scan 1,338. The open is
# pinned apart (OPEN): page 1 alone (range: one 4 KiB block, plus the WAL probe the
# reference server's WAL-mode file brings; Turso: a one-page bootstrap). Before issue 13
# (128 KiB segments, windows doubling on descents) the demo's run (same database, one
# connection) showed: point lookup 2 req / 262,144 B, one user's rows 17 req / 2,883,584 B
# (range; Turso 18 req / 2,516,160 B); then, with the open reading the first 128 KiB
# segment, a descent cost 2 requests / 8 KiB after an open of 128 KiB (~11x its minimum).
EXPECTED: Dict[str, Dict[str, Tuple[int, int, int]]] = {
    "range": {"descent": (3, 3 * PS, 3), "index range": (6, 109050, 26), "scan": (9, 5485374, 1338)},
    "turso": {"descent": (3, 3 * PS, 3), "index range": (6, 26 * PS, 26), "scan": (11, 1338 * PS, 1338)},
}
OPEN = {"range": (2, PS, 0), "turso": (1, PS, 1)}  # (requests, bytes, pages) of connect()
FRAMING = 512
PAGE_FRAMING = 16

QUERIES = {
    "descent": ("select id, kind, created_at from events where id = ?", (4242,)),
    "index range": ("select count(*), min(created_at) from events where user_id = ?", (17,)),
    "scan": ("select kind, count(*) from events group by kind", ()),
}


@pytest.fixture(scope="module")
def events_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("counts") / "events.db")
    generate(path, ROWS)  # deterministic (seeded), vacuumed
    return path


@pytest.fixture(scope="module")
def server(events_db):
    with ReferenceServer(events_db) as srv:  # both protocols on one port
        yield srv


def cold(server: Any, mode: str, tmp_path: Any, sql: str, args: tuple) -> Tuple[Any, Any, list]:
    url = server.file_url if mode == "range" else server.url
    con = turso_dbapi.connect(url, partial=True, local_path=os.path.join(str(tmp_path), mode, "db"))
    before = con.stats()
    rows = con.execute(sql, args).fetchall()
    return con, before, rows


def traced_minimum(server: Any, sql: str, args: tuple) -> int:
    """Distinct pages SQLite reads running the query cold, beyond page 1 (the reference
    server's tracing VFS over a private copy: server/query_pages.py)."""
    inline = sql.replace("?", "{}").format(*(repr(a) for a in args))
    tracer = QueryPages(server.db.log)
    try:
        return len(tracer.pages(inline, server.db.revision)) - 1
    finally:
        tracer.close()


def received(st: Any) -> int:
    return getattr(st, "bytes_received", None) or st.network_received_bytes


@pytest.mark.parametrize("mode", ["range", "turso"])
@pytest.mark.parametrize("query", list(QUERIES))
def test_cold_query_costs_exactly(server, events_db, tmp_path, mode, query):
    import sqlite3

    sql, args = QUERIES[query]
    con, before, rows = cold(server, mode, tmp_path, sql, args)
    assert rows == sqlite3.connect(events_db).execute(sql, args).fetchall()
    after = con.stats()
    minimum = traced_minimum(server, sql, args)
    requests = after.requests - before.requests
    nbytes = received(after) - received(before)
    pages = after.pages_fetched - before.pages_fetched
    con.close()
    got = (requests, nbytes, pages)
    print(f"{mode} {query}: {got}, minimum {minimum} pages")
    opened = (before.requests, received(before), before.pages_fetched)
    if query != "scan":  # issue 13: what the open costs counts too
        assert opened[1] + nbytes <= 2 * minimum * PS, (opened, got)
    if mode == "turso":
        assert OPEN[mode][1] <= opened[1] <= OPEN[mode][1] + FRAMING, opened
        opened = (opened[0], OPEN[mode][1], opened[2])
    assert opened == OPEN[mode]
    if query == "scan":
        assert pages <= 1.05 * minimum  # speculative pages only where the scan reads
    else:
        assert pages <= 2 * minimum  # a random miss costs about its page
    if query == "index range":
        assert requests < minimum  # the index leaf's rowids bring the table leaves together
    want = EXPECTED[mode][query]
    if query == "scan" and mode == "turso" and abs(requests - want[0]) == 1:
        # background windows race the reader: one synchronous miss fewer when the
        # look-ahead is a step ahead, one more when a loaded machine holds it a step
        # behind (measured 10, 11 or 12; 9 or 10 before the look-ahead
        # started at a 64 KiB window, fetch/miss.py LOOKAHEAD_FROM: smaller
        # first background windows, the same pages)
        requests = want[0]
        got = (requests, nbytes, pages)
    if mode == "turso":
        assert want[1] <= nbytes <= want[1] + FRAMING * requests + PAGE_FRAMING * pages, got
        got = (requests, want[1], pages)
    assert got == want
