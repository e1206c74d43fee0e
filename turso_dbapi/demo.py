"""The main job in one command: ``python -m turso_dbapi.demo``.

It generates a database, serves it with the reference server (Turso sync protocol and
plain HTTP ranges on one port), then opens it lazily both ways and runs a few queries,
printing what each fetched — requests and bytes — next to the size of the database. At
the end it writes on the server and shows ``pull()`` bringing the change in, then writes on
the replica, ``push()``es it and shows a second replica seeing it (and the way back with
``sync()``).

Everything lives in a temporary directory that is removed afterwards (``--keep DIR`` to
keep it). Nothing leaves the loopback interface.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Any, Callable, List, Tuple

import turso_dbapi
from turso_dbapi.server import ReferenceServer


def generate(path: str, rows: int, seed: int = 7) -> None:
    """A deterministic 'events' database with an index: ~300 bytes per row."""
    rnd = random.Random(seed)
    con = sqlite3.connect(path)
    con.execute("pragma page_size = 4096")  # the Turso protocol's page size
    con.execute(
        "create table events(id integer primary key, user_id integer, kind text, "
        "created_at text, payload text)"
    )
    kinds = ["click", "view", "purchase", "signup", "logout"]
    con.executemany(
        "insert into events values (?, ?, ?, ?, ?)",
        (
            (
                i,
                rnd.randrange(rows // 20 + 1),
                rnd.choice(kinds),
                f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz ", k=240)),
            )
            for i in range(1, rows + 1)
        ),
    )
    con.execute("create index events_user on events(user_id)")
    con.commit()
    con.execute("vacuum")
    con.close()


def _stat(con: Any, *names: str) -> int:
    s = con.stats()
    for name in names:
        value = getattr(s, name, None)
        if value is not None:
            return int(value)
    raise KeyError(names)


QUERIES: List[Tuple[str, str, tuple]] = [
    (
        "point lookup by primary key",
        "select id, kind, created_at from events where id = ?",
        (4242,),
    ),
    (
        "indexed range (one user)",
        "select count(*), min(created_at) from events where user_id = ?",
        (17,),
    ),
    ("same point lookup again", "select id, kind, created_at from events where id = ?", (4242,)),
    ("full scan aggregate", "select kind, count(*) from events group by kind order by kind", ()),
]


def run_queries(
    title: str, connect: Callable[[], Any], db_bytes: int, out: Callable[[str], None]
) -> None:
    out(f"\n{title}")
    t0 = time.perf_counter()
    con = connect()
    opened_ms = (time.perf_counter() - t0) * 1000
    req0 = _stat(con, "requests")
    byt0 = _stat(con, "bytes_received", "network_received_bytes")
    out(f"  {'open':<32} {req0:>5} req {byt0:>11,} B  {opened_ms:8.1f} ms")
    for label, sql, args in QUERIES:
        r0, b0 = _stat(con, "requests"), _stat(con, "bytes_received", "network_received_bytes")
        t0 = time.perf_counter()
        rows = con.execute(sql, args).fetchall()
        ms = (time.perf_counter() - t0) * 1000
        r1, b1 = _stat(con, "requests"), _stat(con, "bytes_received", "network_received_bytes")
        shown = rows[0] if len(rows) == 1 else f"{len(rows)} rows"
        out(f"  {label:<32} {r1 - r0:>5} req {b1 - b0:>11,} B  {ms:8.1f} ms   -> {shown}")
    total = _stat(con, "bytes_received", "network_received_bytes")
    out(
        f"  {'total':<32} {_stat(con, 'requests'):>5} req {total:>11,} B"
        f"  = {100.0 * total / db_bytes:.1f}% of the {db_bytes:,}-byte database"
    )
    con.close()


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m turso_dbapi.demo", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "--rows", type=int, default=100_000, help="rows in the generated table (default 100000)"
    )
    ap.add_argument(
        "--keep", metavar="DIR", help="work in DIR and keep it instead of a temporary directory"
    )
    args = ap.parse_args(argv)
    out = print

    work = args.keep or tempfile.mkdtemp(prefix="turso_dbapi_demo_")
    os.makedirs(work, exist_ok=True)
    try:
        db = os.path.join(work, "events.db")
        if os.path.exists(db):
            os.remove(db)
        t0 = time.perf_counter()
        generate(db, args.rows)
        size = os.path.getsize(db)
        out(
            f"generated {db}: {args.rows:,} rows, {size:,} bytes in {time.perf_counter() - t0:.1f} s"
        )

        with ReferenceServer(db) as server:
            out(f"reference server on {server.url} (Turso sync protocol + HTTP ranges)")

            run_queries(
                "Turso sync protocol, partial=True (POST /pull-updates for missing pages)",
                lambda: turso_dbapi.connect(
                    server.url, partial=True, local_path=os.path.join(work, "turso-replica.db")
                ),
                size,
                out,
            )
            run_queries(
                "HTTP Range requests, partial=True (GET with Range: bytes=...)",
                lambda: turso_dbapi.connect(
                    f"{server.url}/events.db",
                    partial=True,
                    local_path=os.path.join(work, "range-cache.db"),
                ),
                size,
                out,
            )

            out("\npull(): a row written on the server reaches the Turso replica")
            con = turso_dbapi.connect(os.path.join(work, "turso-replica.db"))
            before = con.execute("select count(*) from events").fetchone()[0]
            server.db.run_pipeline(
                {
                    "requests": [
                        {
                            "type": "execute",
                            "stmt": {
                                "sql": (
                                    "insert into events(user_id, kind, created_at, payload) "
                                    "values (1, 'demo', '2026-11-25', 'written on the server')"
                                )
                            },
                        }
                    ]
                }
            )
            changed = con.pull()
            after = con.execute("select count(*) from events").fetchone()[0]
            out(f"  rows before {before:,}, pull() -> {changed}, rows after {after:,}")

            out("\npush(): a write on this replica reaches a second replica")
            con.execute("insert into events(user_id, kind, created_at, payload) "
                        "values (2, 'demo', '2026-11-26', 'written on replica 1')")
            con.commit()
            pushed = con.push()
            out(f"  replica 1 pushed {pushed.rows} row change(s) in {pushed.batches} batch(es)")
            second = turso_dbapi.connect(server.url, partial=True,
                                         local_path=os.path.join(work, "second-replica.db"))
            seen = second.execute("select payload from events where kind = 'demo' order by created_at").fetchall()
            out(f"  replica 2 sees: {[r[0] for r in seen]}")
            second.execute("update events set payload = 'edited on replica 2' where created_at = '2026-11-26'")
            second.commit()
            second.sync()  # push, then pull
            con.sync()
            edited = con.execute("select payload from events where created_at = '2026-11-26'").fetchone()[0]
            out(f"  replica 2 edits and syncs; replica 1 syncs and sees: {edited!r}")
            second.close()
            con.close()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
