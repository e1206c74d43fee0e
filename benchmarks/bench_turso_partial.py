"""Our Turso partial-sync client vs pyturso's, same server, same latency, one run.

    python benchmarks/bench_turso_partial.py [--size-mb 100] [--latency-ms 20] [--quick]

Generates a database of about ``--size-mb`` MiB (``--quick``: 16 MiB) in a temporary
directory: ``items(id INTEGER PRIMARY KEY, k INTEGER, payload TEXT)`` with an index on
``k`` (k random), served by the reference server (``python -m turso_dbapi.server``, its own
process) behind the fault proxy adding ``--latency-ms`` per request. Both clients
bootstrap a fresh replica with a one-segment prefix (128 KiB), then run ONE cold query:

  point   SELECT payload FROM items WHERE id = ?            (a row in the middle)
  range   SELECT SUM(LENGTH(payload)) FROM items WHERE k BETWEEN ? AND ?   (index + rows)
  scan    SELECT COUNT(*), SUM(LENGTH(payload)) FROM items   (every page)

For each: requests (counted by the proxy), bytes received (each client's own
``network_received_bytes``), wall ms, and ours/pyturso ratios. Bootstrap cost is
reported separately and excluded from the query figures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import turso_dbapi  # noqa: E402
from support.faultproxy import FaultProxy  # noqa: E402

PREFIX = 128 * 1024
ROW_PAYLOAD = 220


def generate(path: str, size_mb: int) -> int:
    """The served database: rows of ~250 bytes, an index on a random key (WAL, like a server)."""
    rows = size_mb * 1024 * 1024 // 245  # ~245 file bytes per row, index included
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, k INTEGER, payload TEXT)")
    conn.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
        "INSERT INTO items SELECT i, abs(random()) % ?, hex(randomblob(?)) FROM s",
        (rows, rows, ROW_PAYLOAD // 2))
    conn.execute("CREATE INDEX items_k ON items(k)")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return rows


def start_server(db_path: str) -> Tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "turso_dbapi.server", db_path, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if " at " not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line}{proc.stderr.read()}")
    return proc, line.split(" at ", 1)[1].split()[0]


def ours(url: str, path: str) -> Tuple[Any, Callable[[], int]]:
    conn = turso_dbapi.connect(url, local_path=path, partial=True, bootstrap_prefix=PREFIX)
    return conn, lambda: conn.stats().network_received_bytes


def theirs(url: str, path: str) -> Tuple[Any, Callable[[], int]]:
    import turso.sync as ts

    opts = ts.PartialSyncOpts(bootstrap_strategy=ts.PartialSyncPrefixBootstrap(length=PREFIX))
    conn = ts.connect(path, remote_url=url, partial_sync_experimental=opts)
    return conn, lambda: conn.stats().network_received_bytes


def run(client: Callable, proxy: FaultProxy, workdir: str, name: str, sql: str,
        params: tuple) -> Dict[str, Any]:
    path = os.path.join(workdir, f"{name}.db")
    proxy.clear()
    t0 = time.perf_counter()
    conn, received = client(proxy.base_url, path)
    boot = {"requests": proxy.request_count, "bytes": received(), "ms": (time.perf_counter() - t0) * 1000}
    proxy.clear()
    before = received()
    t0 = time.perf_counter()
    result = conn.execute(sql, params).fetchall()
    ms = (time.perf_counter() - t0) * 1000
    out = {"requests": proxy.request_count, "bytes": received() - before, "ms": ms,
           "result": result, "boot": boot}
    conn.close()
    return out


def main(argv: List[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--quick", action="store_true", help="16 MiB database")
    args = ap.parse_args(argv)
    size = 16 if args.quick else args.size_mb
    try:
        import turso.sync  # noqa: F401
    except ImportError:
        raise SystemExit("pyturso is needed for the comparison: pip install pyturso")
    workdir = tempfile.mkdtemp(prefix="bench-turso-")
    server = None
    try:
        db = os.path.join(workdir, "server.db")
        t0 = time.perf_counter()
        rows = generate(db, size)
        print(f"database: {os.path.getsize(db) / 2**20:.1f} MiB, {rows} rows "
              f"(generated in {time.perf_counter() - t0:.1f} s); latency {args.latency_ms:g} ms/request",
              flush=True)
        server, url = start_server(db)
        import turso_dbapi.sync.replica  # noqa: F401 (lazy imports: requests, http; pyturso's are done too)
        from turso_dbapi.storage.vfs import ensure_registered

        ensure_registered()  # one-time process set-up, not part of any bootstrap figure
        rng = random.Random(7)
        k0 = rng.randrange(rows - 40)
        queries = [
            ("point", "SELECT payload FROM items WHERE id = ?", (rows // 2 + 17,)),
            ("range", "SELECT SUM(LENGTH(payload)) FROM items WHERE k BETWEEN ? AND ?", (k0, k0 + 40)),
            ("scan", "SELECT COUNT(*), SUM(LENGTH(payload)) FROM items", ()),
        ]
        with FaultProxy(url, latency=args.latency_ms / 1000) as proxy:
            print(f"{'query':<7}{'client':<9}{'requests':>9}{'bytes':>13}{'ms':>10}   "
                  f"{'boot req':>8}{'boot bytes':>12}{'boot ms':>9}")
            for name, sql, params in queries:
                a = run(ours, proxy, workdir, f"ours-{name}", sql, params)
                b = run(theirs, proxy, workdir, f"theirs-{name}", sql, params)
                if a["result"] != [tuple(r) for r in b["result"]]:
                    raise SystemExit(f"{name}: results differ: {a['result']!r} vs {b['result']!r}")
                for who, r in (("ours", a), ("pyturso", b)):
                    bt = r["boot"]
                    print(f"{name:<7}{who:<9}{r['requests']:>9}{r['bytes']:>13}{r['ms']:>10.1f}   "
                          f"{bt['requests']:>8}{bt['bytes']:>12}{bt['ms']:>9.1f}")

                r = {key: (f"{a[key] / b[key]:.3f}" if b[key] else "n/a") for key in ("requests", "bytes", "ms")}
                print(f"{name:<7}{'ratio':<9}{r['requests']:>9}{r['bytes']:>13}{r['ms']:>10}"
                      "   (ours / pyturso)", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
