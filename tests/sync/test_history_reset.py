"""A reference server restarted without its history (``-revlog`` removed) numbers revisions
from 1 again. Revisions carry the history's id (protocol/revision.py), so a replica of the
old history is refused clearly instead of lazily reading the new history's pages into the
old one (issue 14, item 4)."""

from __future__ import annotations

import glob
import hashlib
import os

import pytest
from support.turso_server import rev_no

import turso_dbapi
from turso_dbapi.protocol.sync_wire import PullUpdatesRequest, parse_response
from turso_dbapi.server import ReferenceServer
from turso_dbapi.sync import metadata as sync_meta

ROWS = 300


def _fill(server) -> None:
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, x BLOB)")
    server.db_sql(f"INSERT INTO t SELECT value, value, randomblob(1200) FROM generate_series(1, {ROWS})")
    server.db_sql("UPDATE t SET v = v * 2")


def _restart_without_history(server, writes: int) -> ReferenceServer:
    """Stop ``server``, delete its page log, serve the same file on the same port, then
    make ``writes`` revisions (each changes every row's v)."""
    port, db_path = server.server.port, server.db_path
    server.stop()
    for f in glob.glob(db_path + "-revlog*"):
        os.remove(f)
    again = ReferenceServer(db_path, port=port).start()
    for _ in range(writes):
        again.db.run_pipeline({"requests": [
            {"type": "execute", "stmt": {"sql": "UPDATE t SET v = v + 1000"}}]})
    return again


def _digests(path: str) -> dict:
    out = {}
    for suffix in ("", "-tdblocal", "-tdbsync.json"):
        with open(path + suffix, "rb") as f:
            out[suffix] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_a_partial_replica_of_a_lost_history_is_refused_never_mixed(turso_server, tmp_path):
    _fill(turso_server)
    rev = turso_server.revision
    path = str(tmp_path / "r.db")
    con = turso_dbapi.connect(turso_server.url, local_path=path, bootstrap_prefix=4 * 4096)
    assert con.execute("SELECT v FROM t WHERE id = 1").fetchone() == (2,)
    # the new history passes the replica's revision number: "3" would name other pages
    again = _restart_without_history(turso_server, writes=rev_no(rev) + 2)
    try:
        assert rev_no(again.db.revision_text) > rev_no(rev)
        with pytest.raises(turso_dbapi.HistoryResetError, match="no longer has the history"):
            con.execute("SELECT sum(v), count(*) FROM t").fetchall()
        before = _digests(path)
        with pytest.raises(turso_dbapi.HistoryResetError, match="revisions were reset"):
            con.pull()
        assert _digests(path) == before and con.stats().revision == rev  # nothing changed
        assert not os.path.exists(path + "-tdbpull")
        # what the replica holds is still whole and of its own history
        assert con.execute("SELECT v FROM t WHERE id = 1").fetchone() == (2,)
    finally:
        con.close()
        again.stop()


def test_the_server_refuses_a_revision_of_another_history_and_resends_all_for_one(turso_server):
    _fill(turso_server)
    old = turso_server.revision
    again = _restart_without_history(turso_server, writes=rev_no(old) + 1)
    try:
        import requests

        post = lambda req: requests.post(again.url + "/pull-updates", data=req.encode(), timeout=30)  # noqa: E731
        r = post(PullUpdatesRequest(server_revision=old))
        assert r.status_code == 410 and "another history" in r.text
        # the same number in the server's own history is served
        mine = f"{again.db.log.instance}-{rev_no(old)}"
        assert post(PullUpdatesRequest(server_revision=mine)).status_code == 200
        # a client revision of another history gets everything (a full resend)
        header, pages = parse_response(post(PullUpdatesRequest(client_revision=old)).content)
        assert header.server_revision == again.db.revision_text and len(pages) == header.db_size
    finally:
        again.stop()


def test_a_replica_made_before_history_ids_reopens_reads_and_pulls(turso_server, tmp_path):
    """Metadata with plain-number revisions (older servers) keeps working; the next pull
    stores the new form."""
    _fill(turso_server)
    path = str(tmp_path / "r.db")
    turso_dbapi.connect(turso_server.url, local_path=path, bootstrap_prefix=4 * 4096).close()
    meta = sync_meta.load(path)
    meta.synced_revision = str(rev_no(meta.synced_revision))
    meta.partial_bootstrap_server_revision = meta.synced_revision
    sync_meta.save(path, meta)
    con = turso_dbapi.connect(path)
    assert con.execute("SELECT sum(v) FROM t").fetchone() == (ROWS * (ROWS + 1),)
    turso_server.db_sql("UPDATE t SET v = 0 WHERE id = 1")
    assert con.pull() is True
    assert con.stats().revision == turso_server.revision
    assert con.execute("SELECT sum(v) FROM t").fetchone() == (ROWS * (ROWS + 1) - 2,)
