"""Bootstraps and pulls hand pages to the page store in batches (one C call per chunk of the
reply, pagestore.c rule (19)), not one Python call per page: the counts of store calls are
pinned here, so a return to per-page calls fails."""

from __future__ import annotations

import pytest

import turso_dbapi
from turso_dbapi.storage.pagestore import PageStore
from turso_dbapi.sync.stage import StageWriter
from turso_dbapi.transport.http import STREAM_CHUNK


@pytest.fixture
def calls(monkeypatch):
    """Counts of page-store and stage calls, and of the pages they carried."""
    seen = {"put": 0, "many": 0, "many_pages": 0, "add": 0, "add_run": 0}

    def counting(cls, name, pages=None):
        real = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            seen[name.replace("put_synced_many", "many").replace("put_synced", "put")] += 1
            if pages is not None:
                seen[pages] += len(args[1])
            return real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    counting(PageStore, "put_synced")
    counting(PageStore, "put_synced_many", "many_pages")
    counting(StageWriter, "add")
    counting(StageWriter, "add_run")
    return seen


def test_a_full_bootstrap_stores_its_pages_in_one_call_per_chunk(turso_server, tmp_path, calls):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x BLOB)")
    turso_server.db_sql("INSERT INTO t SELECT value, randomblob(3000) FROM generate_series(1, 600)")
    pages = int(turso_server.db_sql("PRAGMA page_count")[0][0])
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (600,)
    per_chunk = STREAM_CHUNK // 4096 + 1
    # page 1 is checked and patched on its own: the pages of its chunk go one by one
    assert calls["put"] <= per_chunk
    assert calls["many_pages"] + calls["put"] == pages > 600
    chunks = -(-pages * 4104 // STREAM_CHUNK)
    assert calls["many"] <= chunks + 1


def test_a_pull_stages_and_applies_its_pages_in_batches(turso_server, tmp_path, calls):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x BLOB)")
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"), journal_mode="delete")
    turso_server.db_sql("INSERT INTO t SELECT value, randomblob(3000) FROM generate_series(1, 600)")
    for k in calls:
        calls[k] = 0
    assert conn.pull() is True
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (600,)
    pages = int(turso_server.db_sql("PRAGMA page_count")[0][0])
    per_chunk = STREAM_CHUNK // 4096 + 1
    assert calls["add"] <= per_chunk and calls["add_run"] <= -(-pages * 4104 // STREAM_CHUNK) + 1
    # the apply reads the stage 64 pages at a time; page 1 is patched and stored last, alone
    assert calls["put"] == 1 and calls["many_pages"] == pages - 1
    assert calls["many"] == -(-pages // 64)
