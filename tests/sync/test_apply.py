"""The apply's contracts (sync/apply.py): a staged revision replaces the synced layer under
SQLite's EXCLUSIVE lock, all of it or nothing; page 1 says rollback journal, a moved change
counter and the new size; the metadata switches last; a stage that cannot be applied is
reported, never half used; local changes and open transactions stop it before it begins."""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct

import pytest

from support._fake_sync import FakeSyncSource, file_pages
from support.databases import make_database
from turso_dbapi.errors import OperationalError
from turso_dbapi.fetch.miss import MissHandler
from turso_dbapi.protocol.sync_wire import PAGE_SIZE
from turso_dbapi.storage import apply_flag, pagestore
from turso_dbapi.storage.vfs import ensure_registered, replica_uri
from turso_dbapi.sync import apply as pull_apply
from turso_dbapi.sync import bootstrap as boot
from turso_dbapi.sync import metadata as sync_meta
from turso_dbapi.sync.stage import stage_path, write_stage


def test_page1_is_patched_to_rollback_journal_a_moved_counter_and_the_size():
    new = bytearray(PAGE_SIZE)
    new[18] = new[19] = 2  # WAL, as a server's page 1 says
    struct.pack_into(">I", new, 24, 7)
    old = bytearray(PAGE_SIZE)
    struct.pack_into(">I", old, 24, 9)
    out = pull_apply.patch_page1(bytes(new), bytes(old), 42)
    assert (out[18], out[19]) == (1, 1)
    assert struct.unpack_from(">III", out, 24)[0] == 10  # max(old, new) + 1
    assert struct.unpack_from(">I", out, 28)[0] == 42  # the in-header size
    assert struct.unpack_from(">I", out, 92)[0] == 10  # valid for the new counter
    assert pull_apply.patch_page1(bytes(new), None, 1)[24:28] == struct.pack(">I", 8)


class Replica:
    """A fully bootstrapped replica of revision 1 of ``source`` with an attached handler."""

    def __init__(self, tmp_path, source: FakeSyncSource):
        ensure_registered()
        self.path = str(tmp_path / "replica" / "db")
        os.makedirs(os.path.dirname(self.path))
        self.meta, self.store = boot.bootstrap(self.path, source, {}, "unit")
        boot.complete(self.path, self.store, self.meta, lambda: None)
        self.handler = MissHandler(self.store, source)
        self.conn_id = self.store.attach(self.handler)

    def connect(self, **kw) -> sqlite3.Connection:
        return sqlite3.connect(replica_uri(self.path, self.conn_id), uri=True, **kw)

    def close(self):
        pagestore.release_store(self.store)


@pytest.fixture
def versions(tmp_path):
    v1 = make_database(tmp_path / "v1.db", rows=600)
    v2 = tmp_path / "v2.db"
    shutil.copy(v1, v2)
    con = sqlite3.connect(v2, isolation_level=None)
    con.execute("UPDATE items SET name = 'changed-' || id WHERE id % 50 = 0")
    con.execute("DELETE FROM items WHERE id > 500")
    con.execute("VACUUM")  # a smaller file: pages past the new size must go
    con.close()
    return v1, v2


@pytest.fixture
def replica(tmp_path, versions):
    source = FakeSyncSource(*versions)
    source.revisions = source.revisions[:1]  # the replica bootstraps at revision 1
    r = Replica(tmp_path, source)
    r.source, r.v2 = source, file_pages(versions[1])
    yield r
    r.close()


def stage_v2(r: Replica) -> None:
    new = dict(r.v2)
    old = {p: r.store.read_page(p) for p in range(1, r.store.remote_pages + 1)}
    changed = {p: d for p, d in new.items() if p == 1 or old.get(p) != d}
    write_stage(r.path, "2", len(new), changed)


def rows(con):
    return con.execute("SELECT id, name FROM items ORDER BY id").fetchall()


def test_an_applied_revision_reads_exactly_as_the_new_file(replica, versions):
    reader = replica.connect()
    assert len(rows(reader)) == 600
    stage_v2(replica)
    with apply_flag.applying():
        meta = pull_apply.apply_staged(replica.store, replica.path, replica.conn_id, "test")
    assert (meta.synced_revision, meta.pull_gen, meta.pending_pull) == ("2", 1, None)
    assert meta.db_size_pages == len(replica.v2) == replica.store.remote_pages
    assert sync_meta.load(replica.path) == meta
    assert not os.path.exists(stage_path(replica.path))
    assert not apply_flag.ApplyFlag(replica.store).is_set()
    expected = rows(sqlite3.connect(versions[1]))
    assert rows(reader) == expected  # an open connection sees the new revision at once
    assert reader.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert reader.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_nothing_staged_changes_nothing(replica):
    before = sync_meta.load(replica.path)
    assert pull_apply.apply_staged(replica.store, replica.path, replica.conn_id, "test") is None
    assert sync_meta.load(replica.path) == before


def test_a_damaged_stage_of_an_interrupted_apply_is_reported_not_used(replica):
    meta = sync_meta.load(replica.path)
    meta.pending_pull = {"revision": "2", "db_size": 3}
    sync_meta.save(replica.path, meta)
    open(stage_path(replica.path), "wb").write(b"TDBPULL2 torn")
    with pytest.raises(OperationalError, match="staged pages are missing or damaged"):
        pull_apply.apply_staged(replica.store, replica.path, replica.conn_id, "test")


def test_local_changes_stop_the_apply_before_it_begins(replica):
    con = replica.connect()
    con.execute("UPDATE items SET name = 'local' WHERE id = 1")
    con.commit()
    stage_v2(replica)
    # a raw connection of the VFS wrote without change capture: nothing records the change
    with pytest.raises(OperationalError, match="has local changes .* made without change capture"):
        pull_apply.apply_staged(replica.store, replica.path, replica.conn_id, "test")
    assert sync_meta.load(replica.path).synced_revision == "1"
    assert not os.path.exists(stage_path(replica.path))  # the apply never began: no trace
    assert con.execute("SELECT name FROM items WHERE id = 1").fetchone() == ("local",)


def test_an_open_transaction_makes_the_apply_wait_then_give_up_changing_nothing(replica):
    holder = replica.connect()
    holder.execute("BEGIN")
    holder.execute("SELECT count(*) FROM items").fetchone()  # holds SHARED
    stage_v2(replica)
    with pytest.raises(OperationalError, match="could not lock the replica"):
        pull_apply.apply_staged(replica.store, replica.path, replica.conn_id, "test", timeout=0.2)
    assert sync_meta.load(replica.path).synced_revision == "1"
    assert len(rows(holder)) == 600
    holder.rollback()
