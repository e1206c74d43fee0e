"""Our client and pyturso (PyPI ``pyturso``, the peer) writing to ONE reference-server
database in rounds, each pushing and pulling: at the end both replicas and the server hold
exactly the same rows."""

from __future__ import annotations

import sqlite3
import sys

import pytest

import turso_dbapi

if sys.version_info < (3, 10):  # the peer's current protocol (pyturso >= 0.8) needs 3.10+
    pytest.skip("pyturso >= 0.8 needs Python 3.10+", allow_module_level=True)
import turso.sync as turso_sync  # noqa: E402 - a test extra; an ImportError names it


def rows(conn):
    return sorted(tuple(r) for r in conn.execute("SELECT id, who, v, note FROM t").fetchall())


def server_rows(server):
    with sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True) as c:
        return rows(c)


def test_ours_and_pyturso_converge_after_rounds_of_concurrent_writes(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, v INTEGER, note TEXT)")
    turso_server.db_sql("INSERT INTO t SELECT value, 'server', 0, NULL FROM generate_series(1, 50)")
    ours = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "ours.db"))
    peer = turso_sync.connect(str(tmp_path / "peer.db"), turso_server.url)
    for rnd in range(4):
        # disjoint inserts, overlapping updates (last writer wins), a delete each
        ours.executemany("INSERT INTO t VALUES (?, 'ours', ?, 'o')", [(1000 + rnd * 10 + i, rnd) for i in range(5)])
        ours.execute("UPDATE t SET v = v + 1, note = 'ours' WHERE id BETWEEN ? AND ?", (rnd * 5 + 1, rnd * 5 + 8))
        ours.execute("DELETE FROM t WHERE id = ?", (40 + rnd,))
        ours.commit()
        for i in range(5):
            peer.execute("INSERT INTO t VALUES (?, 'peer', ?, 'p')", (2000 + rnd * 10 + i, rnd))
        peer.execute("UPDATE t SET v = v + 10, note = 'peer' WHERE id BETWEEN ? AND ?", (rnd * 5 + 4, rnd * 5 + 12))
        peer.execute("DELETE FROM t WHERE id = ?", (30 + rnd,))
        peer.commit()
        if rnd % 2 == 0:
            ours.push()
            peer.push()
            ours.pull()
            peer.pull()
        else:  # the other order: pulls rebase unpushed changes
            peer.pull()
            ours.pull()
            peer.push()
            ours.push()
    # settle: everyone pushes, then everyone pulls
    ours.push()
    peer.push()
    ours.pull()
    peer.pull()
    expected = server_rows(turso_server)
    assert rows(ours) == expected
    assert rows(peer) == expected
    assert len([r for r in expected if r[1] == "ours"]) == 20 and len([r for r in expected if r[1] == "peer"]) == 20
    assert not [r for r in expected if r[0] in (40, 41, 42, 43, 30, 31, 32, 33)]
    assert ours.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert ours.stats().pending_changes == 0
