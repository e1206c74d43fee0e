"""Live databases over HTTP: the client's WAL path, and pull() against downloading again.

    python benchmarks/bench_live_wal.py [--quick] [--latency 0.02]

1. WAL parse + validate + page->frame index on the client path (``WalIndex.from_bytes``:
   one ``tdb_wal_follow`` call, wal.h rule (8)) on a ~64 MiB WAL written by SQLite (8 MiB
   with --quick), against the pure-Python oracle (``_reference.wal_follow``) on the same
   bytes. GB/s are decimal; best of a few runs.
2. A WAL-mode database of >= 100 MB (--quick: ~12 MB) served by nginx behind the fault
   proxy (a fixed latency per request, default 20 ms): a lazy connection reads it, the
   writer commits ~1 MB more to the WAL, then ``pull()`` is timed (requests, bytes) against
   downloading the database again (a fresh ``partial=False`` connection: db + WAL).
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
from support.faultproxy import FaultProxy  # noqa: E402
from support.nginx import NginxServer  # noqa: E402

import turso_dbapi  # noqa: E402
from turso_dbapi import _reference as ref  # noqa: E402
from turso_dbapi.storage.wal_index import WalIndex  # noqa: E402

from _util import best_of, report  # noqa: E402


def grow_wal(con: sqlite3.Connection, wal_path: str, target: int, start: int = 0) -> int:
    """Commit 1500-byte rows until the WAL has ``target`` more bytes; returns the next key."""
    base = os.path.getsize(wal_path) if os.path.exists(wal_path) else 0
    k = start
    while (os.path.getsize(wal_path) if os.path.exists(wal_path) else 0) - base < target:
        con.execute("BEGIN")
        con.executemany("INSERT INTO t VALUES (?, ?)", [(k + i, os.urandom(1500)) for i in range(100)])
        con.execute("COMMIT")
        k += 100
    return k


def open_writer(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v BLOB)")
    return con


def bench_parse(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.db")
        con = open_writer(path)
        grow_wal(con, path + "-wal", (8 if quick else 64) << 20)
        data = open(path + "-wal", "rb").read()
        con.close()
    size = len(data)
    wal = WalIndex.from_bytes(data)
    assert wal is not None
    print(f"WAL: {size / 2**20:.1f} MiB, {wal.frames} committed frames, {len(wal.pages())} pages")
    native = best_of(lambda: WalIndex.from_bytes(data), 3 if quick else 5)
    rc, hdr = ref.wal_read_header(data)
    tail = data[ref.WAL_HDR:] if not quick else data[ref.WAL_HDR:ref.WAL_HDR + (2 << 20)]
    python = best_of(lambda: ref.wal_follow(tail, hdr, (hdr.cksum1, hdr.cksum2), 1, 1 << 24), 1)
    native_gbs = size / native / 1e9
    python_gbs = len(tail) / python / 1e9
    report("client WAL parse+validate+index, native", native_gbs, "GB/s", native_gbs / python_gbs,
           "Python oracle")
    report("client WAL parse+validate+index, Python", python_gbs, "GB/s")


def bench_pull(quick: bool, latency: float) -> None:
    with tempfile.TemporaryDirectory() as d, NginxServer(os.path.join(d, "nginx")) as srv:
        path = str(srv.root / "live.db")
        con = open_writer(path)
        k = grow_wal(con, path + "-wal", (12 if quick else 100) << 20)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        k = grow_wal(con, path + "-wal", 256 << 10, k)  # a WAL in use
        past = time.time() - 60
        os.utime(path, (past, past))
        db_size = os.path.getsize(path)
        print(f"database: {db_size / 1e6:.1f} MB + {os.path.getsize(path + '-wal') / 1e6:.2f} MB WAL; "
              f"{latency * 1000:.0f} ms per request")
        with FaultProxy(srv.base_url, latency=latency) as proxy:
            url = proxy.url("live.db")
            reader = turso_dbapi.connect(url, partial=True, local_path=os.path.join(d, "r.db"))
            reader.execute("SELECT count(*) FROM t WHERE k < 1000").fetchone()
            wal_before = os.path.getsize(path + "-wal")
            k = grow_wal(con, path + "-wal", 1 << 20, k)
            grown = os.path.getsize(path + "-wal") - wal_before
            proxy.clear()
            t0 = time.perf_counter()
            assert reader.pull() is True
            pull_s = time.perf_counter() - t0
            pull_req, pull_bytes = proxy.request_count, proxy.bytes_sent
            assert reader.execute("SELECT max(k) FROM t").fetchone() == (k - 1,)
            reader.close()
            proxy.clear()
            t0 = time.perf_counter()
            again = turso_dbapi.connect(url, partial=False, local_path=os.path.join(d, "again.db"))
            assert again.execute("SELECT max(k) FROM t").fetchone() == (k - 1,)
            dl_s = time.perf_counter() - t0
            dl_req, dl_bytes = proxy.request_count, proxy.bytes_sent
            again.close()
        con.close()
    print(f"WAL grew by {grown / 2**20:.2f} MiB")
    report("pull(): requests", pull_req, "", pull_req / dl_req, "download again")
    report("pull(): bytes", pull_bytes / 2**20, "MiB", pull_bytes / dl_bytes, "download again")
    report("pull(): bytes / new WAL bytes", pull_bytes / grown, "x")
    report("pull(): time", pull_s, "s", pull_s / dl_s, "download again")
    report("download again: requests", dl_req, "")
    report("download again: bytes", dl_bytes / 2**20, "MiB")
    report("download again: time", dl_s, "s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small WAL and database (CI smoke)")
    ap.add_argument("--latency", type=float, default=0.02, help="seconds added to every request")
    args = ap.parse_args(argv)
    bench_parse(args.quick)
    bench_pull(args.quick, args.latency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
