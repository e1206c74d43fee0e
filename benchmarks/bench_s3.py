"""Cold reads of a private S3 object: turso_dbapi (``s3://``) vs sqlite-s3-query.

A generated database (>= 100 MB; --quick: ~12 MB) is uploaded to a versioned bucket of
moto's S3 server (authentication on: every request is SigV4-signed) behind the fault
proxy, which adds a fixed latency to every request (default 20 ms). Each scenario starts
cold (empty cache, new connection) and reports requests, bytes received and wall time
including the connect. The peer, sqlite-s3-query (PyPI), reads the same object through the
same proxy: one HEAD, then one ranged GET per SQLite read, no cache.

    python benchmarks/bench_s3.py [--quick] [--latency 0.02]

Needs the test extras (moto[server], botocore) and sqlite-s3-query (pip install
sqlite-s3-query); without the latter only our figures are printed, and it says so.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
from support.databases import make_sized_database  # noqa: E402
from support.faultproxy import FaultProxy  # noqa: E402
from support.moto_s3 import REGION, MotoS3  # noqa: E402

import turso_dbapi  # noqa: E402

try:  # imported up front like the peer's httpx: import time is not a cold read
    import botocore.session  # noqa: F401
except ImportError:
    pass

SCENARIOS = {
    "cold point lookup": "SELECT name, price, length(payload) FROM items WHERE id = 4242",
    "cold indexed range": "SELECT count(*), avg(price) FROM items WHERE category = 7 AND price BETWEEN 100 AND 300",
}


def ours(url: str, endpoint: str, query: str, cache: str) -> list:
    con = turso_dbapi.connect(url, partial=True, endpoint_url=endpoint, local_path=cache)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def peer(url: str, query: str) -> list:
    from sqlite_s3_query import sqlite_s3_query

    with sqlite_s3_query(url) as run, run(query) as (_columns, rows):
        return [tuple(r) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~12 MB database instead of >= 100 MB")
    ap.add_argument("--latency", type=float, default=0.02, help="seconds added per request")
    args = ap.parse_args()
    try:
        import sqlite_s3_query  # noqa: F401
        have_peer = True
    except ImportError:
        have_peer = False
        print("sqlite-s3-query is not installed (pip install sqlite-s3-query): our figures only")

    with tempfile.TemporaryDirectory(prefix="tdb-bench-s3-") as tmp, MotoS3() as s3:
        t0 = time.perf_counter()
        src = str(make_sized_database(os.path.join(tmp, "big.db"), (12 if args.quick else 100) << 20))
        size = os.path.getsize(src)
        bucket = s3.bucket(versioned=True)  # the peer refuses unversioned buckets
        with open(src, "rb") as f:
            s3.put(bucket, "big.db", f.read())
        print(f"generated and uploaded {size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s; "
              f"latency {args.latency * 1000:.0f} ms per request")
        os.environ.update(s3.env)
        os.environ["AWS_REGION"] = REGION  # the peer reads its region from here
        ref = sqlite3.connect(src)
        with FaultProxy(s3.endpoint, latency=args.latency, keep_host=True) as proxy:
            # Once per process, reported apart: botocore builds its S3 client (endpoint rules,
            # ~50-80 ms) and the VFS registers. Every scenario below is a new connection, cold.
            s3.put(bucket, "warm.db", open(src, "rb").read(1 << 16))
            t0 = time.perf_counter()
            ours(f"s3://{bucket}/warm.db", proxy.base_url, "SELECT 1", os.path.join(tmp, "warm.db"))
            print(f"first connect of the process (one-time set-up): {(time.perf_counter() - t0) * 1000:.1f} ms")
            print(f"{'scenario':<20} {'client':<16} {'requests':>8} {'bytes':>11} {'ms':>9}  ratio (peer/ours)")
            for n, (name, query) in enumerate(SCENARIOS.items()):
                expected = ref.execute(query).fetchall()
                proxy.clear()
                t0 = time.perf_counter()
                got = ours(f"s3://{bucket}/big.db", proxy.base_url, query, os.path.join(tmp, f"c{n}.db"))
                ms = (time.perf_counter() - t0) * 1000
                assert got == expected, (got, expected)
                mine = (proxy.request_count, proxy.bytes_sent, ms)
                print(f"{name:<20} {'turso_dbapi':<16} {mine[0]:>8} {mine[1]:>11} {ms:>9.1f}")
                if not have_peer:
                    continue
                proxy.clear()
                t0 = time.perf_counter()
                try:
                    got = peer(f"{proxy.base_url}/{bucket}/big.db", query)
                except Exception as exc:  # report, do not hide: the peer may not work here
                    print(f"{name:<20} {'sqlite-s3-query':<16} failed: {type(exc).__name__}: {exc}")
                    continue
                ms = (time.perf_counter() - t0) * 1000
                assert [tuple(r) for r in got] == expected, (got, expected)
                theirs = (proxy.request_count, proxy.bytes_sent, ms)
                print(f"{name:<20} {'sqlite-s3-query':<16} {theirs[0]:>8} {theirs[1]:>11} {ms:>9.1f}"
                      f"  requests {theirs[0] / mine[0]:.1f}x, bytes {theirs[1] / max(mine[1], 1):.2f}x,"
                      f" time {theirs[2] / mine[2]:.2f}x")


if __name__ == "__main__":
    main()
