"""Flushes of a Turso replica, counted exactly (pagestore.c rule (22), vfs.c rule (22)).

A cold connect is one bootstrap request and one flush point (sync/bootstrap.py): the
claim's fsync and its directory's, ONE page-store flush (local layer + sidecar; the synced
layer too only for a full bootstrap), the final metadata's fsync and its directory's; the
capture install writes no journal and flushes nothing itself. Before (one fully synced
write transaction for the capture, a flush per step) it was 16 flushes.

A rollback-mode commit on a replica asks for the flushes SQLite asks for on a plain file,
with the database file's one replaced by two: the local layer and the sidecar (never the
synced layer, which a commit does not write, nor P through the default VFS).

What is counted: ``os.fsync`` calls (wrapped, still real), the page store's own flushes
(``PageStore.flushes``: counters beside each fdatasync/msync in C) and xSync calls of the
files the VFS passes through (journals; ``tdb_vfs_passthrough_syncs``).
"""

from __future__ import annotations

import os
import sqlite3

import pytest

import turso_dbapi
from turso_dbapi._native import lib
from turso_dbapi.sync import metadata as sync_meta

COMMITS = 5


@pytest.fixture
def server(turso_server):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
    turso_server.db_sql("INSERT INTO t SELECT value, 0, randomblob(900) FROM generate_series(1, 400)")
    return turso_server


@pytest.fixture
def fsyncs(monkeypatch):
    """os.fsync calls of every thread from here on (the real call still happens)."""
    calls = []
    real = os.fsync

    def counting(fd):
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def _flush_delta(before, after):
    return {k: after[k] - before[k] for k in after}


@pytest.mark.parametrize("partial", [True, False], ids=["partial", "full"])
def test_a_cold_connect_is_one_request_and_one_flush_point(server, tmp_path, fsyncs, partial):
    path = str(tmp_path / "r.db")
    journal_syncs = lib.tdb_vfs_passthrough_syncs()
    con = turso_dbapi.connect(server.url, local_path=path, partial=partial)
    journal_syncs = lib.tdb_vfs_passthrough_syncs() - journal_syncs
    store = con._replica.store
    assert con.stats().requests == 1  # the bootstrap
    assert len(fsyncs) == 4  # claim + its directory, final metadata + its directory
    # A partial replica's synced pages heal by re-fetching; a full one's are flushed.
    assert store.flushes() == {"local": 1, "synced": 0 if partial else 1, "map": 1}
    assert journal_syncs == 0  # the capture install: no journal, no flush of its own
    assert not os.path.exists(path + "-journal")
    assert not sync_meta.load(path).bootstrapping
    # ... and the replica is whole: capture installed, a local change is logged and pushed.
    con.execute("INSERT INTO t(v) VALUES (1)")
    con.commit()
    assert con.stats().pending_changes == 1
    con.push()
    assert int(server.db_sql("SELECT count(*) FROM t")[0][0]) == 401
    con.close()


def _commits(con, n):
    for i in range(n):
        con.execute("UPDATE t SET v = v + 1 WHERE id = ?", (i + 1,))
        con.commit()


def test_a_rollback_commit_flushes_the_local_layer_and_the_sidecar_instead_of_the_file(server, tmp_path):
    # A plain rollback-mode file opened through the VFS (every file passed through: its
    # journal's xSyncs and the database's one are all counted).
    plain = str(tmp_path / "plain.db")
    src = sqlite3.connect(plain)
    src.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
    src.executemany("INSERT INTO t VALUES (?, 0, randomblob(900))", [(i,) for i in range(1, 401)])
    src.commit()
    src.close()
    turso_dbapi.connect(":memory:").close()  # the VFS is registered
    con = sqlite3.connect(f"file:{plain}?vfs=turso_dbapi", uri=True)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    _commits(con, 1)
    before = lib.tdb_vfs_passthrough_syncs()
    _commits(con, COMMITS)
    plain_syncs = (lib.tdb_vfs_passthrough_syncs() - before) / COMMITS
    con.close()
    assert plain_syncs >= 2  # the journal's (one or two, by the build's settings) + the file's

    rep = turso_dbapi.connect(server.url, local_path=str(tmp_path / "r.db"), journal_mode="delete")
    assert rep.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    store = rep._replica.store
    rep.execute("SELECT count(*), sum(length(pad)) FROM t").fetchone()  # every page fetched
    _commits(rep, 1)
    before, flushes = lib.tdb_vfs_passthrough_syncs(), store.flushes()
    _commits(rep, COMMITS)
    rep_syncs = (lib.tdb_vfs_passthrough_syncs() - before) / COMMITS
    assert rep_syncs == plain_syncs - 1  # the journal's, as on the plain file
    assert _flush_delta(flushes, store.flushes()) == {"local": COMMITS, "synced": 0, "map": COMMITS}
    rep.close()


def test_pages_fetched_on_a_miss_are_not_flushed_by_a_commit(server, tmp_path):
    """A fetched page heals itself (lost bytes fail the CRC and are fetched again), so the
    commit after a cold read flushes no synced layer."""
    rep = turso_dbapi.connect(server.url, local_path=str(tmp_path / "p.db"), partial=True, journal_mode="delete")
    store = rep._replica.store
    flushes = store.flushes()
    assert rep.execute("SELECT count(*), sum(length(pad)) FROM t").fetchone()[0] == 400
    assert rep.stats().pages_fetched > 50
    _commits(rep, 1)
    assert _flush_delta(flushes, store.flushes()) == {"local": 1, "synced": 0, "map": 1}
    rep.close()


def test_a_pull_still_flushes_the_synced_layer_it_writes(server, tmp_path):
    rep = turso_dbapi.connect(server.url, local_path=str(tmp_path / "l.db"))
    store = rep._replica.store
    server.db_sql("UPDATE t SET v = 7 WHERE id <= 100")
    flushes = store.flushes()
    assert rep.pull() is True
    assert _flush_delta(flushes, store.flushes())["synced"] >= 1
    assert rep.execute("SELECT count(*) FROM t WHERE v = 7").fetchone() == (100,)
    rep.close()


def test_an_interrupted_bootstrap_is_started_afresh_from_its_claim(server, tmp_path):
    """The claim (metadata with ``bootstrapping``) and whatever files a killed bootstrap
    left - local pages included - are a cache: the next open, URL or not, starts afresh
    instead of refusing to drop "local changes" (tests/reliability has the kill points)."""
    path = str(tmp_path / "i.db")
    turso_dbapi.connect(server.url, local_path=path).close()
    meta = sync_meta.load(path)
    meta.bootstrapping = True
    sync_meta.save(path, meta)  # as a bootstrap killed before its last step leaves it
    assert os.path.getsize(path + "-tdblocal") > 0  # capture's pages: local data
    con = turso_dbapi.connect(path)
    assert sync_meta.load(path).client_unique_id != meta.client_unique_id  # bootstrapped anew
    assert con.execute("SELECT count(*) FROM t").fetchone() == (400,)
    con.close()
