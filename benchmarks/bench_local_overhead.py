"""Local drop-in overhead: the same workload through turso_dbapi and stdlib sqlite3.

Both run in this process, interleaved round by round so machine noise hits both alike;
each figure is the best round. Goal: ratio <= 1.02 (a local path never touches our VFS,
so the only possible cost is the Connection subclass and connect()'s argument routing).

    python benchmarks/bench_local_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import report  # noqa: E402

import turso_dbapi  # noqa: E402


def workload(mod, path: str, rows: int) -> dict:
    if os.path.exists(path):
        os.remove(path)
    times = {}
    t0 = time.perf_counter()
    con = mod.connect(path)
    con.execute("create table t(id integer primary key, k text, v integer)")
    con.executemany(
        "insert into t(k, v) values (?, ?)", ((f"key{i:08d}", i * 7 % 1000) for i in range(rows))
    )
    con.execute("create index t_k on t(k)")
    con.commit()
    times["bulk insert"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cur = con.cursor()
    for i in range(0, rows, 4):
        cur.execute("select v from t where id = ?", (i + 1,)).fetchone()
    times["point selects (by rowid)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(0, rows, 16):
        con.execute("select id from t where k = ?", (f"key{i:08d}",)).fetchone()
    times["point selects (by index)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for _ in range(3):
        con.execute("select sum(v), count(*), max(k) from t").fetchone()
        for _row in con.execute("select id, k, v from t"):
            pass
    times["scans"] = time.perf_counter() - t0
    con.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    args = ap.parse_args()
    rows, rounds = (20_000, 3) if args.quick else (200_000, 7)
    with tempfile.TemporaryDirectory() as tmp:
        best = {"sqlite3": {}, "turso_dbapi": {}}
        for _ in range(rounds):
            for name, mod in (("sqlite3", sqlite3), ("turso_dbapi", turso_dbapi)):
                for key, t in workload(mod, os.path.join(tmp, name + ".db"), rows).items():
                    best[name][key] = min(t, best[name].get(key, float("inf")))
    print(f"local drop-in overhead: {rows} rows, best of {rounds} interleaved rounds")
    total_s = total_t = 0.0
    for key, base in best["sqlite3"].items():
        ours = best["turso_dbapi"][key]
        total_s += base
        total_t += ours
        report(key, ours * 1000, "ms", ours / base, "sqlite3")
    report("whole workload", total_t * 1000, "ms", total_t / total_s, "sqlite3")


if __name__ == "__main__":
    main()
