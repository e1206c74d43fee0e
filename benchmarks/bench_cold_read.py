"""Cold remote reads: lazy page fetches vs "download the whole file, then query".

A generated database (>= 100 MB; --quick: ~12 MB) is served by nginx behind the fault
proxy, which adds a fixed latency to every request (default 20 ms, like a nearby CDN).
Each scenario starts with an empty cache and reports requests, bytes received and wall
time including connect(); the baseline downloads the whole file through the same proxy
(one GET) and runs the same query with sqlite3. Full-scan bytes must stay <= 1.05 x the
file (no page fetched twice).

    python benchmarks/bench_cold_read.py [--quick] [--latency 0.02] [-o name=value ...]

``-o name=value`` (repeatable) passes a connect option (``url.OPTIONS``), e.g.
``-o prefetch=true -o readahead_max=16m``; values are strings, parsed like URL options.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
from support.databases import make_sized_database  # noqa: E402
from support.faultproxy import FaultProxy  # noqa: E402
from support.nginx import NginxServer  # noqa: E402

import turso_dbapi  # noqa: E402

SCENARIOS = {
    "cold point lookup": ["SELECT name, price, length(payload) FROM items WHERE id = 4242"],
    "cold indexed range": ["SELECT count(*), avg(price) FROM items WHERE category = 7 AND price BETWEEN 100 AND 300"],
    "cold full scan": [
        "SELECT count(*), max(substr(payload, -4)) FROM items",
        "SELECT sum(length(body)) FROM docs",
        "SELECT count(*), max(v) FROM kv",
    ],
}


def run_queries(con: sqlite3.Connection, queries: list) -> list:
    return [con.execute(q).fetchall() for q in queries]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~12 MB database instead of >= 100 MB")
    ap.add_argument("--latency", type=float, default=0.02, help="seconds added per request")
    ap.add_argument("-o", dest="options", action="append", default=[], metavar="NAME=VALUE",
                    help="connect option (repeatable), e.g. -o prefetch=true")
    ap.add_argument("--only", action="append", default=[], help="run only this scenario (repeatable)")
    args = ap.parse_args()
    options = {}
    for item in args.options:
        name, sep, value = item.partition("=")
        if not sep or not name:
            ap.error(f"-o expects name=value, got {item!r}")
        options[name.strip()] = value.strip()
    min_bytes = (12 if args.quick else 100) << 20

    with tempfile.TemporaryDirectory(prefix="tdb-bench-cold-") as tmp:
        t0 = time.perf_counter()
        src = str(make_sized_database(os.path.join(tmp, "big.db"), min_bytes))
        size = os.path.getsize(src)
        print(f"generated {size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s; "
              f"latency {args.latency * 1000:.0f} ms per request")
        print("options: " + (", ".join(f"{k}={v}" for k, v in options.items()) or "(defaults)"))
        os.environ["XDG_CACHE_HOME"] = os.path.join(tmp, "cache")
        with NginxServer(os.path.join(tmp, "nginx")) as nginx, \
                FaultProxy(nginx.base_url, latency=args.latency) as proxy:
            nginx.place("big.db", src)
            url = proxy.url("big.db")
            ref = sqlite3.connect(src)
            print(f"{'scenario':<22} {'requests':>8} {'bytes':>12} {'x file':>7} {'ms':>9}"
                  f" {'download+query ms':>18} {'speed-up':>8}")
            for n, (name, queries) in enumerate(SCENARIOS.items()):
                if args.only and name not in args.only:
                    continue
                expected = run_queries(ref, queries)
                t0 = time.perf_counter()
                con = turso_dbapi.connect(url, partial=True, local_path=os.path.join(tmp, f"r{n}", "db"), **options)
                got = run_queries(con, queries)
                lazy_ms = (time.perf_counter() - t0) * 1000
                assert got == expected, name
                st = con.stats()
                con.close()

                t0 = time.perf_counter()
                whole = os.path.join(tmp, f"whole{n}.db")
                with requests.get(url, stream=True, timeout=120) as r, open(whole, "wb") as f:
                    r.raise_for_status()
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
                base = sqlite3.connect(whole)
                assert run_queries(base, queries) == expected
                base.close()
                base_ms = (time.perf_counter() - t0) * 1000
                print(f"{name:<22} {st.requests:>8} {st.bytes_received:>12} {st.bytes_received / size:>7.3f}"
                      f" {lazy_ms:>9.1f} {base_ms:>18.1f} {base_ms / lazy_ms:>8.2f}")
                if name == "cold full scan" and st.bytes_received > 1.05 * size:
                    print(f"  FAIL: full scan received {st.bytes_received / size:.3f} x the file (> 1.05)")


if __name__ == "__main__":
    main()
