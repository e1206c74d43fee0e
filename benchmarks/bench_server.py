"""Reference server throughput: pages/s for a full bootstrap and for old-revision lookups.

    python benchmarks/bench_server.py [--size-mb 100] [--writes 200] [--lookups 300]

Generates a database of about ``--size-mb`` MiB in a temporary directory, serves it with
``turso_dbapi.server.ReferenceServer`` on loopback, and measures in one run:

1. full bootstrap — one ``/pull-updates`` with an empty body (every page, latest revision);
2. after ``--writes`` pipeline writes (random row updates: many revisions), lazy-fetch-like
   requests of 32 random page ids pinned to the OLDEST revision (time travel);

each next to the baseline of reading the same pages straight from the file (``os.pread``)
in the same process, and the ratio. HTTP, protobuf framing and the page-log lookups are
all included in the server numbers.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from turso_dbapi.protocol import roaring  # noqa: E402
from turso_dbapi.server import ReferenceServer  # noqa: E402
from turso_dbapi.protocol.sync_wire import PullUpdatesRequest, parse_response  # noqa: E402

PAGE = 4096


def generate(path: str, size_mb: int) -> int:
    rows = size_mb * 1024 * 1024 // 1030  # ~1030 file bytes per 1000-byte row
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, x BLOB)")
    conn.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
        "INSERT INTO t SELECT i, randomblob(1000) FROM s",
        (rows,),
    )
    conn.commit()
    conn.close()
    return rows


def file_baseline(path: str, page_ids: list, repeat: int = 1) -> float:
    """Seconds to pread the given pages from the file (``repeat`` passes, best kept)."""
    best = float("inf")
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            for pid in page_ids:
                os.pread(fd, PAGE, pid * PAGE)
            best = min(best, time.perf_counter() - t0)
    finally:
        os.close(fd)
    return best


def post_raw(session, url: str, req: PullUpdatesRequest) -> bytes:
    # stream=True + raw.read(): one big read, so the client's chunking does not dominate
    r = session.post(url + "/pull-updates", data=req.encode(), stream=True)
    r.raise_for_status()
    return r.raw.read()


def post(session, url: str, req: PullUpdatesRequest):
    return parse_response(post_raw(session, url, req))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--lookups", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    args = ap.parse_args()
    if args.quick:
        args.size_mb, args.writes, args.lookups = 8, 20, 30

    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        db = os.path.join(tmp, "bench.db")
        t0 = time.perf_counter()
        rows = generate(db, args.size_mb)
        size = os.path.getsize(db)
        print(
            f"database: {rows} rows, {size / 2**20:.1f} MiB, {size // PAGE} pages "
            f"(generated in {time.perf_counter() - t0:.1f}s)"
        )

        t0 = time.perf_counter()
        server = ReferenceServer(db).start()
        print(
            f"server start (page log of every page at revision 1): {time.perf_counter() - t0:.2f}s"
        )
        session = requests.Session()
        try:
            # 1. full bootstrap (best of 3; the body is parsed afterwards, outside the timing)
            boot_s = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                body = post_raw(session, server.url, PullUpdatesRequest())
                boot_s = min(boot_s, time.perf_counter() - t0)
            t0 = time.perf_counter()
            header, pages = parse_response(body)
            parse_s = time.perf_counter() - t0
            n = len(pages)
            assert n == header.db_size == os.path.getsize(db) // PAGE
            del pages, body
            base_s = file_baseline(db, list(range(n)), repeat=3)
            t0 = time.perf_counter()
            _, plan = server.db.log.plan(0, int(header.server_revision), None)
            for _ in server.db.log.read(plan):
                pass
            log_s = time.perf_counter() - t0
            print("\nfull bootstrap (1 request, every page):")
            print(
                f"  server     {n / boot_s:12,.0f} pages/s  ({boot_s:.2f}s, {n * PAGE / boot_s / 2**20:.0f} MiB/s over loopback HTTP)"
            )
            print(f"  page log   {n / log_s:12,.0f} pages/s  (lookups + blob reads alone, no HTTP)")
            print(f"  file read  {n / base_s:12,.0f} pages/s  ({base_s:.3f}s)")
            print(f"  ratio      {boot_s / base_s:12.1f}x slower than reading the file")
            print(
                f"  (client-side parse of the body: {n / parse_s:,.0f} pages/s, not included above)"
            )

            # 2. many writes -> many revisions, then lookups pinned to the oldest revision
            oldest = header.server_revision
            rng = random.Random(1)
            t0 = time.perf_counter()
            for _ in range(args.writes):
                ids = ",".join(str(rng.randrange(1, rows + 1)) for _ in range(50))
                body = {
                    "requests": [
                        {
                            "type": "execute",
                            "stmt": {
                                "sql": f"UPDATE t SET x = randomblob(1000) WHERE id IN ({ids})"
                            },
                        }
                    ]
                }
                session.post(server.url + "/v2/pipeline", json=body).raise_for_status()
            write_s = time.perf_counter() - t0
            latest = server.db.revision
            versions = server.db.log.version_count()
            print(
                f"\n{args.writes} pipeline writes in {write_s:.1f}s ({args.writes / write_s:.0f} revisions/s); "
                f"log: {versions} page versions, revisions {oldest}..{latest}"
            )

            sets = [rng.sample(range(n), 32) for _ in range(args.lookups)]
            t0 = time.perf_counter()
            got = 0
            for ids in sets:
                req = PullUpdatesRequest(
                    server_revision=oldest, server_pages_selector=roaring.serialize(ids)
                )
                hdr, pages = post(session, server.url, req)
                assert hdr.server_revision == oldest and len(pages) == 32
                got += len(pages)
            old_s = time.perf_counter() - t0
            flat = [pid for ids in sets for pid in ids]
            base_s = file_baseline(db, flat, repeat=3)
            selectors = [roaring.deserialize_ranges(roaring.serialize(ids)) for ids in sets]
            t0 = time.perf_counter()
            for sel in selectors:
                _, plan = server.db.log.plan(0, int(oldest), sel)
                for _ in server.db.log.read(plan):
                    pass
            log_s = time.perf_counter() - t0
            print(
                f"\nold-revision lookups ({args.lookups} requests x 32 random pages at revision {oldest}):"
            )
            print(
                f"  server     {got / old_s:12,.0f} pages/s  ({old_s / args.lookups * 1000:.2f} ms/request)"
            )
            print(
                f"  page log   {got / log_s:12,.0f} pages/s  (lookups + blob reads alone, no HTTP)"
            )
            print(f"  file read  {got / base_s:12,.0f} pages/s  (same pages, current file)")
            print(f"  ratio      {old_s / base_s:12.1f}x slower than reading the file")
        finally:
            session.close()
            server.stop()


if __name__ == "__main__":
    main()
