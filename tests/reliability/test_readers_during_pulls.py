"""Concurrent readers during pulls, bounded: reader threads and reader processes query a
replica in a loop while another connection pulls revision after revision. Every snapshot
shows one revision (0 mixed), no reader ever goes back to an older revision, and no read
fails. Full replicas and partial ones (whose readers fetch pages lazily while the pin
moves), each in WAL mode (a new replica's default) and in rollback-journal mode. The
invariant lives in tests/support/_snapshots.py; add reader kinds or modes here. About 15 s
each.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest
from support._snapshots import SETUP_SQL, SNAPSHOT_SQL, check_snapshot, revision_sql, snapshot_args

import turso_dbapi

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READER = os.path.join(ROOT, "tests", "support", "_snapshot_reader.py")
ROUNDS = 6
AHEAD = 0.25  # seconds the server stays a revision ahead of the replica before each pull
THREADS = 3
PROCESSES = 2
_PARTIAL = {"bootstrap_prefix": 4 * 4096, "segment_size": 4096}
MODES = {"full": {}, "partial": _PARTIAL,  # WAL, a new replica's default
         "full rollback": {"journal_mode": "delete"}, "partial rollback": dict(_PARTIAL, journal_mode="delete")}


def _execute(server, statements) -> None:
    server.pipeline({"requests": [{"type": "execute", "stmt": {"sql": s}} for s in statements]})


class ThreadReader(threading.Thread):
    def __init__(self, path: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.path, self.stop = path, stop
        self.reads = self.mixed = self.backwards = 0
        self.last = -1
        self.errors: list = []

    def run(self) -> None:
        con = turso_dbapi.connect(self.path, check_same_thread=False)
        rng = random.Random(id(self))
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and not (self.stop.is_set() and self.last == ROUNDS):
                try:
                    row = con.execute(SNAPSHOT_SQL, snapshot_args(rng)).fetchone()
                except Exception as exc:  # collected and asserted empty
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    if len(self.errors) > 20:
                        return
                    continue
                version = check_snapshot(row)
                self.reads += 1
                if version is None:
                    self.mixed += 1
                    continue
                self.backwards += version < self.last
                self.last = version
        finally:
            con.close()


@pytest.mark.parametrize("mode", sorted(MODES))
def test_readers_in_threads_and_processes_never_see_a_mixed_snapshot_during_pulls(turso_server, tmp_path, mode):
    _execute(turso_server, SETUP_SQL)
    path = str(tmp_path / "r.db")
    puller = turso_dbapi.connect(turso_server.url, local_path=path, **MODES[mode])
    stop = threading.Event()
    threads = [ThreadReader(path, stop) for _ in range(THREADS)]
    procs = [subprocess.Popen([sys.executable, READER, ROOT, path, str(ROUNDS), "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT)) for _ in range(PROCESSES)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for t in threads:
            t.start()
        for version in range(1, ROUNDS + 1):
            _execute(turso_server, revision_sql(version))  # right after the previous pull
            time.sleep(AHEAD)  # readers run (and fetch lazily) while the server is ahead
            assert puller.pull() is True
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    results = [{"reads": t.reads, "mixed": t.mixed, "backwards": t.backwards, "last": t.last,
                "errors": t.errors} for t in threads]
    for p in procs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    total = sum(r["reads"] for r in results)
    print(f"{mode}: {total} snapshots by {len(results)} readers during {ROUNDS} pulls, "
          f"{sum(r['mixed'] for r in results)} mixed")
    for r in results:
        assert r["errors"] == [] and r["mixed"] == 0 and r["backwards"] == 0, r
        assert r["last"] == ROUNDS and r["reads"] > 0, r
    assert check_snapshot(puller.execute(SNAPSHOT_SQL, (1,)).fetchone()) == ROUNDS
    if mode == "partial":
        assert puller.stats().misses > 0  # readers did fetch lazily
    puller.close()
