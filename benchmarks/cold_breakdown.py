"""Where a cold Turso connect + query spends its time, and the flushes it asks for.

Used by bench_peers.py (printed under its table, for the point lookup through the same
proxy) and runnable alone against any Turso server URL::

    python benchmarks/cold_breakdown.py URL "SELECT ..." [--runs 5]

Each run is a fresh replica (partial, as bench_peers' cells). The steps of a bootstrap
(sync/bootstrap.py) are timed by wrapping their functions for the duration of the runs:
step 1 (claim, request, pages; the claim's fsyncs run during the request), the capture
install, the page-store flush, the final metadata (its temp file is flushed during the
store flush; what is timed is the rest: waiting for it, the rename and the directory's
fsync); "other" is the rest of connect() (source, connection, schema). Flushes are counted
exactly: ``os.fsync`` calls, the page store's own (``PageStore.flushes``) and the xSync
calls of journals (``tdb_vfs_passthrough_syncs``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import turso_dbapi  # noqa: E402
from turso_dbapi._native import lib  # noqa: E402
from turso_dbapi.storage import pagestore  # noqa: E402
from turso_dbapi.sync import bootstrap as boot  # noqa: E402
from turso_dbapi.sync import capture  # noqa: E402
from turso_dbapi.sync import metadata as sync_meta  # noqa: E402

STEPS = [  # (label, owner, attribute)
    ("bootstrap request + pages", boot, "bootstrap"),
    ("capture install", capture, "install"),
    ("page-store flush", pagestore.PageStore, "sync"),
    ("final metadata", sync_meta, "publish"),
]


@contextlib.contextmanager
def _timed(acc: Dict[str, float]) -> Iterator[List[int]]:
    """Wrap the steps (and os.fsync, counted) for the block; yields the fsync counter."""
    saved = []
    fsyncs = [0]

    def wrap(label: str, owner: Any, name: str) -> None:
        orig = getattr(owner, name)
        saved.append((owner, name, orig))

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                acc[label] += time.perf_counter() - t0

        setattr(owner, name, timed)

    for label, owner, name in STEPS:
        wrap(label, owner, name)
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        fsyncs[0] += 1
        real_fsync(fd)

    os.fsync = counting  # type: ignore[assignment]
    try:
        yield fsyncs
    finally:
        os.fsync = real_fsync  # type: ignore[assignment]
        for owner, name, orig in saved:
            setattr(owner, name, orig)


def breakdown(url: str, sql: str, work: str, runs: int = 5,
              connect: Callable[..., Any] = turso_dbapi.connect) -> str:
    """The report: median milliseconds per step and the flushes of one cold connect."""
    res: Dict[str, List[float]] = collections.defaultdict(list)
    flushes: Dict[str, List[int]] = collections.defaultdict(list)
    for _ in range(runs):
        d = tempfile.mkdtemp(dir=work)
        acc: Dict[str, float] = collections.defaultdict(float)
        try:
            with _timed(acc) as fsyncs:
                journal = lib.tdb_vfs_passthrough_syncs()
                t0 = time.perf_counter()
                con = connect(url, partial=True, local_path=os.path.join(d, "db"))
                t1 = time.perf_counter()
                fs = con._replica.store.flushes()
                flushes["fsync"].append(fsyncs[0])
                flushes["journal"].append(lib.tdb_vfs_passthrough_syncs() - journal)
                for k, v in fs.items():
                    flushes[k].append(v)
                con.execute(sql).fetchall()
                t2 = time.perf_counter()
                requests = con.stats().requests
                con.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)
        res["connect"].append(t1 - t0)
        res["query"].append(t2 - t1)
        res["requests"].append(requests)
        steps = sum(acc[label] for label, _, _ in STEPS)
        for label, _, _ in STEPS:
            res[label].append(acc[label])
        res["other"].append(t1 - t0 - steps)
    ms = {k: statistics.median(v) * 1e3 for k, v in res.items() if k != "requests"}
    parts = ", ".join(f"{label} {ms[label]:.1f}" for label, _, _ in STEPS)
    f = {k: statistics.median(v) for k, v in flushes.items()}
    return (f"cold Turso connect + query, median of {runs} fresh replicas: connect {ms['connect']:.1f} ms "
            f"({parts}, other {ms['other']:.1f}), query {ms['query']:.1f} ms "
            f"({statistics.median(res['requests']):.0f} requests in all)\n"
            f"  flushes of one cold connect: {f['fsync']:.0f} fsync (claim and final metadata: file + "
            f"directory each), page store: local {f['local']:.0f}, synced {f['synced']:.0f}, "
            f"sidecar {f['map']:.0f}; journal {f['journal']:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("sql")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cold_breakdown_")
    try:
        print(breakdown(a.url, a.sql, work, a.runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
