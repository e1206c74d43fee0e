"""WAL replicas (issue 17): warm reads of a Turso replica in WAL mode vs stdlib sqlite3 on a
local WAL copy (goal <= 1.05x), and how long a pull blocks a local writer.

Reads: point selects (``con.execute``), point selects with cursor reuse, and a scan by
iteration (per row), best of N rounds, fully cached replica (``partial=False``), both
connections in WAL mode, measured in the same run.

Writer: a thread commits one small row per transaction into the replica (its own
connection) while the main thread pulls server updates; the report gives the writer's
commit latency (median / max) with no pull and during pulls, the frame append of each pull
(``wal_writer.append``: frames + fsync + wal-index), the time the pull held the WAL write
lock (each BEGIN IMMEDIATE to its COMMIT or ROLLBACK: the check and the append; the
extraction, plan and replay run before it, ``sync.side_replay``) and their ratio (goal:
only the append), and the side replay's time.

    python benchmarks/bench_wal_replica.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import report  # noqa: E402
from bench_hit_path import dbapi_workload as reads  # noqa: E402  (the same rows, the same code)

import turso_dbapi  # noqa: E402
from turso_dbapi.storage import wal_writer  # noqa: E402
from turso_dbapi.sync import internal, side_replay, wal_apply  # noqa: E402



def make_source(path: str, rows: int) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL, payload BLOB)")
    con.executemany("INSERT INTO items VALUES (?, ?, ?, randomblob(200))",
                    ((i, f"item {i}", i * 0.5) for i in range(1, rows + 1)))
    con.commit()
    con.close()


def bench_reads(srv_url: str, src: str, tmp: str, rows: int, rounds: int) -> None:
    local = os.path.join(tmp, "local.db")
    a, b = sqlite3.connect(src), sqlite3.connect(local)
    a.backup(b)
    b.execute("PRAGMA journal_mode=WAL")
    b.close()
    a.close()
    turso = turso_dbapi.connect(srv_url, partial=False, local_path=os.path.join(tmp, "turso", "db"))
    assert turso.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    cons = {"sqlite3 WAL copy": sqlite3.connect(local), "turso WAL replica": turso}
    ids = [random.randint(1, rows) for _ in range(20000)]
    for con in cons.values():
        reads(con, ids[:500], 1)  # warm-up: page cache and verified bits
    best: dict = {name: {} for name in cons}
    for _ in range(rounds):
        for name, con in cons.items():
            for k, v in reads(con, ids, 2).items():
                best[name][k] = min(v, best[name].get(k, v))
    print(f"warm reads, fully cached, both in WAL mode, best of {rounds} rounds:")
    for k in best["sqlite3 WAL copy"]:
        base = best["sqlite3 WAL copy"][k]
        report(f"{k} (sqlite3 WAL copy)", base * 1e6, "us")
        report(f"{k} (turso WAL replica)", best["turso WAL replica"][k] * 1e6, "us",
               best["turso WAL replica"][k] / base, "sqlite3 WAL copy")
    for con in cons.values():
        con.close()


def bench_writer(srv, tmp: str, pulls: int, quiet_pulls: int) -> None:
    path = os.path.join(tmp, "w", "db")
    conn = turso_dbapi.connect(srv.url, partial=False, local_path=path)
    conn.execute("PRAGMA journal_mode=WAL")
    appends, held, attempts = [], [], []
    real_append, real_connect = wal_writer.append, internal.connect

    def timed_append(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_append(*a, **k)
        finally:
            appends.append(time.perf_counter() - t0)

    builds: list = []
    real_run = side_replay.run

    def timed_run(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_run(*a, **k)
        finally:
            builds.append(time.perf_counter() - t0)

    class Timed:
        """The apply's internal connection: the write lock is held from each BEGIN
        IMMEDIATE to the COMMIT or ROLLBACK that ends it (summed over a pull's attempts)."""

        def __init__(self, con: sqlite3.Connection):
            self._con, self._since, self._total, self._locks = con, None, 0.0, 0

        def execute(self, sql: str, *args):
            word = sql.strip().upper()
            out = self._con.execute(sql, *args)
            if word == "BEGIN IMMEDIATE":
                self._since = time.perf_counter()
                self._locks += 1
            elif word in ("COMMIT", "ROLLBACK") and self._since is not None:
                self._total += time.perf_counter() - self._since
                self._since = None
            return out

        def close(self) -> None:
            if self._locks:
                held.append(self._total)
                attempts.append(self._locks)
            self._con.close()

        def __getattr__(self, name: str):
            return getattr(self._con, name)

    wal_writer.append = timed_append  # module attributes: what sync.wal_apply calls
    side_replay.run = timed_run
    internal.connect = lambda *a, **k: Timed(real_connect(*a, **k))
    lat: list = []
    stop = threading.Event()
    phase = ["quiet"]
    conn.execute("CREATE TABLE IF NOT EXISTS mine(n INTEGER PRIMARY KEY, at REAL)")
    conn.commit()
    for i in range(quiet_pulls):  # no writer racing: a local change, then a pull that replays it
        conn.execute("INSERT INTO mine(at) VALUES (0)")
        conn.commit()
        _server_update(srv, i)
        conn.pull()
    quiet = (list(appends), list(held))
    del appends[:], held[:], builds[:], attempts[:]
    print(f"{quiet_pulls} pulls with a local change to replay, no writer racing them:")
    report("quiet pull: frame append incl. fsync (median)", statistics.median(quiet[0]) * 1e3, "ms")
    report("quiet pull: WAL write lock held (median)", statistics.median(quiet[1]) * 1e3, "ms",
           statistics.median(quiet[1]) / statistics.median(quiet[0]), "frame append")
    report("quiet pull: WAL write lock held (max)", max(quiet[1]) * 1e3, "ms",
           max(quiet[1]) / statistics.median(quiet[0]), "frame append")
    done = quiet_pulls
    # updates of server rows are logged, inserts into a table created here go to its
    # unlogged tail (tail.py): a catch-up replays both, ahead of the lock or under it
    for kind, sql in (("updates", "UPDATE items SET name = ? WHERE id = ?"),
                      ("inserts", "INSERT INTO mine(at) VALUES (?)")):
        del appends[:], held[:], builds[:], attempts[:]
        lat.clear()
        stop.clear()
        phase[0] = "idle"

        def writer(kind: str = kind, sql: str = sql) -> None:
            w = turso_dbapi.connect(path, timeout=30)
            k = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                k += 1
                w.execute(sql, (f"w{k}", 1 + k % 1000) if kind == "updates" else (t0,))
                w.commit()
                lat.append((phase[0], time.perf_counter() - t0))
                time.sleep(0.002)
            w.close()

        th = threading.Thread(target=writer)
        th.start()
        time.sleep(1.0)
        phase[0] = "pull"
        per_pull = []
        for i in range(done, done + pulls):
            _server_update(srv, i)
            n = len(builds)
            conn.pull()
            per_pull.append(len(builds) - n)
        done += pulls
        phase[0] = "done"
        stop.set()
        th.join()
        idle = [x for p, x in lat if p == "idle"]
        during = [x for p, x in lat if p == "pull"]
        print(f"a local writer committing {kind} every ~2 ms during {pulls} pulls (each changing ~2% of the rows):")
        report(f"{kind}: writer commit, no pull: median", statistics.median(idle) * 1e3, "ms")
        report(f"{kind}: writer commit, no pull: max", max(idle) * 1e3, "ms")
        report(f"{kind}: writer commit, during pulls: median", statistics.median(during) * 1e3, "ms")
        report(f"{kind}: writer commit, during pulls: max", max(during) * 1e3, "ms",
               max(during) / max(idle), "max with no pull")
        report(f"{kind}: pull: frame append incl. fsync (median)", statistics.median(appends) * 1e3, "ms")
        report(f"{kind}: pull: WAL write lock held (median)", statistics.median(held) * 1e3, "ms",
               statistics.median(held) / statistics.median(appends), "frame append")
        report(f"{kind}: pull: WAL write lock held (max)", max(held) * 1e3, "ms",
               max(held) / statistics.median(appends), "frame append")
        report(f"{kind}: pull: replay off to the side (median)", statistics.median(builds) * 1e3, "ms")
        print(f"  side replays per pull: {sorted(per_pull)} (more than 1: local commits met ahead of the lock "
              "could not be caught up - DDL, or a deleted row of a table's unlogged tail - and the replay was built "
              f"again; {1 + wal_apply.MOVED_RETRIES}: the last one under the lock)")
    wal_writer.append, internal.connect, side_replay.run = real_append, real_connect, real_run
    conn.close()


def _server_update(srv, i: int) -> None:
    import requests

    body = {"requests": [{"type": "execute", "stmt": {
        "sql": f"UPDATE items SET price = price + 1 WHERE id % 50 = {i % 50}"}}]}
    r = requests.post(srv.url + "/v2/pipeline", json=body, timeout=30)
    r.raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rows = 5000 if args.quick else 50000
    from turso_dbapi.server import ReferenceServer

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src.db")
        make_source(src, rows)
        with ReferenceServer(src) as srv:
            bench_reads(srv.url, src, tmp, rows, 2 if args.quick else 5)
            bench_writer(srv, tmp, 5 if args.quick else 30, 5 if args.quick else 15)


if __name__ == "__main__":
    main()
