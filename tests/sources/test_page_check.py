"""Range mode: a body of garbage with the right length is never cached as a page
(issue 14, item 13; ``storage/page_check.py``, ``sources/range.py`` rule (8)).

The checks must accept every page of a valid database (whatever its page size, auto-vacuum,
freelist, overflow chains, WITHOUT ROWID tables, indexes) and refuse random bytes. End to
end, nginx serves the file and the fault proxy replaces a fetch's body by random bytes of
the same length: once, the fetch is repeated and the query answers right; always, the
query fails with a ProtocolError that says so, and a later good fetch works.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from support.faultproxy import is_fetch

import turso_dbapi
from turso_dbapi.storage.page_check import PageGeometry, freelist_leaves, page_problem


def make_db(path: Path, page_size: int, auto_vacuum: int, seed: int) -> bytes:
    rng = random.Random(seed)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA page_size={page_size}")
    con.execute(f"PRAGMA auto_vacuum={auto_vacuum}")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b BLOB)")
    con.execute("CREATE INDEX t_a ON t(a)")
    con.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID")
    for i in range(1, 600):
        con.execute("INSERT INTO t VALUES (?, ?, ?)",
                    (i, f"name{rng.random()}", rng.randbytes(rng.choice([10, 300, 5000, 20000]))))
        con.execute("INSERT INTO kv VALUES (?, ?)", (f"k{i}", rng.randbytes(rng.choice([5, 900]))))
    con.commit()
    con.execute("DELETE FROM t WHERE id % 3 = 0")  # freelist pages (trunks and leaves)
    con.execute("DELETE FROM kv WHERE k LIKE 'k1%'")
    con.commit()
    con.close()
    return path.read_bytes()


def pages_of(data: bytes, page_size: int):
    return {i + 1: data[i * page_size:(i + 1) * page_size] for i in range(len(data) // page_size)}


@pytest.mark.parametrize("page_size", [512, 1024, 4096, 65536])
@pytest.mark.parametrize("auto_vacuum", [0, 1, 2])  # none, full (pointer maps), incremental
def test_every_page_of_a_valid_database_passes(tmp_path, page_size, auto_vacuum):
    data = make_db(tmp_path / "v.db", page_size, auto_vacuum, seed=page_size + auto_vacuum)
    pages = pages_of(data, page_size)
    geo = PageGeometry(pages[1], page_size, len(pages))
    # the deletes left free pages (rule (4) is exercised) unless full auto-vacuum dropped them
    assert (geo.freelist_count > 0) == (auto_vacuum != 1)
    leaves = freelist_leaves(geo, pages.__getitem__)
    refused = {p: why for p, page in pages.items()
               if (why := page_problem(p, page, geo)) and p not in leaves}
    assert refused == {}


def test_random_bytes_are_refused_as_any_page(tmp_path):
    data = make_db(tmp_path / "v.db", 4096, 0, seed=1)
    pages = pages_of(data, 4096)
    geo = PageGeometry(pages[1], 4096, len(pages))
    rng = random.Random(7)
    for _ in range(3000):
        p = rng.randrange(1, len(pages) + 1)
        assert page_problem(p, rng.randbytes(4096), geo) is not None
    # page 1 must equal the pinned header even when the rest is a valid B-tree page
    other = bytearray(pages[1])
    other[24:28] = b"\xff\xff\xff\xff"
    assert "pinned" in page_problem(1, bytes(other), geo)


@pytest.fixture
def served(nginx, databases, tmp_path):
    name = f"garbage-{tmp_path.name}.db"
    nginx.place(name, databases["p4096"])
    plain = sqlite3.connect(databases["p4096"])
    expected = plain.execute("SELECT COUNT(*), SUM(LENGTH(payload)), SUM(price) FROM items").fetchone()
    plain.close()
    return name, expected


QUERY = "SELECT COUNT(*), SUM(LENGTH(payload)), SUM(price) FROM items"


def test_one_garbage_body_is_fetched_again_and_never_cached(fault_proxy, served, tmp_path):
    name, expected = served
    conn = turso_dbapi.connect(fault_proxy.url(name), partial=True, local_path=str(tmp_path / "c.db"))
    fault_proxy.inject("garbage", times=1, when=is_fetch)
    assert conn.execute(QUERY).fetchone() == expected
    assert [r.fault for r in fault_proxy.records].count("garbage") == 1
    assert conn.stats().retries >= 1
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    conn = turso_dbapi.connect(fault_proxy.url(name), partial=True, local_path=str(tmp_path / "c.db"))
    assert conn.execute(QUERY).fetchone() == expected  # what was cached is right
    conn.close()  # its read-ahead threads stop with it


def test_a_remote_that_keeps_serving_garbage_gets_a_clear_error_and_nothing_cached(fault_proxy, served,
                                                                                     tmp_path):
    name, expected = served
    conn = turso_dbapi.connect(fault_proxy.url(name), partial=True, local_path=str(tmp_path / "c.db"),
                               retries=1)
    fault_proxy.inject("garbage", times=None, when=is_fetch)
    with pytest.raises(turso_dbapi.ProtocolError, match="(sent bytes that are not page .* serves corrupt data)|(multipart reply: .* sent a malformed reply)"):
        conn.execute(QUERY)
    fault_proxy.clear_faults()
    assert conn.execute(QUERY).fetchone() == expected  # healed: the garbage was never stored
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
