"""The page-version log's contracts (server/page_log.py): append-only revisions, time
travel by (client revision, server revision], selectors, zero pages, byte reads."""

from __future__ import annotations

import pytest

from turso_dbapi.protocol.sync_wire import PAGE_SIZE
from turso_dbapi.server.page_log import ZERO_PAGE, PageLog, default_log_path, read_bytes


def page(tag: int) -> bytes:
    return bytes([tag]) * PAGE_SIZE


@pytest.fixture
def log(tmp_path):
    log = PageLog(str(tmp_path / "db-revlog"))
    yield log
    log.close()


def test_revision_zero_is_the_empty_database_and_revisions_count_up_from_one(log):
    assert log.latest == 0 and log.db_size_at(0) == 0
    assert log.append({1: page(1), 2: page(2)}, 2) == 1
    assert log.append({2: page(3)}, 3) == 2
    assert (log.latest, log.latest_db_size) == (2, 3)
    assert [log.db_size_at(r) for r in (0, 1, 2, 9)] == [0, 2, 3, 3]


def test_a_full_plan_answers_every_page_below_the_size_at_its_newest_version(log):
    log.append({1: page(1), 2: page(2)}, 2)
    log.append({2: page(3)}, 3)  # page 3 grew but was never written: a zero page
    db_size, plan = log.plan(0, 2, None)
    assert db_size == 3
    assert dict(log.read(plan)) == {0: page(1), 1: page(3), 2: ZERO_PAGE}


def test_time_travel_answers_pages_as_of_the_server_revision_asked(log):
    log.append({1: page(1), 2: page(2)}, 2)
    log.append({2: page(3)}, 2)
    _, plan = log.plan(0, 1, None)
    assert dict(log.read(plan)) == {0: page(1), 1: page(2)}  # revision 1, not the newest


def test_an_incremental_plan_holds_only_pages_changed_in_the_interval(log):
    log.append({1: page(1), 2: page(2), 3: page(3)}, 3)
    log.append({2: page(4)}, 3)
    log.append({3: page(5)}, 3)
    _, plan = log.plan(1, 3, None)
    assert dict(log.read(plan)) == {1: page(4), 2: page(5)}
    _, plan = log.plan(2, 3, None)
    assert dict(log.read(plan)) == {2: page(5)}
    _, plan = log.plan(3, 3, None)
    assert plan == []


def test_a_selector_restricts_the_plan_and_is_clipped_to_the_size(log):
    log.append({p: page(p) for p in range(1, 6)}, 5)
    _, plan = log.plan(0, 1, [(1, 3), (4, 100)])
    assert [pid for pid, _ in plan] == [1, 2, 4]


def test_rows_are_never_rewritten_so_a_reopened_log_answers_the_same(tmp_path):
    path = str(tmp_path / "db-revlog")
    log = PageLog(path)
    log.append({1: page(1)}, 1)
    log.append({1: page(2)}, 1)
    count = log.version_count()
    log.close()
    again = PageLog(path)
    try:
        assert (again.latest, again.latest_db_size, again.version_count()) == (2, 1, count)
        assert again.latest_page(1) == page(2)
        _, plan = again.plan(0, 1, None)
        assert dict(again.read(plan)) == {0: page(1)}
    finally:
        again.close()


def test_read_bytes_is_the_file_as_of_a_revision(log):
    log.append({1: page(1), 2: page(2)}, 2)
    assert read_bytes(log, 1, 0, 0) == b""
    assert read_bytes(log, 1, PAGE_SIZE - 2, PAGE_SIZE + 2) == bytes([1, 1, 2, 2])
    assert read_bytes(log, 1, 0, 2 * PAGE_SIZE) == page(1) + page(2)


def test_default_log_path_is_beside_the_database():
    assert default_log_path("/x/app.db") == "/x/app.db-revlog"
