"""Full bootstrap and pulls: our Turso replica vs pyturso's, same server, one run.

    python benchmarks/bench_pull.py [--size-mb 96] [--inserts 10000,100000]
                                    [--latency-ms 0] [--repeat 3] [--rounds 5] [--quick]

The reference server (its own process) serves a generated database of about
``--size-mb`` MiB (``items`` with a random-key index, as bench_turso_partial.py). With
``--latency-ms`` > 0 the clients go through the fault proxy; 0 (the default) is loopback.

1. full bootstrap: a fresh replica of the whole database (connect until it can read);
   best of ``--repeat``, ours vs pyturso;
2. pull: for each count in ``--inserts``, ``--rounds`` rounds: the server inserts that
   many rows in one transaction, a third replica pulls them untimed (the server's first
   answer for a revision costs it more: neither client should pay that), then each client
   (bootstrapped before the inserts) pulls them, in alternating order; median time of
   ``pull()``, ours vs pyturso.

Every figure is printed with its ratio (ours / pyturso): below 1 means we are faster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

import turso_dbapi  # noqa: E402
from bench_sync import Server  # noqa: E402
from bench_turso_partial import generate  # noqa: E402
from support.faultproxy import FaultProxy  # noqa: E402

try:
    import turso.sync as turso_sync  # the peer (a test extra; Python 3.10+)
except ImportError as exc:  # pragma: no cover - named, never silently skipped
    raise SystemExit(f"bench_pull needs pyturso (pip install pyturso, Python 3.10+): {exc}")


def ours(url: str, path: str) -> Any:
    return turso_dbapi.connect(url, local_path=path)


def theirs(url: str, path: str) -> Any:
    return turso_sync.connect(path, url)


def fresh(workdir: str, name: str) -> str:
    d = os.path.join(workdir, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return os.path.join(d, "replica.db")


def bootstrap_time(client: Callable[[str, str], Any], url: str, workdir: str, name: str,
                   repeat: int) -> float:
    best = float("inf")
    for i in range(repeat):
        path = fresh(workdir, f"{name}-boot{i}")
        t0 = time.perf_counter()
        conn = client(url, path)
        conn.execute("SELECT 1 FROM items LIMIT 1").fetchall()
        best = min(best, time.perf_counter() - t0)
        conn.close()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return best


def line(name: str, ours_s: float, theirs_s: float) -> None:
    print(f"{name:<40} ours {ours_s:8.3f} s   pyturso {theirs_s:8.3f} s   ratio {ours_s / theirs_s:6.2f}",
          flush=True)


def main(argv: List[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=96)
    ap.add_argument("--inserts", default="10000,100000")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--repeat", type=int, default=3, help="bootstraps (best of)")
    ap.add_argument("--rounds", type=int, default=5, help="pulls per size (median of)")
    ap.add_argument("--quick", action="store_true", help="16 MiB, 10k inserts, 2 bootstraps, 3 pulls")
    a = ap.parse_args(argv)
    if a.quick:
        a.size_mb, a.inserts, a.repeat, a.rounds = 16, "10000", 2, 3
    counts = [int(x) for x in a.inserts.split(",") if x]
    workdir = tempfile.mkdtemp(prefix="bench-pull-")
    server = proxy = None
    try:
        db = os.path.join(workdir, "server.db")
        rows = generate(db, a.size_mb)
        print(f"database: {os.path.getsize(db) / 2**20:.1f} MiB, {rows} rows; "
              f"{'loopback' if not a.latency_ms else f'{a.latency_ms:g} ms per request'}", flush=True)
        server = Server(db)
        url = server.url
        if a.latency_ms:
            proxy = FaultProxy(url, latency=a.latency_ms / 1000).start()
            url = proxy.base_url
        import turso_dbapi.sync.replica  # noqa: F401 (lazy imports, as pyturso's are done)
        from turso_dbapi.storage.vfs import ensure_registered

        ensure_registered()  # one-time process set-up, not part of any figure
        # warm-up: the server's file cache and both clients' first-use costs
        for client, name in ((ours, "ours"), (theirs, "pyturso")):
            bootstrap_time(client, url, workdir, f"warm-{name}", 1)
        t_ours = bootstrap_time(ours, url, workdir, "ours", a.repeat)
        t_theirs = bootstrap_time(theirs, url, workdir, "pyturso", a.repeat)
        line(f"full bootstrap ({a.size_mb} MiB), best of {a.repeat}", t_ours, t_theirs)

        mine = ours(url, fresh(workdir, "ours-pull"))
        peer = theirs(url, fresh(workdir, "pyturso-pull"))
        warm = ours(url, fresh(workdir, "warm-pull"))
        next_id = rows + 1
        for n in counts:
            t_ours, t_theirs = [], []
            for r in range(a.rounds):
                server.sql(f"WITH RECURSIVE s(i) AS (SELECT {next_id} UNION ALL SELECT i + 1 FROM s "
                           f"WHERE i < {next_id + n - 1}) INSERT INTO items SELECT i, abs(random()) % {rows}, "
                           f"hex(randomblob(110)) FROM s")
                next_id += n
                warm.pull()  # the server's first answer for a revision pays its own cost: not ours
                order = [(mine, t_ours), (peer, t_theirs)]
                for c, times in order if r % 2 == 0 else reversed(order):
                    t0 = time.perf_counter()
                    c.pull()
                    times.append(time.perf_counter() - t0)
            want = next_id - 1
            for who, c in (("ours", mine), ("pyturso", peer)):
                got = c.execute("SELECT max(id) FROM items").fetchone()[0]
                if got != want:
                    raise SystemExit(f"{who} did not pull the inserts: max(id) {got}, expected {want}")
            line(f"pull of {n} server inserts, median of {a.rounds}", statistics.median(t_ours),
                 statistics.median(t_theirs))
        warm.close()
        mine.close()
        peer.close()
    finally:
        if proxy is not None:
            proxy.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
