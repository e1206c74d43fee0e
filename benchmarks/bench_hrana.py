"""Hrana over HTTP on the reference server: statements/s and transactions/s.

    python benchmarks/bench_hrana.py [--rows 10000] [--n 500]

Serves a generated table on loopback and measures in one run, each next to the baseline
of the same SQL on a plain ``sqlite3`` connection to the same file in this process (and
the ratio, which is the cost of HTTP + JSON + streams + logging each commit):

1. point selects, one ``/v2/pipeline`` request each on one stream (baton passed along);
2. interactive write transactions of three requests each (``BEGIN IMMEDIATE`` / ``UPDATE``
   / ``COMMIT``), each commit a new revision of the page log;
3. a ``/v3/cursor`` over the whole table: rows/s.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from turso_dbapi.server import ReferenceServer  # noqa: E402


def ex(sql: str) -> dict:
    return {"type": "execute", "stmt": {"sql": sql}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    rnd = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA page_size=4096")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t(v) VALUES (?)", (("x" * 100,) for _ in range(args.rows)))
        conn.commit()
        conn.close()
        with ReferenceServer(path) as srv:
            s = requests.Session()
            url = srv.url + "/v2/pipeline"
            local = sqlite3.connect(path, isolation_level=None)
            ids = [rnd.randrange(1, args.rows + 1) for _ in range(args.n)]

            t0 = time.perf_counter()
            baton = None
            for i in ids:
                baton = s.post(url, json={"baton": baton, "requests": [
                    ex(f"SELECT v FROM t WHERE id = {i}")]}).json()["baton"]
            remote = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in ids:
                local.execute(f"SELECT v FROM t WHERE id = {i}").fetchall()
            base = time.perf_counter() - t0
            print(f"point select:   {args.n / remote:8.0f}/s over Hrana, {args.n / base:8.0f}/s "
                  f"sqlite3 in-process, ratio {remote / base:.1f}x")

            n_tx = max(1, args.n // 5)
            rev0 = srv.db.revision
            t0 = time.perf_counter()
            for i in ids[:n_tx]:
                b = s.post(url, json={"baton": baton, "requests": [ex("BEGIN IMMEDIATE")]}).json()
                b = s.post(url, json={"baton": b["baton"], "requests": [
                    ex(f"UPDATE t SET v = 'y' WHERE id = {i}")]}).json()
                baton = s.post(url, json={"baton": b["baton"], "requests": [ex("COMMIT")]}).json()[
                    "baton"]
            remote = time.perf_counter() - t0
            revisions = srv.db.revision - rev0
            t0 = time.perf_counter()
            for i in ids[:n_tx]:
                local.execute("BEGIN IMMEDIATE")
                local.execute(f"UPDATE t SET v = 'z' WHERE id = {i}")
                local.execute("COMMIT")
            base = time.perf_counter() - t0
            print(f"write tx (3 requests): {n_tx / remote:6.0f}/s over Hrana ({revisions} revisions "
                  f"logged), {n_tx / base:8.0f}/s sqlite3 in-process, ratio {remote / base:.1f}x")

            t0 = time.perf_counter()
            r = s.post(srv.url + "/v3/cursor", json={"batch": {"steps": [
                {"stmt": {"sql": "SELECT id, v FROM t"}}]}}, stream=True)
            rows = sum(1 for line in r.iter_lines() if line.startswith(b'{"type":"row"'))
            remote = time.perf_counter() - t0
            t0 = time.perf_counter()
            base_rows = len(local.execute("SELECT id, v FROM t").fetchall())
            base = time.perf_counter() - t0
            assert rows == base_rows == args.rows
            print(f"cursor scan:    {rows / remote:8.0f} rows/s over Hrana, {rows / base:8.0f} rows/s "
                  f"sqlite3 in-process, ratio {remote / base:.1f}x")
            local.close()
            s.close()


if __name__ == "__main__":
    main()
