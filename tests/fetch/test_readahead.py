"""B-tree child pointers, single-flight and the background look-ahead (pure logic; real databases)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support._threads import run_threads
from support.databases import make_database

from turso_dbapi.fetch.btree_readahead import btree_children, missing_children
from turso_dbapi.fetch.access import AccessPolicy
from turso_dbapi.fetch.btree_readahead import BtreeMap
from turso_dbapi.fetch.readahead import SingleFlight

KB = 1024


def _absent(_p: int) -> bool:
    return False


def _segments(pages, seg):
    return {(p - 1) // seg for p in pages}


# -- B-tree children ---------------------------------------------------------------------


def _dbstat_children(path: Path):
    """Oracle: interior page -> children in cell order, from SQLite's own dbstat table."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT name, path, pageno, pagetype FROM dbstat").fetchall()
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat")
    finally:
        con.close()
    by_path = {(name, path): (pgno, kind) for name, path, pgno, kind in rows}  # paths are per B-tree
    kids: dict = {}
    for (name, p), (pgno, kind) in by_path.items():
        if kind == "overflow" or p == "/":
            continue
        parent = p.rsplit("/", 2)[0] + "/"
        kids.setdefault(by_path[(name, parent)][0], []).append((p, pgno))
    interior = {pgno for pgno, kind in by_path.values() if kind == "internal"}
    return {pg: [c for _, c in sorted(kids.get(pg, []))] for pg in interior}


