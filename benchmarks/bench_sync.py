"""Two-way sync: capture overhead, push throughput, pull with rebase - ours vs pyturso, one run.

    python benchmarks/bench_sync.py [--rows 100000] [--updates 10000] [--changes 10000]
                                    [--latency-ms 20] [--quick] [--no-capture]

The reference server runs in its own process behind the fault proxy (``--latency-ms`` per
request). Every figure is measured in this run, with its ratio:

1. capture overhead on local writes (the replica's file, no network):
   bulk insert of ``--rows`` new rows in one transaction (best of 3, the table emptied
   before each: on our replica they are the unpushed tail, sync/tail.py), and ``--updates``
   single-row autocommit updates of rows the replica pulled (``SYNCED`` of them: every
   update is logged), on (a) our replica with capture, (b) the same replica with the
   capture triggers dropped (what a write costs without capture), (c) pyturso's replica
   (its CDC on, as it always is), (a) and (b) in rollback-journal mode (journal_mode="delete")
   and in WAL mode (pyturso's mode and a new replica's default), and (d)
   a plain file with the stdlib sqlite3, rollback journal and WAL (what a commit costs
   without a replica). The autocommit updates run interleaved, in blocks of 500 per
   system, so a burst of load from other processes hits every system alike. Then the
   flushes of one commit, counted exactly: the page store's own (local layer, synced layer,
   sidecar: ``PageStore.flushes``) and the xSyncs of journals and WALs
   (``tdb_vfs_passthrough_syncs``), beside a plain file's opened through the VFS (all its
   files passed through: every xSync counted).
   A WAL replica whose connection sets push_operations_threshold (no tails: every insert
   logged) is measured on the bulk insert too.
   Goals: a/b <= 1.3 (bulk), <= 1.5 (autocommit), a < c. The tail's rows are logged in
   bulk when a push starts (tail.fold): that time is printed too, against the insert's.
2. push throughput: ``--changes`` local row changes (inserts), pushed over the proxy;
   rows/s, ours vs pyturso.
3. pull with rebase: ``--changes`` unpushed local changes and one server change; time of
   ``pull()``, ours vs pyturso.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import turso_dbapi  # noqa: E402
from support.faultproxy import FaultProxy  # noqa: E402

try:
    import turso.sync as turso_sync  # the peer (a test extra; Python 3.10+)
except ImportError as exc:  # pragma: no cover - named, never silently skipped
    raise SystemExit(f"bench_sync needs pyturso (pip install pyturso, Python 3.10+): {exc}")

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v INTEGER)"
SYNCED = 10_000  # rows of table s on the server: the autocommit updates change them


class Server:
    """The reference server in its own process (the clients' CPU is not shared with it)."""

    def __init__(self, path: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "turso_dbapi.server", path, "--port", "0"],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.url = self.proc.stdout.readline().split(" at ", 1)[1].split()[0]

    def sql(self, sql: str) -> Any:
        import requests

        r = requests.post(self.url + "/v2/pipeline", json={"requests": [{"type": "execute", "stmt": {"sql": sql}}]},
                          timeout=60)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def drop_capture(conn: Any) -> None:
    """The same replica without capture: our triggers dropped (what a write costs then)."""
    names = [n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'sqlite_tdb_%'")]
    conn.execute("PRAGMA writable_schema = ON")
    for n in names:
        conn.execute(f'DROP TRIGGER "{n}"')
    conn.execute("PRAGMA writable_schema = OFF")
    conn.commit()


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fold_time(conn: Any) -> float:
    """The bulk logging of a replica's tails, as push's first step does it (tail.fold)."""
    from turso_dbapi.sync import internal, tail

    ic = internal.connect(conn._replica.path, conn._replica.conn_id)
    try:
        t0 = time.perf_counter()
        ic.execute("BEGIN IMMEDIATE")
        tail.fold(ic)
        ic.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        ic.close()


def bulk_best(conn: Any, rows: int) -> float:
    """Best of 3 bulk inserts (the least disturbed run on a shared machine)."""
    def bulk() -> None:
        conn.execute("DELETE FROM t")  # a rerun starts from the same table (its pages reused)
        conn.commit()
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t(name, v) VALUES (?, ?)", ((f"name-{i}", i) for i in range(rows)))
        conn.commit()
        times.append(time.perf_counter() - t0)

    times: list = []
    for _ in range(3):
        bulk()
    return min(times)


def autocommit(conn: Any, first: int, n: int) -> None:
    for i in range(first, first + n):
        conn.execute("UPDATE s SET v = v + 1 WHERE id = ?", (i * 7 % SYNCED + 1,))
        conn.commit()


def autocommit_interleaved(conns: Dict[str, Any], updates: int, block: int = 500) -> Dict[str, float]:
    """Seconds each connection took for ``updates`` autocommit updates, run in turns of
    ``block`` (the order rotated each round)."""
    took = {name: 0.0 for name in conns}
    names = list(conns)
    done = 0
    while done < updates:
        n = min(block, updates - done)
        for name in names:
            took[name] += timed(lambda c=conns[name], d=done, k=n: autocommit(c, d, k))
        names = names[1:] + names[:1]
        done += n
    return took


def flushes_per_commit(conn: Any, commits: int = 50) -> str:
    """What one autocommit update asks for: page-store flushes and journal/WAL xSyncs."""
    from turso_dbapi._native import lib

    replica = getattr(conn, "_replica", None)
    before = replica.store.flushes() if replica is not None else None
    syncs = lib.tdb_vfs_passthrough_syncs()
    autocommit(conn, 0, commits)
    syncs = (lib.tdb_vfs_passthrough_syncs() - syncs) / commits
    if replica is None:
        return f"{syncs:.1f} xSync (journal or WAL, and the database file)"
    after = replica.store.flushes()
    d = {k: (after[k] - before[k]) / commits for k in after}
    return (f"{syncs:.1f} xSync (journal or WAL) + page store: local {d['local']:.1f}, synced "
            f"{d['synced']:.1f}, sidecar {d['map']:.1f} (the sidecar's beside the local layer's)")


def line(name: str, ours: float, other: float, other_name: str, unit: str = "s") -> None:
    print(f"{name:<56} {ours:10.3f} {unit:<6} vs {other_name:<22} {other:10.3f} {unit:<6} ratio {ours / other:6.2f}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--updates", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=10_000)
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-capture", action="store_true", help="only push and pull with rebase (2, 3)")
    a = ap.parse_args()
    if a.quick:
        a.rows, a.updates, a.changes = 20_000, 1_000, 2_000
    tmp = tempfile.mkdtemp(prefix="bench-sync-")
    server = Server(os.path.join(tmp, "server.db"))
    server.sql(SCHEMA)
    server.sql(SCHEMA.replace(" t(", " s("))
    server.sql(f"INSERT INTO s SELECT value, 'synced', 0 FROM generate_series(1, {SYNCED})")
    proxy = FaultProxy(server.url, latency=a.latency_ms / 1000).start()
    try:
        # 1. capture overhead ----------------------------------------------------------------
        if not a.no_capture:
            # rollback-journal replicas: asked for (journal_mode="delete"), WAL is the default
            with_cap = turso_dbapi.connect(proxy.base_url, local_path=os.path.join(tmp, "cap.db"),
                                           journal_mode="delete")
            without = turso_dbapi.connect(proxy.base_url, local_path=os.path.join(tmp, "nocap.db"),
                                          journal_mode="delete")
            drop_capture(without)
            # the same two in WAL mode (pyturso's mode, and a new replica's default): one
            # fsync a commit instead of the rollback journal's and the page store's several
            wal_cap = turso_dbapi.connect(proxy.base_url, local_path=os.path.join(tmp, "walcap.db"))
            wal_no = turso_dbapi.connect(proxy.base_url, local_path=os.path.join(tmp, "walnocap.db"))
            for c in (wal_cap, wal_no):
                assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            drop_capture(wal_no)
            peer = turso_sync.connect(os.path.join(tmp, "peer.db"), proxy.base_url)
            plain, plain_wal = (sqlite3.connect(os.path.join(tmp, name)) for name in ("plain.db", "plainwal.db"))
            assert plain_wal.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
            for c in (plain, plain_wal):  # the replicas' tables: t, and s with the synced rows
                c.execute(SCHEMA)
                c.execute(SCHEMA.replace(" t(", " s("))
                c.executemany("INSERT INTO s VALUES (?, 'synced', 0)", [(i,) for i in range(1, SYNCED + 1)])
                c.commit()
            conns = {"cap": with_cap, "no": without, "peer": peer, "wcap": wal_cap, "wno": wal_no,
                     "plain": plain, "plainwal": plain_wal}
            # a WAL replica whose connection has push_operations_threshold: no tails, every
            # insert logged with its transaction's mark (sync/tail.py EXACT BATCHES)
            exact = turso_dbapi.connect(proxy.base_url, local_path=os.path.join(tmp, "exact.db"),
                                        push_operations_threshold=1000)
            bulk = {name: bulk_best(c, a.rows) for name, c in conns.items()}
            bulk_exact = bulk_best(exact, a.rows)
            exact.close()
            auto = autocommit_interleaved(conns, a.updates)
            w_cap, w_no, w_peer, w_wcap, w_wno = ({"bulk": bulk[n], "auto": auto[n]} for n in
                                                   ("cap", "no", "peer", "wcap", "wno"))
            fold = fold_time(with_cap)
            print(f"capture overhead ({a.rows} rows bulk, {a.updates} autocommit updates)")
            line("  bulk insert: with capture", w_cap["bulk"], w_no["bulk"], "without capture")
            line("  bulk insert: with capture", w_cap["bulk"], w_peer["bulk"], "pyturso")
            line("  bulk insert + its fold at push: with capture", w_cap["bulk"] + fold, w_no["bulk"],
                 "without capture")
            line("  autocommit updates (journal_mode='delete'): with capture", w_cap["auto"], w_no["auto"],
                 "without capture")
            line("  autocommit updates (journal_mode='delete'): with capture", w_cap["auto"], w_peer["auto"],
                 "pyturso")
            line("  WAL replica, bulk insert: with capture", w_wcap["bulk"], w_wno["bulk"], "without capture")
            line("  WAL replica, bulk insert: with capture", w_wcap["bulk"], w_peer["bulk"], "pyturso")
            line("  WAL replica, threshold set (no tails), bulk insert", bulk_exact, w_wno["bulk"],
                 "without capture")
            line("  WAL replica (the default), autocommit updates: with capture", w_wcap["auto"], w_wno["auto"],
                 "without capture")
            line("  WAL replica (the default), autocommit updates: with capture", w_wcap["auto"], w_peer["auto"],
                 "pyturso")
            print(f"a replica's commit vs a plain file's ({a.updates} autocommit updates, stdlib sqlite3)")
            line("  rollback journal: replica with capture", auto["cap"], auto["plain"], "plain file")
            line("  rollback journal: replica without capture", auto["no"], auto["plain"], "plain file")
            line("  WAL: replica with capture", auto["wcap"], auto["plainwal"], "plain file, WAL")
            line("  WAL: replica without capture", auto["wno"], auto["plainwal"], "plain file, WAL")
            line("  plain file, rollback journal", auto["plain"], auto["peer"], "pyturso (WAL)")
            print("flushes of one autocommit update, counted")
            turso_dbapi.connect(":memory:").close()  # the VFS is registered
            for label, c in (("replica, rollback journal", with_cap), ("replica, WAL", wal_cap)):
                print(f"  {label:<36} {flushes_per_commit(c)}")
            for label, name in (("plain file, rollback journal", "plain.db"), ("plain file, WAL", "plainwal.db")):
                via = sqlite3.connect(f"file:{os.path.join(tmp, name)}?vfs=turso_dbapi", uri=True)
                print(f"  {label:<36} {flushes_per_commit(via)}")
                via.close()
            for c in conns.values():
                c.close()

        # 2. push throughput -------------------------------------------------------------------
        server.sql("CREATE TABLE p(id INTEGER PRIMARY KEY, name TEXT, v INTEGER)")
        ours = turso_dbapi.connect(proxy.base_url, local_path=os.path.join(tmp, "push-ours.db"))
        peer = turso_sync.connect(os.path.join(tmp, "push-peer.db"), proxy.base_url)
        ours.executemany("INSERT INTO p VALUES (?, ?, ?)", [(i, f"o{i}", i) for i in range(a.changes)])
        ours.commit()
        peer.execute("BEGIN")
        for i in range(a.changes):
            peer.execute("INSERT INTO p VALUES (?, ?, ?)", (a.changes + i, f"p{i}", i))
        peer.commit()
        t_ours = timed(ours.push)
        t_peer = timed(peer.push)
        print(f"push of {a.changes} row changes over a {a.latency_ms:g} ms proxy")
        line("  push rows/s: ours", a.changes / t_ours, a.changes / t_peer, "pyturso", "rows/s")

        # 3. pull with rebase --------------------------------------------------------------------
        ours.executemany("UPDATE p SET v = v + 1 WHERE id = ?", [(i,) for i in range(a.changes)])
        ours.commit()
        peer.execute("BEGIN")
        for i in range(a.changes):
            peer.execute("UPDATE p SET v = v + 1 WHERE id = ?", (a.changes + i,))
        peer.commit()
        server.sql("INSERT INTO p VALUES (-1, 'server', 0)")
        t_ours = timed(ours.pull)
        t_peer = timed(peer.pull)
        assert ours.execute("SELECT count(*) FROM p WHERE id = -1").fetchone()[0] == 1
        assert ours.execute("SELECT sum(v) FROM p WHERE id BETWEEN 0 AND ?", (a.changes - 1,)).fetchone()[0] \
            == sum(range(a.changes)) + a.changes
        print(f"pull with rebase of {a.changes} unpushed local changes over a {a.latency_ms:g} ms proxy")
        line("  pull with rebase: ours", t_ours, t_peer, "pyturso")
        print(f"  (ours: {ours.stats().pending_changes} changes still pending after the rebase, as expected)")
        ours.close()
        peer.close()
    finally:
        proxy.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
