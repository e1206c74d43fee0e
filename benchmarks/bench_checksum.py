"""CRC32C throughput: the native batch call over 4 KiB pages vs zlib.crc32 and the oracle.

    python benchmarks/bench_checksum.py [--quick]

GB/s are decimal (1e9 bytes/s); each figure is the best of a few runs, all in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib

from turso_dbapi import _reference
from turso_dbapi.storage import checksum
from turso_dbapi._native import lib

from _util import best_of as best  # noqa: E402 - benchmarks/ is sys.path[0]

PAGE = 4096


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 MiB instead of 64 MiB (CI smoke)")
    args = ap.parse_args(argv)
    size = (4 if args.quick else 64) << 20
    runs = 3 if args.quick else 5
    oracle_slice = (16 if args.quick else 256) << 10
    buf = os.urandom(size)
    mib = size >> 20

    if lib is None:
        print("native core not built: only the pure-Python reference is available", file=sys.stderr)
        return 1

    print(f"CRC32C over {mib} MiB of {PAGE}-byte pages ({size // PAGE} pages), best of {runs}")
    print(f"  hardware path available: {checksum.hardware()}")
    t_hw = best(lambda: checksum.crc32c_pages(buf, PAGE), runs)
    try:
        lib.tdb_crc32c_force_table(1)
        t_table = best(lambda: checksum.crc32c_pages(buf, PAGE), runs)
        t_single_table = best(lambda: checksum.crc32c(buf), runs)
    finally:
        lib.tdb_crc32c_force_table(0)
    t_single = best(lambda: checksum.crc32c(buf), runs)
    t_zlib = best(lambda: zlib.crc32(buf), runs)
    page = buf[:PAGE]
    n_calls = 20000
    t_call = best(lambda: [checksum.crc32c(page) for _ in range(n_calls)], 3) / n_calls

    gbs = size / t_hw / 1e9
    print(f"  native batch ({'hw' if checksum.hardware() else 'table'}): {gbs:8.2f} GB/s")
    print(f"  native batch (table path forced): {size / t_table / 1e9:8.2f} GB/s")
    print(
        f"  native one call over the whole buffer: {size / t_single / 1e9:8.2f} GB/s "
        f"(table path: {size / t_single_table / 1e9:.2f} GB/s)"
    )
    print(f"  zlib.crc32 (CRC-32, one call, same buffer): {size / t_zlib / 1e9:8.2f} GB/s")
    print(f"  checksum.crc32c(one 4 KiB page) from Python: {t_call * 1e9:8.0f} ns/call")

    t_oracle = best(lambda: _reference.crc32c(0, buf[:oracle_slice]), 1)
    oracle_rate = oracle_slice / t_oracle
    print(
        f"  pure-Python oracle: {oracle_rate / 1e6:8.2f} MB/s, measured on a "
        f"{oracle_slice >> 10} KiB slice and extrapolated linearly to {mib} MiB "
        f"(~{size / oracle_rate:.0f} s)"
    )
    print(
        f"RESULT crc32c: {gbs:.2f} GB/s; {t_zlib / t_hw:.2f}x zlib.crc32; "
        f"{gbs * 1e9 / oracle_rate:,.0f}x the pure-Python oracle (scaled from a slice)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
