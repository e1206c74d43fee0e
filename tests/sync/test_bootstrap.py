"""Bootstrap's contracts (sync/bootstrap.py): the strategies choose the pages, the header
page is always present, the claim comes first and the final metadata only after the one
flush, a failed last step leaves nothing, the metadata never holds a secret, stale files
are removed first, and the locks exclude each other."""

from __future__ import annotations

import os

import pytest

from support._fake_sync import FakeSyncSource
from support.databases import make_database
from turso_dbapi.storage import pagestore
from turso_dbapi.sync import bootstrap as boot
from turso_dbapi.sync import metadata as sync_meta


@pytest.mark.parametrize("options, pages, partial", [
    ({}, None, False),
    ({"partial": True}, 1, True),  # page 1 alone: the rest on evidence (issue 13)
    ({"partial": True, "segment_size": 8192}, 1, True),  # a readahead size, not a prefix
    ({"bootstrap_prefix": 100}, 1, True),  # under a page: rounded up to the header page
    ({"bootstrap_prefix": 3 * 4096 + 1}, 3, True),
    ({"bootstrap_query": "SELECT 1", "partial": True}, None, True),
])
def test_strategies(options, pages, partial):
    assert boot.prefix_pages(options) == pages
    assert boot.is_partial(options) is partial


def test_the_store_identity_is_the_client_id_not_the_revision():
    assert boot.store_identity("a") == boot.store_identity("a") != boot.store_identity("b")
    assert len(boot.store_identity("a")) == 32


@pytest.fixture
def source(tmp_path):
    return FakeSyncSource(make_database(tmp_path / "server.db", rows=400))


def release(store):
    pagestore.release_store(store)


def test_a_full_bootstrap_stores_every_page_then_commits_the_metadata(tmp_path, source):
    replica = str(tmp_path / "r" / "db")
    os.makedirs(os.path.dirname(replica))
    meta, store = boot.bootstrap(replica, source, {}, "unit")
    try:
        pages = source.pages_at("1")
        assert all(store.read_page(p) == data for p, data in pages.items())
        claim = sync_meta.load(replica)  # step 1 leaves the claim only
        assert claim.bootstrapping and claim.synced_revision is None
        assert claim.client_unique_id == meta.client_unique_id
        flushes = store.flushes()
        boot.complete(replica, store, meta, lambda: None)
        assert store.flushes() == {k: flushes[k] + 1 for k in flushes}  # one flush of all three
        saved = sync_meta.load(replica)
        assert saved == meta and not saved.bootstrapping
        assert (meta.synced_revision, meta.db_size_pages, meta.partial) == ("1", len(pages), False)
        assert meta.remote_url == "https://sync.example"  # credentials are never saved
        assert meta.client_unique_id.startswith("unit-")
    finally:
        release(store)


def test_a_failed_last_step_leaves_the_path_as_it_was(tmp_path, source):
    os.makedirs(tmp_path / "r")
    replica = str(tmp_path / "r" / "db")
    meta, store = boot.bootstrap(replica, source, {}, "unit")

    def install():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        boot.complete(replica, store, meta, install)
    assert os.listdir(tmp_path / "r") == []  # no store file, no metadata, no temp file
    assert store.closed


def test_a_partial_bootstraps_flush_leaves_its_synced_pages_to_heal(tmp_path, source):
    replica = str(tmp_path / "db")
    meta, store = boot.bootstrap(replica, source, {"bootstrap_prefix": 2 * 4096}, "unit")
    try:
        flushes = store.flushes()
        boot.complete(replica, store, meta, lambda: None)
        assert store.flushes() == {"local": flushes["local"] + 1, "synced": flushes["synced"],
                                   "map": flushes["map"] + 1}
        assert not sync_meta.load(replica).bootstrapping
    finally:
        release(store)


def test_a_prefix_bootstrap_stores_the_prefix_and_records_a_partial_revision(tmp_path, source):
    replica = str(tmp_path / "db")
    meta, store = boot.bootstrap(replica, source, {"bootstrap_prefix": 3 * 4096}, "unit")
    try:
        assert [p for p in range(1, store.remote_pages + 1) if store.is_present(p)] == [1, 2, 3]
        assert meta.partial and meta.partial_bootstrap_server_revision == "1"
    finally:
        release(store)


def test_a_bootstrap_without_the_header_page_fetches_it(tmp_path, source):
    replica = str(tmp_path / "db")
    meta, store = boot.bootstrap(replica, source, {"bootstrap_query": "SELECT 1"}, "unit")
    try:
        assert store.read_page(1) == source.pages_at("1")[1]
        assert source.requests[-1] == "fetch [1] @1"
    finally:
        release(store)


def test_stale_files_of_an_earlier_replica_are_removed_first(tmp_path, source):
    replica = str(tmp_path / "db")
    for suffix in ("-journal", "-tdbmap", "-tdblocal", "-tdbmeta.json", "-tdbpull"):
        open(replica + suffix, "wb").write(b"stale")
    meta, store = boot.bootstrap(replica, source, {}, "unit")
    try:
        assert not os.path.exists(replica + "-journal") and not os.path.exists(replica + "-tdbpull")
        assert store.read_page(2) == source.pages_at("1")[2]
    finally:
        release(store)


def test_the_open_and_pull_locks_are_exclusive_and_separate(tmp_path):
    replica = str(tmp_path / "db")
    with boot.pull_lock(replica) as held:
        assert held
        with boot.pull_lock(replica, wait=False) as again:
            assert again is False
        with boot.open_lock(replica) as other:  # another lock file: not blocked
            assert other
    with boot.pull_lock(replica, wait=False) as free:
        assert free
    assert sorted(os.listdir(tmp_path)) == ["db-pull-tdbsync.lock", "db-tdbsync.lock"]
