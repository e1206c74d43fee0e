"""The served database's contracts (server/database.py): every committed change becomes
one log revision holding exactly the pages it wrote; no change, no revision; commits by
other processes and changes made while the server was down are logged too; 4096-byte
pages only."""

from __future__ import annotations

import sqlite3

import pytest

from turso_dbapi.protocol.sync_wire import PAGE_SIZE
from turso_dbapi.server.database import ServedDatabase


def run(db: ServedDatabase, *sqls: str):
    body = {"requests": [{"type": "execute", "stmt": {"sql": s}} for s in sqls]}
    out = db.run_pipeline(body)
    assert all(r["type"] == "ok" for r in out["results"]), out
    return out


def file_pages(db: ServedDatabase, rev: int):
    _, plan = db.log.plan(0, rev, None)
    return dict(db.log.read(plan))


@pytest.fixture
def db(tmp_path):
    d = ServedDatabase(str(tmp_path / "s.db"))
    yield d
    d.close()


def test_a_blank_database_is_revision_zero(db):
    assert db.revision == 0 and db.log.latest_db_size == 0


def test_each_write_is_one_revision_equal_to_the_database_file(db, tmp_path):
    run(db, "CREATE TABLE t(x)", "INSERT INTO t VALUES (1)")
    first = db.revision
    assert first == 1
    run(db, "INSERT INTO t VALUES (2)")
    assert db.revision == first + 1
    run(db, "SELECT * FROM t")  # a read changes nothing: no revision
    assert db.revision == first + 1
    pages = file_pages(db, db.revision)
    copy = tmp_path / "copy.db"
    copy.write_bytes(b"".join(pages[i] for i in range(len(pages))))
    con = sqlite3.connect(copy)
    assert con.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
    assert con.execute("PRAGMA page_size").fetchone() == (PAGE_SIZE,)


def test_an_incremental_revision_holds_only_the_pages_it_changed(db):
    run(db, "CREATE TABLE a(x)", "CREATE TABLE b(x)")
    run(db, "INSERT INTO b VALUES (zeroblob(20000))")
    before = db.revision
    run(db, "INSERT INTO a VALUES (1)")
    _, plan = db.log.plan(before, db.revision, None)
    changed = [pid + 1 for pid, _ in plan]
    root = db.conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'a'").fetchone()[0]
    assert changed == [root]  # WAL mode: the header page does not move, only a's leaf


def test_commits_of_another_process_are_logged_at_refresh(db):
    run(db, "CREATE TABLE t(x)")
    before = db.revision
    other = sqlite3.connect(db.db_path, isolation_level=None)
    other.execute("INSERT INTO t VALUES (42)")
    other.close()
    db.refresh()
    assert db.revision == before + 1
    assert db.wait_for_revision(before, 0.01) == before + 1


def test_changes_made_while_the_server_was_down_are_logged_at_start(tmp_path):
    path = str(tmp_path / "s.db")
    d = ServedDatabase(path)
    run(d, "CREATE TABLE t(x)")
    rev = d.revision
    d.close()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("INSERT INTO t VALUES (7)")
    con.close()
    again = ServedDatabase(path)
    try:
        assert again.revision == rev + 1
    finally:
        again.close()


def test_other_page_sizes_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "small.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA page_size=1024")
    con.execute("CREATE TABLE t(x)")
    con.close()
    with pytest.raises(ValueError, match="4096"):
        ServedDatabase(str(path))
