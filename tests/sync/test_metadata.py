"""The sync metadata's contracts (sync/metadata.py): ``<replica>-tdbsync.json``, format v1,
"missing" and "empty" both mean no metadata, damage is a clear error, unknown fields are
ignored, and configuration is rewritten only when a new non-null value differs."""

from __future__ import annotations

import json
import os

import pytest

from turso_dbapi.errors import OperationalError
from turso_dbapi.sync import metadata as sync_meta
from turso_dbapi.sync.metadata import SyncMeta


def test_the_file_name_and_format_are_pinned(tmp_path):
    replica = str(tmp_path / "r.db")
    assert sync_meta.meta_path(replica) == replica + "-tdbsync.json"
    meta = SyncMeta.new("cli")
    assert meta.client_unique_id.startswith("cli-") and meta.version == "v1"
    sync_meta.save(replica, meta)
    raw = json.loads(open(replica + "-tdbsync.json").read())
    assert set(raw) == {
        "client_unique_id", "synced_revision", "partial_bootstrap_server_revision",
        "db_size_pages", "pull_gen", "last_pull_unix_time", "last_push_unix_time", "remote_url",
        "segment_size", "prefetch", "pending_pull", "version"}
    meta.bootstrapping = True  # a bootstrap's claim (sync/bootstrap.py) says so; only it
    sync_meta.save(replica, meta)
    assert json.loads(open(replica + "-tdbsync.json").read())["bootstrapping"] is True
    assert sync_meta.load(replica).bootstrapping


def test_save_then_load_round_trips_and_leaves_no_temporary(tmp_path):
    replica = str(tmp_path / "r.db")
    meta = SyncMeta.new("x")
    meta.synced_revision, meta.db_size_pages, meta.pending_pull = "r9", 12, {"revision": "r10", "db_size": 13}
    sync_meta.save(replica, meta)
    assert sync_meta.load(replica) == meta
    assert sorted(os.listdir(tmp_path)) == ["r.db-tdbsync.json"]


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_missing_or_empty_means_no_metadata(tmp_path, text):
    replica = str(tmp_path / "r.db")
    if text is not None:
        open(replica + "-tdbsync.json", "w").write(text)
    assert sync_meta.load(replica) is None


@pytest.mark.parametrize("text, message", [
    ("{broken", "not valid JSON"),
    ("[]", "no version field"),
    ('{"version": "v2", "client_unique_id": "c"}', "unsupported version"),
    ('{"version": "v1"}', "lacks client_unique_id"),
])
def test_damaged_metadata_is_a_clear_error(tmp_path, text, message):
    replica = str(tmp_path / "r.db")
    open(replica + "-tdbsync.json", "w").write(text)
    with pytest.raises(OperationalError, match=message):
        sync_meta.load(replica)


def test_unknown_fields_are_ignored(tmp_path):
    replica = str(tmp_path / "r.db")
    open(replica + "-tdbsync.json", "w").write('{"version": "v1", "client_unique_id": "c", "future": 1}')
    assert sync_meta.load(replica) == SyncMeta(client_unique_id="c")


def test_merge_configuration_takes_only_new_non_null_values():
    meta = SyncMeta(client_unique_id="c", remote_url="https://a", segment_size=4096)
    assert not sync_meta.merge_configuration(meta, remote_url="https://a", segment_size=None, prefetch=None)
    assert sync_meta.merge_configuration(meta, remote_url="https://b", segment_size=None)
    assert (meta.remote_url, meta.segment_size) == ("https://b", 4096)


def test_partial_is_whether_a_partial_bootstrap_revision_is_recorded():
    assert not SyncMeta(client_unique_id="c").partial
    assert SyncMeta(client_unique_id="c", partial_bootstrap_server_revision="3").partial
