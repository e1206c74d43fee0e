"""The pull stage's contracts (sync/stage.py): pages go to disk as they arrive, the stage
is published whole or not at all, and any damage makes it absent, never wrong."""

from __future__ import annotations

import os

import pytest

from turso_dbapi.protocol.sync_wire import PAGE_SIZE
from turso_dbapi.sync.stage import Staged, StageWriter, remove_stage, stage_path, write_stage


def page(tag: int) -> bytes:
    return bytes([tag]) * PAGE_SIZE


def test_a_finished_stage_reads_back_in_arrival_order(tmp_path):
    replica = str(tmp_path / "r.db")
    w = StageWriter(replica)
    for p in (5, 1, 3):
        w.add(p, page(p))
    assert not os.path.exists(stage_path(replica))  # unpublished while written
    w.finish("rev-7", 9)
    staged = Staged.open(replica)
    assert (staged.revision, staged.db_size, staged.count, staged.has_page1) == ("rev-7", 9, 3, True)
    assert list(staged.pages()) == [(5, page(5)), (1, page(1)), (3, page(3))]
    assert not os.path.exists(stage_path(replica) + ".tmp")


def test_reset_starts_over_as_a_retried_request_does(tmp_path):
    replica = str(tmp_path / "r.db")
    w = StageWriter(replica)
    w.add(2, page(2))
    w.reset()
    w.add(4, page(4))
    w.finish("r", 4)
    staged = Staged.open(replica)
    assert (staged.count, staged.has_page1) == (1, False)
    assert list(staged.pages()) == [(4, page(4))]


def test_discard_leaves_no_file(tmp_path):
    replica = str(tmp_path / "r.db")
    w = StageWriter(replica)
    w.add(1, page(1))
    w.discard()
    assert os.listdir(tmp_path) == []
    assert Staged.open(replica) is None


def test_a_page_of_another_size_is_refused(tmp_path):
    w = StageWriter(str(tmp_path / "r.db"))
    with pytest.raises(ValueError, match="expected 4096"):
        w.add(1, b"x" * 100)
    w.discard()


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "tail", "empty"])
def test_a_damaged_stage_is_absent_never_wrong(tmp_path, damage):
    replica = str(tmp_path / "r.db")
    write_stage(replica, "rev", 3, {1: page(1), 2: page(2)})
    path = stage_path(replica)
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        data = data[:-5]
    elif damage == "flip":
        data[100] ^= 1  # inside page 1: the CRC tells
    elif damage == "magic":
        data[0:8] = b"TDBPULL1"
    elif damage == "tail":
        data[-1:] = b"!"
    else:
        data = bytearray()
    open(path, "wb").write(data)
    assert Staged.open(replica) is None


def test_remove_stage_removes_the_stage_and_its_temporary(tmp_path):
    replica = str(tmp_path / "r.db")
    write_stage(replica, "rev", 1, {1: page(1)})
    open(stage_path(replica) + ".tmp", "wb").close()
    remove_stage(replica)
    remove_stage(replica)  # idempotent
    assert os.listdir(tmp_path) == []


def test_the_stage_file_name_is_pinned(tmp_path):
    # The on-disk format is a contract with replicas made by earlier versions.
    assert stage_path("/x/r.db") == "/x/r.db-tdbpull"
    replica = str(tmp_path / "r.db")
    write_stage(replica, "ab", 2, {1: page(1)})
    data = open(stage_path(replica), "rb").read()
    assert data[:8] == b"TDBPULL2" and data[-8:] == b"TDBPULL."
    assert len(data) == 8 + (4 + PAGE_SIZE) + 2 + 4 + 8 + 4 + 4 + 8
