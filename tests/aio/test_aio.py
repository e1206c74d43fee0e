"""``turso_dbapi.aio``: the aiosqlite-style API, a loop that never blocks on a page miss,
cancellation that interrupts and leaves the connection usable."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
from support.faultproxy import FaultProxy

import turso_dbapi
import turso_dbapi.aio as aio

ENDLESS = ("with recursive c(i) as (select 1 union all select i + 1 from c) "
           "select count(*) from c where i < 0")  # runs until interrupted


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_aiosqlite_style_api(tmp_path):
    async def main():
        async with aio.connect(str(tmp_path / "a.db")) as db:
            await db.execute("create table t(id integer primary key, name text)")
            await db.executemany("insert into t(name) values (?)", [(f"n{i}",) for i in range(200)])
            assert db.in_transaction
            await db.commit()
            assert not db.in_transaction
            async with db.execute("select id, name from t order by id") as cur:
                assert await cur.fetchone() == (1, "n0")
                assert len(await cur.fetchmany(10)) == 10
                rest = [row async for row in cur]
                assert len(rest) == 189 and rest[-1] == (200, "n199")
            await db.execute("delete from t")
            await db.rollback()
            assert await db.execute_fetchall("select count(*) from t") == [(200,)]
            db.row_factory = aio.Row
            row = await (await db.execute("select name from t where id = ?", (7,))).fetchone()
            assert row["name"] == "n6"
            db.row_factory = None
            cur = await db.cursor()
            await cur.executescript("create table u(x); insert into u values (1); insert into u values (2);")
            await cur.execute("select sum(x) from u")
            assert await cur.fetchall() == [(3,)] and cur.description[0][0] == "sum(x)"
            with pytest.raises(sqlite3.OperationalError, match="no such table"):
                await db.execute("select * from nope")
            with pytest.raises(turso_dbapi.NotSupportedError, match="needs a remote database"):
                await db.stats()
        await db.close()  # twice: a no-op
        with pytest.raises(turso_dbapi.ProgrammingError, match="closed"):
            await db.execute("select 1")

    run(main())


def test_iteration_fetches_rows_in_chunks(tmp_path):
    async def main():
        db = await aio.connect(":memory:", iter_chunk_size=50)
        await db.execute("create table t(x)")
        await db.executemany("insert into t values (?)", [(i,) for i in range(1000)])
        calls = []
        cur = await db.execute("select x from t")
        fetchmany = cur._cursor.fetchmany

        class Spy:  # count the thread round trips of the iteration
            def __getattr__(self, name):
                return getattr(cur._cursor, name)

            def fetchmany(self, n):
                calls.append(n)
                return fetchmany(n)

        cur._cursor = Spy()
        assert sum([1 async for _ in cur]) == 1000
        assert calls == [50] * 21  # 20 full chunks and the empty one that ends it
        await db.close()

    run(main())


def test_cancelling_a_query_interrupts_it_and_the_connection_stays_usable():
    async def main():
        async with aio.connect(":memory:") as db:
            await db.execute("create table t(x)")
            task = asyncio.ensure_future(db.execute_fetchall(ENDLESS))
            await asyncio.sleep(0.2)  # the statement is running on the thread
            t0 = time.perf_counter()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.perf_counter() - t0 < 2.0  # interrupted, not run to its end (never)
            # the thread is free again: without interrupt() this would wait forever
            assert await asyncio.wait_for(db.execute_fetchall("select 42"), 5) == [(42,)]
            await db.execute("insert into t values (1)")
            await db.commit()
            assert await db.execute_fetchall("select count(*) from t") == [(1,)]

    run(main())


def test_cancelling_a_queued_call_never_runs_it():
    async def main():
        async with aio.connect(":memory:") as db:
            await db.execute("create table t(x)")
            await db.commit()
            busy = asyncio.ensure_future(db.execute_fetchall(ENDLESS))
            await asyncio.sleep(0.1)
            queued = asyncio.ensure_future(db.execute("insert into t values (1)"))
            await asyncio.sleep(0.05)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            busy.cancel()
            with pytest.raises(asyncio.CancelledError):
                await busy
            assert await db.execute_fetchall("select count(*) from t") == [(0,)]

    run(main())


@pytest.fixture
def slow_proxy(nginx):
    proxy = FaultProxy(nginx.base_url, latency=0.3).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_concurrent_coroutines_on_a_slow_remote_keep_the_loop_responsive(slow_proxy, served_databases, tmp_path):
    """40 coroutines on 4 connections, each miss 300 ms away: the loop's worst scheduling
    delay stays far below one miss (a driver blocking the loop would show >= 300 ms)."""
    url = slow_proxy.url(served_databases["p4096"].rsplit("/", 1)[1])
    ref = {}

    async def main():
        conns = [await aio.connect(url, partial=True, local_path=str(tmp_path / f"r{i}.db"), segment_size=4096)
                 for i in range(4)]
        worst = 0.0
        done = False

        async def ticker():
            nonlocal worst
            while not done:
                t0 = time.perf_counter()
                await asyncio.sleep(0.005)
                worst = max(worst, time.perf_counter() - t0 - 0.005)

        async def lookup(i):
            db = conns[i % 4]
            rows = await db.execute_fetchall("select name from items where id = ?", (i * 37 + 1,))
            ref[i] = rows

        tick = asyncio.ensure_future(ticker())
        t0 = time.perf_counter()
        await asyncio.gather(*(lookup(i) for i in range(40)))
        elapsed = time.perf_counter() - t0
        done = True
        await tick
        misses = sum([(await db.stats()).requests for db in conns]) - 4  # minus each open()
        for db in conns:
            await db.close()
        return worst, elapsed, misses

    worst, elapsed, misses = run(main())
    assert [ref[i] for i in range(40)] == [[(f"item-{i * 37 + 1:08d}",)] for i in range(40)]
    assert worst < 0.15, f"the event loop was blocked for {worst * 1000:.0f} ms"
    print(f"worst loop delay {worst * 1000:.1f} ms, {misses} misses, {elapsed:.2f} s")
    assert misses >= 8  # the lookups really went to the network
    assert elapsed < misses * 0.3 * 0.75  # and connections waited on it at the same time


def test_cancelling_during_a_remote_miss_leaves_the_connection_usable(slow_proxy, served_databases, tmp_path):
    url = slow_proxy.url(served_databases["p4096"].rsplit("/", 1)[1])

    async def main():
        async with aio.connect(url, partial=True, local_path=str(tmp_path / "r.db"), segment_size=4096) as db:
            task = asyncio.ensure_future(db.execute_fetchall("select sum(length(body)) from docs"))
            await asyncio.sleep(0.1)  # waiting on its first miss
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            rows = await db.execute_fetchall("select name from items where id = 5")
            assert rows == [("item-00000005",)]
            assert (await db.stats()).last_error is None

    run(main())


def test_remote_errors_are_the_drivers(nginx, tmp_path):
    async def main():
        with pytest.raises(turso_dbapi.RemoteError, match="404"):
            await aio.connect(nginx.url("missing.db"), partial=True, local_path=str(tmp_path / "m.db"))

    run(main())


def test_pull_push_and_stats_on_a_turso_replica(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    turso_server.db_sql("INSERT INTO t VALUES (1, 10)")

    async def main():
        async with aio.connect(turso_server.url, local_path=str(tmp_path / "r.db")) as db:
            assert await db.execute_fetchall("select v from t") == [(10,)]
            turso_server.db_sql("UPDATE t SET v = 11")
            assert await db.pull() is True
            assert await db.execute_fetchall("select v from t") == [(11,)]
            await db.execute("insert into t values (2, 20)")
            await db.commit()
            await db.push()
            assert (await db.stats()).url

    run(main())
    assert turso_server.db_sql("SELECT id, v FROM t ORDER BY id") == [["1", "11"], ["2", "20"]]


def test_each_connection_has_its_own_thread_and_it_ends_on_close():
    async def main():
        before = threading.active_count()
        a = await aio.connect(":memory:")
        b = await aio.connect(":memory:")
        names = await asyncio.gather(a.run(lambda c: threading.current_thread().name),
                                     b.run(lambda c: threading.current_thread().name))
        assert threading.active_count() == before + 2
        assert threading.current_thread().name not in names
        await a.close()
        await b.close()
        a._worker.join(5)
        b._worker.join(5)
        assert threading.active_count() == before

    run(main())


def test_a_job_cancelled_before_its_statement_starts_is_still_interrupted():
    """worker.py rule (5): SQLite forgets an interrupt that lands before a statement's first
    step; the job runs on its thread for 0.2 s first, so the cancel lands there."""
    async def main():
        async with aio.connect(":memory:") as db:
            job = asyncio.ensure_future(db.run(lambda c: (time.sleep(0.2), c.execute(ENDLESS).fetchall())))
            await asyncio.sleep(0.05)  # running: in its sleep, no statement yet
            t0 = time.perf_counter()
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(job, 10)
            assert time.perf_counter() - t0 < 2
            assert await db.execute_fetchall("select 1") == [(1,)]  # idle and usable

    run(main())


def test_a_result_never_waits_for_the_next_job_on_the_thread():
    async def main():
        async with aio.connect(":memory:") as db:
            fast = asyncio.ensure_future(db.execute_fetchall("select 1"))
            slow = asyncio.ensure_future(db.execute_fetchall(ENDLESS))  # queued right behind it
            assert await asyncio.wait_for(fast, 5) == [(1,)]  # delivered while the slow one runs
            assert not slow.done()
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow

    run(main())
