"""The turso_dbapi VFS over the page store, fed by a FileSource (no network).

Every test builds its replica under tmp_path and compares with plain sqlite3 on the
source file. Invariants are in the test names.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import turso_dbapi
from turso_dbapi.storage.callbacks import take_error
from turso_dbapi.errors import RemoteError
from turso_dbapi.replica.range_cache import connect_range
from turso_dbapi.sources.file import FileSource
from turso_dbapi.storage.vfs import ensure_registered
from turso_dbapi.url import parse_options, with_defaults

from support._lazy_replica import QUERIES, Lazy
from support._threads import run_threads

ROOT = Path(__file__).resolve().parents[2]  # the checkout (tests/<room>/this file)

def _rows(con: sqlite3.Connection, sql: str):
    return con.execute(sql).fetchall()


@pytest.mark.parametrize("name", ["p1024", "p4096", "p65536", "wal"])
def test_results_equal_plain_sqlite3_for_every_page_size_and_wal(databases, tmp_path, name):
    lazy = Lazy(databases[name], tmp_path)
    con = lazy.connect()
    ref = sqlite3.connect(databases[name])
    for sql in QUERIES:
        assert _rows(con, sql) == _rows(ref, sql), sql
    # everything now cached: the same queries again need no fetch at all
    before = lazy.requests
    for sql in QUERIES:
        assert _rows(con, sql) == _rows(ref, sql), sql
    assert lazy.requests == before
    con.close()
    ref.close()


def test_btree_prefetch_fetches_children_of_interior_pages_and_stays_correct(databases, tmp_path):
    lazy = Lazy(databases["p1024"], tmp_path, prefetch=True, segment_size=1024, readahead_max=1024)
    con = lazy.connect()
    ref = sqlite3.connect(databases["p1024"])
    sql = "SELECT * FROM items WHERE id = 1000"
    assert _rows(con, sql) == _rows(ref, sql)
    for sql in QUERIES:
        assert _rows(con, sql) == _rows(ref, sql), sql
    # siblings of B-tree pages walked in order ride along with the misses (btree_readahead.BtreeSiblings)
    assert lazy.store.counters()["prefetched"] > 0


def test_file_size_is_the_logical_size_not_the_sparse_file(databases, tmp_path):
    src = databases["p4096"]
    lazy = Lazy(src, tmp_path)
    con = lazy.connect()
    assert con.execute("SELECT name FROM items WHERE id = 3").fetchone() == ("item-00000003",)
    n_pages = os.path.getsize(src) // 4096
    assert con.execute("PRAGMA page_count").fetchone() == (n_pages,)
    # the synced layer stays sparse: far fewer bytes on disk than the database
    st = os.stat(lazy.store.path)
    assert st.st_blocks * 512 < os.path.getsize(src) // 2


def test_point_lookup_fetches_few_pages_and_repeat_fetches_none(databases, tmp_path):
    lazy = Lazy(databases["p4096"], tmp_path, segment_size=4096)  # one page per segment
    con = lazy.connect()
    con.execute("SELECT * FROM items WHERE id = 1234").fetchall()
    first = lazy.requests
    fetched = sum(len(b) for b in lazy.source.fetch_log)
    assert 2 <= fetched <= 8, lazy.source.fetch_log  # page 1, root, interior, leaf, overflow...
    con.execute("SELECT * FROM items WHERE id = 1234").fetchall()
    assert lazy.requests == first
    c = lazy.store.counters()
    assert c["hits"] > 0 and c["misses"] == first - 1  # every request but open() was one miss


def test_one_callback_per_run_and_miss_only_for_absent_pages(databases, tmp_path):
    lazy = Lazy(databases["p4096"], tmp_path)
    con = lazy.connect()
    con.execute("SELECT count(*), sum(length(payload)) FROM items").fetchall()
    for batch in lazy.source.fetch_log:  # readahead asks only for pages that were absent
        assert len(batch) == len(set(batch))
    seen = [p for b in lazy.source.fetch_log for p in b]
    assert len(seen) == len(set(seen)), "a page was fetched twice"


def test_fetch_failure_is_ioerr_read_and_the_same_connection_retries(databases, tmp_path):
    lazy = Lazy(databases["p4096"], tmp_path)
    con = lazy.connect()
    ref = sqlite3.connect(databases["p4096"])
    con.execute("SELECT name FROM items WHERE id = 1").fetchall()
    lazy.source.fail_with = RemoteError("injected: connection reset", url="file://x")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error") as info:
        con.execute("SELECT sum(length(body)) FROM docs").fetchall()
    if sys.version_info >= (3, 11):  # the error attributes are 3.11+
        assert info.value.sqlite_errorname == "SQLITE_IOERR_READ"
    assert isinstance(take_error(), RemoteError)  # the real cause was kept
    lazy.source.fail_with = None
    sql = "SELECT sum(length(body)) FROM docs"
    assert con.execute(sql).fetchall() == ref.execute(sql).fetchall()
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def _populate_in_subprocess(lazy: Lazy, src: Path) -> None:
    """Fill the replica from another process, so this process has verified nothing."""
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']\n"
        "from support._lazy_replica import Lazy\nfrom pathlib import Path\n"
        "lazy = Lazy(Path(sys.argv[2]), Path(sys.argv[3]))\n"
        "from turso_dbapi.fetch.miss import download_all\ndownload_all(lazy.store, lazy.handler)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(ROOT), str(src), str(Path(lazy.store.path).parent.parent)],
                   check=True, timeout=60)


def test_corrupted_or_truncated_synced_page_is_refetched_not_served(databases, tmp_path):
    src = databases["p4096"]
    lazy = Lazy(src, tmp_path)
    _populate_in_subprocess(lazy, src)
    assert lazy.store.first_absent() == 0
    n_pages = os.path.getsize(src) // 4096
    victim = n_pages // 2
    with open(lazy.store.path, "r+b") as f:  # a torn write: garbage in the middle page
        f.seek((victim - 1) * 4096 + 100)
        f.write(b"\xde\xad" * 50)
        f.truncate((n_pages - 1) * 4096)  # and the last page lost
    lazy.source.stats.requests = 0
    con = lazy.connect()
    ref = sqlite3.connect(src)
    for sql in QUERIES:
        assert _rows(con, sql) == _rows(ref, sql), sql
    assert lazy.store.counters()["crc_failures"] == 2
    refetched = sorted(p for b in lazy.source.fetch_log for p in b)
    assert victim in refetched and n_pages in refetched


def test_journal_mode_wal_works_on_a_lazy_file(databases, tmp_path):
    lazy = Lazy(databases["p4096"], tmp_path)
    con = lazy.connect(isolation_level=None)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    con.execute("UPDATE items SET name = name || '-w' WHERE id % 10 = 0")
    other = lazy.connect()
    assert other.execute("SELECT count(*) FROM items WHERE name LIKE '%-w'").fetchone() == (150,)
    assert con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    assert other.execute("SELECT count(*) FROM items WHERE name LIKE '%-w'").fetchone() == (150,)
    assert other.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert os.path.exists(lazy.store.path + "-shm")


def test_wal_mode_across_processes_sees_the_other_writer(databases, tmp_path):
    src = databases["p4096"]
    lazy = Lazy(src, tmp_path)
    con = lazy.connect(isolation_level=None)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    assert con.execute("SELECT count(*) FROM items WHERE price < 0").fetchone() == (0,)
    writer = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']\n"
        "from support._lazy_replica import Lazy\nfrom pathlib import Path\n"
        "lazy = Lazy(Path(sys.argv[2]), Path(sys.argv[3]))\n"
        "c = lazy.connect(isolation_level=None)\n"
        "c.execute('UPDATE items SET price = -price - 1 WHERE id <= 500')\n"
        "c.execute('PRAGMA wal_checkpoint(PASSIVE)')\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(ROOT), str(src), str(tmp_path)], check=True, timeout=60)
    assert con.execute("SELECT count(*) FROM items WHERE price < 0").fetchone() == (500,)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_local_writes_persist_and_read_local_over_synced(databases, tmp_path):
    src = databases["p4096"]
    before = Path(src).read_bytes()
    lazy = Lazy(src, tmp_path)
    con = lazy.connect()
    with con:
        con.execute("UPDATE items SET price = -1 WHERE category = 3")
        con.execute("INSERT INTO items(name, category, price, payload) VALUES ('new', 3, -1, zeroblob(9000))")
    con.close()
    assert Path(src).read_bytes() == before  # the source is never written
    assert lazy.store.counters()["local_writes"] > 0
    root = lazy.connect().execute(
        "SELECT rootpage FROM sqlite_schema WHERE name = 'items'").fetchone()[0]
    assert lazy.store.state(1) & 2  # page 1 (change counter) is local now
    con = lazy.connect()
    ref = sqlite3.connect(src)
    n_cat3 = ref.execute("SELECT count(*) FROM items WHERE category = 3").fetchone()[0]
    assert con.execute("SELECT count(*) FROM items WHERE price = -1").fetchone() == (n_cat3 + 1,)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert root > 0
    # a new process sees the same local data (presence is in the shared sidecar)
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']\n"
         "from support._lazy_replica import Lazy\nfrom pathlib import Path\n"
         "lazy = Lazy(Path(sys.argv[2]), Path(sys.argv[3]))\n"
         "print(lazy.connect().execute('SELECT count(*) FROM items WHERE price = -1').fetchone()[0])\n",
         str(ROOT), str(src), str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=60)
    assert int(out.stdout) == n_cat3 + 1


def test_growth_past_the_remote_size_needs_no_network(databases, tmp_path):
    src = databases["p1024"]
    lazy = Lazy(src, tmp_path)
    con = lazy.connect()
    remote_pages = os.path.getsize(src) // 1024
    with con:
        con.executemany("INSERT INTO docs(title, body) VALUES (?, ?)",
                        [(f"t{i}", "x" * 3000) for i in range(300)])
    assert con.execute("PRAGMA page_count").fetchone()[0] > remote_pages + 500
    assert all(p <= remote_pages for b in lazy.source.fetch_log for p in b)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_vacuum_truncation_then_growth_reads_local_zeros_not_old_pages(databases, tmp_path):
    src = databases["p4096"]
    lazy = Lazy(src, tmp_path)
    con = lazy.connect(isolation_level=None)
    con.execute("DELETE FROM items WHERE id > 100")
    con.execute("DELETE FROM docs")
    con.execute("VACUUM")
    small = con.execute("PRAGMA page_count").fetchone()[0]
    assert small * 4096 < os.path.getsize(src) // 4
    assert lazy.store.logical_size == small * 4096
    con.executemany("INSERT INTO docs(title, body) VALUES (?, ?)", [(f"t{i}", "y" * 5000) for i in range(200)])
    assert con.execute("SELECT count(*), sum(length(body)) FROM docs").fetchone() == (200, 200 * 5000)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()
    con = lazy.connect()
    assert con.execute("SELECT count(*) FROM items").fetchone() == (100,)


def test_threads_with_several_connections_agree_with_sqlite3(databases, tmp_path):
    src = databases["p1024"]
    lazy = Lazy(src, tmp_path)
    ref = sqlite3.connect(src, check_same_thread=False)
    expected = dict(ref.execute("SELECT id, name || hex(payload) FROM items").fetchall())
    errors: list = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        con = lazy.connect()
        try:
            for _ in range(150):
                i = rng.randint(1, 1500)
                row = con.execute("SELECT name || hex(payload) FROM items WHERE id = ?", (i,)).fetchone()
                if row[0] != expected[i]:
                    errors.append((i, row))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            con.close()

    run_threads(worker, [(s,) for s in range(4)])
    assert errors == []
    fetched = [p for b in lazy.source.fetch_log for p in b]
    assert len(fetched) == len(set(fetched)), "single-flight: no page fetched twice"


def test_xfetch_refused_mmap_size_reports_zero(databases, tmp_path):
    lazy = Lazy(databases["p4096"], tmp_path)
    con = lazy.connect()
    assert con.execute("PRAGMA mmap_size=268435456").fetchone() in (None, (0,))
    ref = sqlite3.connect(databases["p4096"])
    sql = "SELECT sum(length(payload)) FROM items"
    assert con.execute(sql).fetchall() == ref.execute(sql).fetchall()


def test_other_files_pass_through_unchanged(tmp_path):
    ensure_registered()
    path = tmp_path / "plain.db"
    con = sqlite3.connect(f"file:{path}?vfs=turso_dbapi", uri=True)
    con.execute("CREATE TABLE t(x)")
    con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    con.commit()
    con.close()
    assert sqlite3.connect(path).execute("SELECT sum(x) FROM t").fetchone() == (499500,)
    assert not os.path.exists(f"{path}-tdbmap")


def test_remote_connection_raises_the_real_cause_not_disk_io_error(databases, tmp_path):
    src = databases["p4096"]
    sources: list = []

    def factory(url, opts):
        sources.append(FileSource(src))
        return sources[-1]

    opts = with_defaults(parse_options({"partial": True}))
    con = connect_range("tdbtest://host/db", str(tmp_path / "r" / "db"), opts, {}, turso_dbapi.Connection,
                        source=factory("tdbtest://host/db", opts))
    assert con.stats().requests == 1  # open() only
    assert con.execute("SELECT name FROM items WHERE id = 2").fetchone() == ("item-00000002",)
    sources[0].fail_with = RemoteError("injected: HTTP 503 from tdbtest://host/db", url="tdbtest://host/db",
                                       status=503)
    with pytest.raises(RemoteError, match="injected: HTTP 503") as info:
        con.execute("SELECT sum(length(body)) FROM docs").fetchall()
    assert isinstance(info.value, sqlite3.OperationalError)
    assert info.value.status == 503
    sources[0].fail_with = None
    assert con.execute("SELECT count(*) FROM docs").fetchone()[0] > 0
    assert con.stats().misses > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_writes_with_flaky_fetches_end_equal_to_plain_sqlite3(databases, tmp_path, seed):
    """Differential: the same random DML on a lazy replica (whose source fails a third of
    the time) and on a plain copy; failed statements are retried; contents must match."""
    import shutil

    src = databases["p1024"]
    copy = tmp_path / "copy.db"
    shutil.copyfile(src, copy)
    lazy = Lazy(src, tmp_path, segment_size=2048, readahead_max=8192)
    con = lazy.connect(isolation_level=None)
    ref = sqlite3.connect(copy, isolation_level=None)
    rng = random.Random(seed)
    flaky = random.Random(seed + 100)
    real_fetch = lazy.source.fetch
    flakes = []

    def fetch(pgnos):
        if flaky.random() < 0.33:
            flakes.append(pgnos)
            raise RemoteError("injected flake")
        return real_fetch(pgnos)

    lazy.source.fetch = fetch
    if seed == 2:
        for c in (con, ref):
            c.execute("PRAGMA journal_mode=WAL")
    for step in range(60):
        op = rng.random()
        if op < 0.35:
            i = rng.randint(1, 1600)
            sql, args = "UPDATE items SET price = ?, payload = ? WHERE id = ?", (
                rng.random(), rng.randbytes(rng.choice([10, 3000])), i)
        elif op < 0.6:
            sql, args = "INSERT INTO docs(title, body) VALUES (?, ?)", (f"n{step}", "z" * rng.randint(1, 5000))
        elif op < 0.8:
            lo = rng.randint(1, 1500)
            sql, args = "DELETE FROM items WHERE id BETWEEN ? AND ?", (lo, lo + rng.randint(0, 40))
        elif op < 0.85:
            sql, args = "VACUUM", ()
        else:
            sql, args = "SELECT count(*), sum(length(payload)) FROM items WHERE category = ?", (rng.randint(0, 49),)
        for _ in range(50):
            try:
                got = con.execute(sql, args).fetchall()
                break
            except sqlite3.OperationalError as exc:
                assert "disk I/O error" in str(exc), exc
        else:
            pytest.fail("a statement kept failing")
        assert got == ref.execute(sql, args).fetchall(), (step, sql)
    lazy.source.fetch = real_fetch
    assert flakes, "the flaky source never failed: the test would prove nothing"
    for sql in QUERIES:
        assert _rows(con, sql) == _rows(ref, sql), sql
