"""asyncio throughput: 100 concurrent point selects on warm replicas, ``turso_dbapi.aio``
vs the sync API on threads.

A generated database is served by nginx and opened as ``--connections`` replicas (whole
file fetched up front: every page is local, so this measures the API, not the network).
One round = 100 point selects by random id, all in flight at once:
  * aio:  100 coroutines on one event loop, spread over the aio connections
          (``await db.execute_fetchall(...)``);
  * sync: 100 tasks on a ThreadPoolExecutor with one thread per connection
          (``con.execute(...).fetchall()`` on the thread's own connection).
Reports selects per second (best of ``--repeat`` runs of ``--rounds`` rounds) and the
ratio aio/sync (goal >= 0.9).

    python benchmarks/bench_aio.py [--quick] [--connections 4] [--rounds 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
from _util import best_of, report  # noqa: E402
from support.databases import make_database  # noqa: E402
from support.nginx import NginxServer  # noqa: E402

import turso_dbapi  # noqa: E402
import turso_dbapi.aio  # noqa: E402

QUERY = "SELECT name, price FROM items WHERE id = ?"
PER_ROUND = 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="10 rounds, best of 3")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.repeat = 10, 3
    rng = random.Random(0)
    ids = [[rng.randint(1, 2000) for _ in range(PER_ROUND)] for _ in range(args.rounds)]
    n = args.connections

    with tempfile.TemporaryDirectory(prefix="tdb-bench-aio-") as tmp, \
            NginxServer(os.path.join(tmp, "nginx")) as nginx:
        nginx.place("app.db", make_database(os.path.join(tmp, "app.db"), rows=2000))
        url = nginx.url("app.db")
        for name in ("sync.db", "aio.db"):  # each replica fetched whole once, before timing
            turso_dbapi.connect(url, local_path=os.path.join(tmp, name)).close()

        # -- sync API on threads: one connection per thread --------------------------------
        local = threading.local()
        made = []

        def sync_select(i: int) -> list:
            con = getattr(local, "con", None)
            if con is None:
                con = local.con = turso_dbapi.connect(url, local_path=os.path.join(tmp, "sync.db"),
                                                      check_same_thread=False)
                made.append(con)
            return con.execute(QUERY, (i,)).fetchall()

        pool = ThreadPoolExecutor(n)
        list(pool.map(sync_select, range(1, 200)))  # every thread's connection made and warm

        def sync_run() -> None:
            for batch in ids:
                for fut in [pool.submit(sync_select, i) for i in batch]:
                    fut.result()

        # -- aio: coroutines on one loop, kept between runs ---------------------------------
        loop = asyncio.new_event_loop()

        async def aio_open() -> list:
            conns = [await turso_dbapi.aio.connect(url, local_path=os.path.join(tmp, "aio.db")) for _ in range(n)]
            for db in conns:
                await db.execute_fetchall(QUERY, (1,))
            return conns

        conns = loop.run_until_complete(aio_open())

        async def aio_rounds() -> None:
            for batch in ids:
                await asyncio.gather(*(conns[k % n].execute_fetchall(QUERY, (i,)) for k, i in enumerate(batch)))

        # Interleaved (sync, aio, sync, aio, ...), best of each: a shared machine's load
        # changes over seconds and must not land on one side only.
        sync_s = aio_s = float("inf")
        for _ in range(args.repeat):
            sync_s = min(sync_s, best_of(sync_run, 1))
            aio_s = min(aio_s, best_of(lambda: loop.run_until_complete(aio_rounds()), 1))

        async def aio_close() -> None:
            for db in conns:
                await db.close()

        loop.run_until_complete(aio_close())
        loop.close()
        pool.shutdown()
        for con in made:
            con.close()

    total = args.rounds * PER_ROUND
    print(f"{total} point selects in rounds of {PER_ROUND} concurrent, {n} connections, warm replicas")
    report("sync API on threads (selects/s)", total / sync_s, "1/s")
    report("turso_dbapi.aio (selects/s)", total / aio_s, "1/s", sync_s / aio_s, "sync on threads")


if __name__ == "__main__":
    main()
