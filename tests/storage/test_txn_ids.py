"""Write-transaction ids of the VFS (_native/txn.c, vfs.c rule (20)): the sqlite_tdb_txn
table holds the id of the connection's current write transaction on its first read in
that transaction, in rollback-journal and in WAL mode, and NULL otherwise and where the
main file is not a lazy replica."""

from __future__ import annotations

import sqlite3

import pytest

from support._lazy_replica import Lazy
from turso_dbapi.storage.vfs import ensure_registered

SETUP = [
    "CREATE TABLE w(id INTEGER PRIMARY KEY, v)",
    "CREATE TABLE lg(id INTEGER PRIMARY KEY, k, x)",
    "CREATE TRIGGER w_i AFTER INSERT ON w BEGIN INSERT INTO lg(k, x) VALUES (NEW.id, (SELECT id FROM sqlite_tdb_txn)); END",
]


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_each_write_transaction_of_each_connection_marks_its_first_call(databases, tmp_path, mode):
    lazy = Lazy(databases["p4096"], tmp_path)
    a = lazy.connect(isolation_level=None)
    assert a.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0] == mode
    for sql in SETUP:
        a.execute(sql)
    b = lazy.connect(isolation_level=None)
    for conn, keys in ((a, (1, 2)), (b, (3, 4)), (a, (5,)), (b, (6, 7, 8))):
        conn.execute("BEGIN")
        for k in keys:
            conn.execute("INSERT INTO w VALUES (?, 'x')", (k,))
        conn.execute("COMMIT")
    rows = a.execute("SELECT k, x FROM lg ORDER BY id").fetchall()
    marks = [x for _, x in rows]
    assert [x is not None for x in marks] == [True, False, True, False, True, True, False, False]
    ids = [x for x in marks if x is not None]
    assert len(set(ids)) == 4 and all(0 < x < 2**63 for x in ids)
    # one statement changing several rows: the mark is on its first row only (the subquery
    # runs once per trigger invocation, not once per statement)
    a.execute("INSERT INTO w SELECT id + 100, v FROM w WHERE id <= 3")
    assert [x is not None for (x,) in a.execute("SELECT x FROM lg WHERE k > 100 ORDER BY id")] == [True, False, False]
    # a rolled-back transaction's id is never reused by the next one
    a.execute("BEGIN")
    a.execute("INSERT INTO w VALUES (9, 'x')")
    a.execute("ROLLBACK")
    a.execute("INSERT INTO w VALUES (10, 'x')")
    assert a.execute("SELECT x FROM lg WHERE k = 10").fetchone()[0] not in ids + [None]
    assert a.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    a.close()
    b.close()


def test_a_connection_to_a_plain_file_gets_null(tmp_path):
    ensure_registered()  # registers the sqlite_tdb_txn table on every later connection
    plain = sqlite3.connect(str(tmp_path / "plain.db"), isolation_level=None)
    for sql in SETUP:
        plain.execute(sql)
    plain.execute("INSERT INTO w VALUES (1, 'x')")
    assert plain.execute("SELECT x FROM lg").fetchall() == [(None,)]
    plain.close()
