"""Every file of a replica is named in storage/files.py: the C core uses the same names,
the sets the code removes are the documented ones, and a path's kind is told by them."""

from __future__ import annotations

import re
from pathlib import Path

from turso_dbapi import _native
from turso_dbapi.storage import files

NATIVE = Path(_native.__file__).parent


def test_every_suffix_literal_in_the_c_core_is_one_of_the_named_files():
    found = set()
    for source in NATIVE.glob("*.[ch]"):
        found |= set(re.findall(r'"(-tdb[a-z.]*)"', source.read_text()))
    assert found == {files.LOCAL, files.SIDECAR, files.WAL_SYNCED}
    assert found <= set(files.ALL_SUFFIXES)


def test_the_suffixes_are_pinned():
    # On-disk names are a contract with replicas made by earlier versions.
    assert (files.LOCAL, files.SIDECAR, files.CACHE_META, files.SYNC_META) == (
        "-tdblocal", "-tdbmap", "-tdbmeta.json", "-tdbsync.json")
    assert (files.LOCK, files.PULL_LOCK, files.STAGE) == ("-tdbsync.lock", "-pull-tdbsync.lock", "-tdbpull")
    assert files.STORE_SUFFIXES == ("", "-tdblocal", "-tdbmap", "-tdbmeta.json", "-journal", "-wal", "-shm",
                                    "-tdbwalsync")


def test_remove_store_files_keeps_sync_metadata_locks_and_stage(tmp_path):
    base = str(tmp_path / "db")
    for suffix in files.ALL_SUFFIXES:
        open(base + suffix, "wb").close()
    files.remove_store_files(base)
    files.remove_store_files(base)  # missing files are fine
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted("db" + s for s in (files.SYNC_META, files.LOCK, files.PULL_LOCK,
                                                files.STAGE, files.STAGE + ".tmp", files.REPLAY,
                                                files.PUSH_STATE, files.PUSH_LOCK))


def test_replica_kind(tmp_path):
    base = tmp_path / "db"
    assert files.replica_kind(str(base)) is None
    assert files.replica_kind(":memory:") is None and files.replica_kind(None) is None
    open(str(base) + files.SIDECAR, "wb").close()
    assert files.replica_kind(base) == "range"
    open(str(base) + files.SYNC_META, "wb").close()
    assert files.replica_kind(str(base).encode()) == "turso"
