"""WAL parse + full checksum validation of a WAL written by SQLite, native vs the oracle.

    python benchmarks/bench_wal.py [--quick]

Builds a ~64 MiB WAL (4 MiB with --quick) with the stdlib sqlite3 in a temp directory,
copying the -wal while the writer is still open. GB/s are decimal; best of a few runs.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile

from turso_dbapi.server import wal
from turso_dbapi._native import lib

from _util import best_of as best  # noqa: E402 - benchmarks/ is sys.path[0]


def make_wal(directory: str, target: int) -> bytes:
    path = os.path.join(directory, "bench.db")
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)")
        k = 0
        while os.path.getsize(path + "-wal") < target:
            con.execute("BEGIN")
            con.executemany(
                "INSERT INTO t VALUES (?, ?)", [(k + i, os.urandom(1500)) for i in range(400)]
            )
            con.execute("COMMIT")
            k += 400
        with open(path + "-wal", "rb") as f:
            return f.read()
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 MiB WAL instead of 64 MiB (CI smoke)")
    args = ap.parse_args(argv)
    target = (4 if args.quick else 64) << 20
    runs = 3 if args.quick else 5
    if lib is None:
        print("native core not built: only the pure-Python reference is available", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as d:
        data = make_wal(d, target)
    scan = wal.parse_wal(data)
    size = len(data)
    print(
        f"WAL from SQLite {sqlite3.sqlite_version}: {size / 2**20:.1f} MiB, page size "
        f"{scan.page_size}, {scan.max_frame} committed frames, {len(scan.page_index)} pages, "
        f"db size {scan.db_size} pages; best of {runs}"
    )

    t_api = best(lambda: wal.parse_wal(data), runs)
    t_c = best(lambda: wal._scan(data, native=True), runs)
    gbs = size / t_api / 1e9
    print(
        f"  parse_wal (native scan + frames list + page index): {gbs:8.2f} GB/s "
        f"({t_api * 1e3:.1f} ms)"
    )
    print(f"  native scan alone (header, salts, every checksum):  {size / t_c / 1e9:8.2f} GB/s")

    # The oracle on a whole-frame prefix, then scaled linearly (it is O(bytes)).
    n = max(1, min(scan.max_frame, ((512 if args.quick else 4096) << 10) // scan.frame_size))
    piece = data[: 32 + n * scan.frame_size]
    t_ref = best(lambda: wal.parse_wal(piece, reference=True), 1)
    assert wal.parse_wal(piece, reference=True) == wal.parse_wal(piece)
    ref_rate = len(piece) / t_ref
    print(
        f"  pure-Python oracle: {ref_rate / 1e6:8.2f} MB/s, measured on the first {n} frames "
        f"({len(piece) >> 10} KiB) and extrapolated linearly (~{size / ref_rate:.1f} s for all)"
    )
    print(
        f"RESULT wal parse: {gbs:.2f} GB/s; {gbs * 1e9 / ref_rate:,.0f}x the pure-Python oracle "
        f"(scaled from a slice)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
