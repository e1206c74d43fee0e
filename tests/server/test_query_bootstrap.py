"""Query bootstrap (spec §2.6): ``server_query_selector`` gets the pages the query reads.

The server runs the query on a copy of the requested revision under a tracing VFS; a
point lookup is the schema page and one b-tree path, and those pages alone answer it.
"""

from __future__ import annotations

import sqlite3
import sys

import pytest

from turso_dbapi.protocol.sync_wire import PullUpdatesRequest, parse_response

ROWS = 20000


def fill(path):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    conn.execute(
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) "
        "INSERT INTO t(v) SELECT randomblob(300) FROM n"
    )
    conn.commit()
    conn.close()


def query_pull(srv, sql, **fields):
    r = srv.pull_updates(PullUpdatesRequest(server_query_selector=sql, **fields).encode())
    return r


def test_a_point_lookup_gets_its_b_tree_path_and_nothing_else(turso_server_factory, tmp_path):
    srv = turso_server_factory(setup=fill)
    sql = "SELECT id, hex(v) FROM t WHERE id = 12345"
    header, pages = parse_response(query_pull(srv, sql).content)
    size = int(srv.db_sql("PRAGMA page_count")[0][0])
    assert header.db_size == size > 1000
    ids = [p.page_id for p in pages]
    assert 0 in ids and len(ids) <= 6, ids  # schema page, table root, interior, leaf
    image = bytearray(size * 4096)  # only those pages; every other page is zeros
    for p in pages:
        image[p.page_id * 4096 : (p.page_id + 1) * 4096] = p.encoded_page
    (tmp_path / "only.db").write_bytes(bytes(image))
    got = sqlite3.connect(tmp_path / "only.db").execute(sql).fetchall()
    assert got == [(int(i), v) for i, v in srv.db_sql(sql)] and got[0][0] == 12345
    assert srv.stats.get("query_bootstraps") == 1
    # a scan reads the whole table
    _, pages = parse_response(query_pull(srv, "SELECT count(*), sum(length(v)) FROM t").content)
    assert len(pages) == size


def test_the_query_runs_at_the_requested_revision(turso_server_factory):
    srv = turso_server_factory(setup=fill)
    old = srv.revision
    srv.db_sql("CREATE TABLE later(x)")  # a later revision where the query would fail
    srv.db_sql("DROP TABLE t")
    r = query_pull(srv, "SELECT * FROM t WHERE id = 1", server_revision=old)
    assert r.status_code == 200
    header, pages = parse_response(r.content)
    assert header.server_revision == old and 2 <= len(pages) <= 6


def test_a_bad_query_is_a_400_naming_it(turso_server_factory):
    srv = turso_server_factory(setup=fill)
    r = query_pull(srv, "SELEC nothing")
    assert r.status_code == 400 and "server_query_selector" in r.text and "syntax error" in r.text
    r = query_pull(srv, "DELETE FROM t")  # read-only: it cannot change anything
    assert r.status_code == 400 and "readonly" in r.text.lower().replace(" ", "")
    assert srv.db_sql("SELECT count(*) FROM t") == [[str(ROWS)]]


@pytest.mark.skipif(sys.version_info < (3, 10), reason="pyturso >= 0.8 needs Python 3.10+")
def test_pyturso_query_bootstrap_then_reads_the_rest_lazily(turso_server_factory, tmp_path):
    import turso.sync as turso_sync

    srv = turso_server_factory(setup=fill)
    sql = "SELECT id FROM t WHERE id = 777"
    conn = turso_sync.connect(
        str(tmp_path / "q.db"),
        srv.url,
        partial_sync_experimental=turso_sync.PartialSyncOpts(
            bootstrap_strategy=turso_sync.PartialSyncQueryBootstrap(query=sql)
        ),
    )
    boot_pages = srv.stats["pages_sent"]
    assert boot_pages <= 6
    assert conn.execute(sql).fetchall() == [(777,)]
    assert srv.stats["pages_sent"] == boot_pages  # answered from the bootstrap alone
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (ROWS,)  # the rest, lazily
    assert srv.stats["pages_sent"] > boot_pages