@pytest.mark.parametrize("name", ["p1024", "p4096", "p65536", "wal"])
def test_btree_children_match_sqlite_dbstat_for_every_interior_page(databases, name):
    path = databases[name]
    data = Path(path).read_bytes()
    expected = _dbstat_children(path)
    ps = int.from_bytes(data[16:18], "big")
    ps = 65536 if ps == 1 else ps
    assert expected, "the generated database should have interior pages"
    for pgno in range(1, len(data) // ps + 1):
        page = data[(pgno - 1) * ps:pgno * ps]
        got = btree_children(page, pgno, ps)
        if pgno in expected:
            assert got == expected[pgno], pgno
        else:
            assert got == [] or page[0 if pgno != 1 else 100] in (2, 5), pgno


def test_page_one_interior_children_skip_the_100_byte_file_header(tmp_path):
    path = tmp_path / "wide_schema.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA page_size=1024")
    for i in range(150):
        con.execute(f"CREATE TABLE table_with_a_rather_long_name_{i:04d}(a, b, c, d)")
    con.commit()
    con.close()
    data = path.read_bytes()
    assert data[100] == 0x05, "sqlite_schema root (page 1) should be an interior table page"
    expected = _dbstat_children(path)
    assert btree_children(data[:1024], 1, 1024) == expected[1]
    assert all(1 < c <= len(data) // 1024 for c in expected[1])


def test_missing_children_filters_present_and_out_of_file_pages(databases):
    data = Path(databases["p1024"]).read_bytes()
    n = len(data) // 1024
    for pgno in range(1, n + 1):
        kids = btree_children(data[(pgno - 1) * 1024:pgno * 1024], pgno, 1024)
        if len(kids) > 3:
            present = set(kids[:2])
            got = missing_children(data[(pgno - 1) * 1024:pgno * 1024], pgno, 1024, n, present.__contains__)
            assert got == sorted(kids[2:])
            assert missing_children(data[(pgno - 1) * 1024:pgno * 1024], pgno, 1024, min(kids) - 1, _absent) == []
            return
    pytest.fail("no interior page with more than 3 children")


@settings(max_examples=300, deadline=None)
@given(page=st.binary(max_size=600), pgno=st.integers(1, 5), kind=st.sampled_from([0, 2, 5, 10, 13]))
def test_btree_children_never_raises_on_malformed_pages(page, pgno, kind):
    buf = bytearray(page)
    if len(buf) > 100:
        buf[100 if pgno == 1 else 0] = kind
    got = btree_children(bytes(buf), pgno, 512)
    assert isinstance(got, list) and all(isinstance(c, int) and c >= 1 for c in got)


def test_btree_children_rejects_leaf_truncated_and_zero_pointer_pages():
    page = bytearray(1024)
    page[0] = 0x05
    page[3:5] = (1).to_bytes(2, "big")
    page[8:12] = (9).to_bytes(4, "big")
    page[12:14] = (1000).to_bytes(2, "big")
    page[1000:1004] = (7).to_bytes(4, "big")
    assert btree_children(bytes(page), 2, 1024) == [7, 9]
    assert btree_children(bytes(page[:500]), 2, 1024) == []  # cell past the end
    page[1000:1004] = (0).to_bytes(4, "big")
    assert btree_children(bytes(page), 2, 1024) == []
    page[0] = 0x0D
    assert btree_children(bytes(page), 2, 1024) == []


# -- single-flight -----------------------------------------------------------------------


def test_overlapping_concurrent_fetches_share_pages_in_flight():
    sf = SingleFlight()
    calls = []
    release = threading.Event()
    first_started = threading.Event()

    def fetch_fn(pages):
        calls.append(list(pages))
        if not first_started.is_set():
            first_started.set()
            assert release.wait(5)
        return {p: bytes([p % 256]) * 4 for p in pages}

    results = {}

    def run(name, pages):
        results[name] = sf.fetch(pages, fetch_fn)

    a = threading.Thread(target=run, args=("a", [1, 2, 3, 4]))
    a.start()
    assert first_started.wait(5)
    b = threading.Thread(target=run, args=("b", [3, 4, 5, 6]))
    b.start()
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert calls == [[1, 2, 3, 4], [5, 6]]  # b fetched only what nobody was fetching
    assert b.is_alive()  # and waits for pages 3, 4
    release.set()
    a.join(5)
    b.join(5)
    assert sorted(results["a"]) == [1, 2, 3, 4]
    assert sorted(results["b"]) == [3, 4, 5, 6]
    assert results["b"][3] == bytes([3]) * 4
    assert sf.shared_pages == 2 and sf.in_flight() == set()


def test_a_failed_shared_fetch_fails_every_waiter_and_clears_the_flight():
    sf = SingleFlight()
    started, release = threading.Event(), threading.Event()

    def failing(pages):
        started.set()
        release.wait(5)
        raise OSError("boom")

    errors = []

    def run(fn, pages):
        try:
            sf.fetch(pages, fn)
        except OSError as exc:
            errors.append(exc)

    a = threading.Thread(target=run, args=(failing, [1, 2]))
    a.start()
    assert started.wait(5)
    b = threading.Thread(target=run, args=(lambda pages: {p: b"x" for p in pages}, [2]))
    b.start()
    time.sleep(0.05)
    release.set()
    a.join(5)
    b.join(5)
    assert len(errors) == 2
    assert sf.in_flight() == set()
    assert sf.fetch([1, 2], lambda pages: {p: b"y" for p in pages}) == {1: b"y", 2: b"y"}


def test_threads_missing_through_readahead_and_single_flight_get_the_file_bytes(tmp_path):
    path = make_database(tmp_path / "sf.db", page_size=1024, rows=200, seed=9)
    data = path.read_bytes()
    n = len(data) // 1024
    sf, ra = SingleFlight(), AccessPolicy(1024, 8 * KB, 64 * KB, BtreeMap(1024))
    store: dict = {}
    lock = threading.Lock()
    errors = []

    def fetch_fn(pages):
        time.sleep(0.002)
        got = {p: data[(p - 1) * 1024:p * 1024] for p in pages}
        with lock:  # like the page store: written before the flight completes
            store.update(got)
        return got

    def reader(seed: int) -> None:
        try:
            for i in range(60):
                pgno = (seed * 31 + i * 7) % n + 1
                if pgno in store:
                    continue
                got = sf.fetch(ra.plan(pgno, n, store.__contains__), fetch_fn)
                assert got[pgno] == data[(pgno - 1) * 1024:pgno * 1024]
        except BaseException as exc:
            errors.append(exc)

    run_threads(reader, [(k,) for k in range(4)], timeout=30)
    assert errors == []
    assert store and all(store[p] == data[(p - 1) * 1024:p * 1024] for p in store)
    assert sf.in_flight() == set()


# -- rules (6)/(7): scans across interleaved B-trees ------------------------------------------

from turso_dbapi.fetch.btree_readahead import BtreeSiblings  # noqa: E402
from turso_dbapi.fetch.readahead import Lookahead  # noqa: E402


# -- Lookahead ----------------------------------------------------------------------------------

class _FakeStore:
    def __init__(self, n, fail=False, delay=0.0):
        self.n = n
        self.present = set()
        self.held = {}
        self.calls = []
        self.fail = fail
        self.delay = delay
        self.lock = threading.Lock()
        self.la = None
        self.started = threading.Event()

    def fetch(self, pages, hold):
        self.started.set()
        time.sleep(self.delay)
        with self.lock:
            self.calls.append((pages[0], pages[-1], len(pages), hold))
        if self.fail:
            raise OSError("network down")
        for p in pages:
            if p == hold and self.la.keep(p, b"%d" % p):
                continue
            with self.lock:
                self.present.add(p)


def _lookahead(store, max_pages=100, depth=2, in_flight=set):
    la = Lookahead(store.fetch, store.present.__contains__, in_flight, lambda: store.n, max_pages, depth=depth)
    store.la = la
    return la


def _drain(la):
    pool = la._pool
    if pool is not None:
        pool.shutdown(wait=True)
        la._pool = None


def test_lookahead_schedules_depth_full_windows_and_holds_their_first_page():
    store = _FakeStore(10000)
    la = _lookahead(store)
    la.start(201, 50)
    _drain(la)
    assert sorted(store.calls) == [(201, 300, 100, 201), (301, 400, 100, 301)]
    assert 201 not in store.present and 202 in store.present  # the tripwire is held, not stored
    assert la.take([201, 202]) == {201: b"201"}
    la.advance(201)  # the reader reached the first window: one more window
    _drain(la)
    assert sorted(store.calls)[-1] == (401, 500, 100, 401)
    assert la.stats()["lookahead_tripped"] == 1 and la.last_scheduled() == 500


def test_lookahead_skips_present_in_flight_and_held_pages_and_stops_at_the_end():
    store = _FakeStore(350)
    store.present.update(range(220, 230))
    la = _lookahead(store, in_flight=lambda: {250})
    la.start(201, 100)
    _drain(la)
    fetched = list(store.calls)
    assert all(n <= 100 for _first, _last, n, _hold in fetched)
    for p in range(201, 351):
        if p in range(220, 230) or p == 250:
            continue
        assert p in store.present or p in la._held, p
    assert la.last_scheduled() == 350
    la.advance(301)  # past the end: nothing new
    _drain(la)
    assert len(store.calls) == len(fetched)


def test_lookahead_errors_are_counted_never_raised_and_close_stops_it():
    store = _FakeStore(10000, fail=True)
    la = _lookahead(store)
    la.start(1, 100)
    _drain(la)
    assert la.stats()["lookahead_errors"] == 2 and la.take(range(1, 300)) == {}
    slow = _FakeStore(10000, delay=0.2)
    la2 = _lookahead(slow, depth=1)
    la2.start(1, 100)
    assert slow.started.wait(10)  # the fetch is running (a loaded machine may take a while)
    la2.close()  # waits for the running fetch: it has finished when close returns
    assert len(slow.calls) == 1
    assert la2._held == {}
    la2.start(5000, 100)  # closed: nothing more
    la2.advance(150)
    assert len(slow.calls) == 1 and la2._pool is None


def test_lookahead_a_far_start_restarts_the_scan_there():
    store = _FakeStore(100000)
    la = _lookahead(store)
    la.start(201, 100)
    la.start(50001, 100)
    _drain(la)
    assert sorted(c[0] for c in store.calls) == [201, 301, 50001, 50101]


# -- BtreeSiblings (prefetch=True) --------------------------------------------------------------

def test_siblings_join_the_plan_only_when_the_level_is_walked_in_order(databases):
    data = Path(databases["p1024"]).read_bytes()
    n = len(data) // 1024
    kids_of = _dbstat_children(databases["p1024"])
    parent, kids = max(kids_of.items(), key=lambda kv: len(kv[1]))
    assert len(kids) >= 6
    sib = BtreeSiblings(1024, limit=3)
    sib.note(parent, data[(parent - 1) * 1024:parent * 1024])
    present = set()
    # a point lookup: a child whose previous sibling was never read -> nothing extra
    assert sib.plan(kids[3], n, present.__contains__, lambda p: True, set()) == []
    # a walk in cell order: the previous sibling was read -> the next missing siblings, bounded
    present.add(kids[2])
    extra = sib.plan(kids[3], n, present.__contains__, lambda p: True, set())
    assert extra == [k for k in kids[4:7]][:3]
    # prefetched-but-unread previous sibling does not count as a walk
    assert sib.plan(kids[3], n, present.__contains__, lambda p: False, set()) == []
    # pages already in the plan or present are not added twice
    present.add(kids[4])
    assert kids[4] not in sib.plan(kids[3], n, present.__contains__, lambda p: True, {kids[5]})
    assert kids[5] not in sib.plan(kids[3], n, present.__contains__, lambda p: True, {kids[5]})
    # a leaf records nothing
    leaf = kids[0]
    sib.note(leaf, data[(leaf - 1) * 1024:leaf * 1024])
    assert sib.plan(leaf + 10 ** 6, n, present.__contains__, None, set()) == []


def test_a_reader_waiting_on_a_failed_speculative_fetch_fetches_the_pages_itself():
    sf = SingleFlight()
    started = threading.Event()
    release = threading.Event()
    calls = []

    def speculative_fn(pages):
        calls.append(("spec", list(pages)))
        started.set()
        release.wait(5)
        raise OSError("background window failed")

    def reader_fn(pages):
        calls.append(("reader", list(pages)))
        return {p: b"%d" % p for p in pages}

    errors = []

    def background():
        try:
            sf.fetch([1, 2, 3, 4], speculative_fn, speculative=True)
        except OSError as exc:
            errors.append(exc)

    t = threading.Thread(target=background)
    t.start()
    assert started.wait(5)
    result = {}
    r = threading.Thread(target=lambda: result.update(sf.fetch([2, 3, 9], reader_fn)))
    r.start()
    time.sleep(0.05)
    release.set()
    t.join(5)
    r.join(5)
    assert len(errors) == 1  # the speculative caller sees its own failure (the lookahead counts it)
    assert result == {2: b"2", 3: b"3", 9: b"9"}  # the reader never fails for it
    assert ("reader", [9]) in calls and ("reader", [2, 3]) in calls
    assert sf.in_flight() == set()


def test_a_scan_reader_waits_only_for_its_own_window_and_the_next_goes_out_before_it_waits(tmp_path):
    """fetch/miss.py (M1)/(M2), through SQLite: the first background window of a scan is
    slow and the second is held back. The reader, missing the first while it is in flight,
    reads its pages as soon as it arrives (M2: it used to wait for every window its plan
    touched, the held one too), and while it waits for the held one, the window after it
    has been asked for (M1: it used to be scheduled after the wait)."""
    from turso_dbapi.fetch.miss import MissHandler
    from turso_dbapi.sources.file import FileSource
    from turso_dbapi.storage import pagestore
    from turso_dbapi.storage.vfs import ensure_registered, replica_uri

    src = make_database(tmp_path / "src.db", rows=6000)
    ensure_registered()
    source = FileSource(src)
    source.pinned_pages = True  # a file nobody writes meanwhile: background windows may run
    source.open()
    store = pagestore.open_store(str(tmp_path / "r" / "db"), page_size=source.page_size, size=source.size,
                                 identity=pagestore.identity_of(str(src), source.version, source.page_size,
                                                                source.size))
    release = threading.Event()
    windows: list = []  # first page of each background fetch, in the order they were asked
    scheduled: list = []  # background windows scheduled while the first one was in flight
    fetch = source.fetch

    first_fetched = threading.Event()  # the first window's pages came back
    first_pages: list = []

    both = threading.Barrier(2)  # the first two windows go out together (depth 2, two threads)
    lock = threading.Lock()

    def rank(first: int) -> int:
        """Place of a window in page order among the first two: which thread calls first is
        a race, so the slow one is the lower window and the held one the higher."""
        with lock:
            windows.append(first)
            nth = len(windows)
        if nth > 2:
            return nth
        try:
            both.wait(5)
        except threading.BrokenBarrierError:  # only one window went out at first
            return nth
        return 1 + sorted(windows[:2]).index(first)

    def gated(pgnos):
        if threading.current_thread().name.startswith("tdb-lookahead"):
            nth = rank(min(pgnos))
            if nth == 1:
                time.sleep(0.5)  # the reader reaches the first window while it is in flight
                scheduled.append(handler.lookahead.windows)  # windows asked for meanwhile
                first_pages.extend(pgnos)
                try:
                    return fetch(pgnos)
                finally:
                    first_fetched.set()
            elif nth == 2:
                assert release.wait(90), "never released"  # longer than the test's waits
        return fetch(pgnos)

    source.fetch = gated
    handler = MissHandler(store, source)
    con = sqlite3.connect(replica_uri(store.path, store.attach(handler)), uri=True, check_same_thread=False)
    done = []
    reader = threading.Thread(target=lambda: done.append(
        con.execute("SELECT count(*), sum(length(payload)) FROM items").fetchone()))
    reader.start()
    try:
        deadline = time.monotonic() + 30  # every wait ends as soon as it holds (a loaded CI is slow)

        def wait_for(condition) -> None:
            while time.monotonic() < deadline and not condition():
                time.sleep(0.01)

        wait_for(lambda: len(windows) >= 3)
        assert len(windows) >= 3, windows  # the third window went out while the second is held
        assert scheduled and scheduled[0] >= 3, scheduled  # (M1) asked before the reader's wait ended
        # (the third window can go out before the first is stored)
        assert first_fetched.wait(max(0.0, deadline - time.monotonic()))
        wait_for(lambda: all(store.is_present(p) for p in first_pages))
        mine = [p for p in first_pages if store.is_present(p)]  # the first window's pages
        wait_for(lambda: all(store.was_read(p) for p in mine))
        assert mine and all(store.was_read(p) for p in mine)  # (M2) read while the second is held
        assert not done
    finally:
        release.set()
        reader.join(20)
    assert done == [sqlite3.connect(src).execute("SELECT count(*), sum(length(payload)) FROM items").fetchone()]
    handler.close()
    con.close()
