"""Cost of checking fetched pages (sources/range.py rule (8), storage/page_check.py).

Every page an HTTP-range fetch returns is checked before it is cached. This prints the
check's cost per page over every page of a generated database (B-tree leaves and interior
pages, overflow pages, an index), and the ratio against storing the same pages' CRC32C
(the native batch call), which every fetched page pays already; both measured here.

    python benchmarks/bench_page_check.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
from support.databases import make_sized_database  # noqa: E402

from turso_dbapi.storage import checksum  # noqa: E402
from turso_dbapi.storage.page_check import PageGeometry, page_problem  # noqa: E402

from _util import best_of, report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~4 MB database instead of ~32 MB")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        mixed = make_sized_database(os.path.join(d, "b.db"), (4 if args.quick else 32) << 20)
        small = os.path.join(d, "s.db")  # many small rows: ~80 cells per page, the worst case
        con = sqlite3.connect(small)
        con.execute("CREATE TABLE t(a INTEGER, b BLOB)")
        rows = 40_000 if args.quick else 300_000
        con.executemany("INSERT INTO t VALUES (?, ?)", ((i, os.urandom(40)) for i in range(rows)))
        con.execute("CREATE INDEX t_b ON t(b)")
        con.commit()
        con.close()
        for name, path in (("generated test database", mixed), ("small rows + index", small)):
            with open(path, "rb") as f:
                measure(name, f.read())
    return 0


def measure(name: str, data: bytes) -> None:
    ps = int.from_bytes(data[16:18], "big")
    n = len(data) // ps
    pages = [(i + 1, data[i * ps:(i + 1) * ps]) for i in range(n)]
    geo = PageGeometry(pages[0][1], ps, n)
    assert all(page_problem(p, page, geo) is None for p, page in pages)
    t_check = best_of(lambda: [page_problem(p, page, geo) for p, page in pages], 5)
    t_crc = best_of(lambda: checksum.crc32c_pages(data, ps), 5)
    print(f"{name}: {n} pages of {ps} bytes ({len(data) / 1e6:.1f} MB)")
    report("  page check, per page", t_check / n * 1e6, "us")
    report("  page check throughput", len(data) / t_check / 1e6, "MB/s", t_check / t_crc,
           "CRC32C of the same pages")


if __name__ == "__main__":
    sys.exit(main())
