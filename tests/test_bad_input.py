"""Bad input is a DB-API error naming the problem, raised early (issue 14, items 10 and 11).

The stdlib raises ``ProgrammingError`` for a bad argument and ``OperationalError`` ("unable
to open database file") for a file it cannot open; so do we, before any request is sent
where the input alone tells.
"""

from __future__ import annotations

import os

import pytest

import turso_dbapi
from turso_dbapi.protocol import roaring

# Nothing listens here: an option error must be raised before any connection attempt
# (a connect attempt would surface as a RemoteError instead).
DEAD = "http://127.0.0.1:9"


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1/db.sqlite", "https://h:99999/db.sqlite",
                                 "http://user:secret@[::1/x?authToken=secret"])
def test_a_malformed_url_is_a_programming_error_that_shows_no_secret(url):
    with pytest.raises(turso_dbapi.ProgrammingError, match="invalid URL") as err:
        turso_dbapi.connect(url, retries=0)
    assert "secret" not in str(err.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan"), float("inf"), "1e999", "0", True])
def test_a_timeout_that_is_not_a_positive_finite_number_fails_at_parsing(value):
    with pytest.raises(turso_dbapi.ProgrammingError, match="http_timeout"):
        turso_dbapi.connect(DEAD + "/db.sqlite", http_timeout=value)
    with pytest.raises(turso_dbapi.ProgrammingError, match="http_timeout"):
        turso_dbapi.connect(f"{DEAD}/db.sqlite?http_timeout={value}")


@pytest.mark.parametrize("option, value", [
    ("bootstrap_prefix", 10**15), ("bootstrap_prefix", "1000000000000000"),
    ("segment_size", "2g"), ("readahead_max", 10**12), ("retries", 10**6),
    ("long_poll_timeout_ms", 2**32), ("http_deadline", "nan"), ("retries", "9" * 5000),
])
def test_sizes_and_counts_are_bounded_at_parsing(option, value):
    with pytest.raises(turso_dbapi.ProgrammingError, match=option):
        turso_dbapi.connect(DEAD + "/", **{option: value})


@pytest.mark.timeout(60)
def test_the_largest_bootstrap_prefix_selects_everything_without_materialising_it(turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(3000) FROM generate_series(1, 20)")
    # 2^32-2 pages: built per container (65536 of them), not as 4 billion page ids
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"),
                               bootstrap_prefix=0xFFFFFFFE * 4096)
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (20,)
    assert conn.stats().requests == 1  # every page came with the bootstrap
    conn.close()


@pytest.mark.timeout(60)
def test_a_range_over_the_whole_u32_space_serializes_per_container():
    blob = roaring.serialize_range(0, 2**32)
    assert roaring.deserialize_ranges(blob) == [(0, 2**32)]
    assert len(blob) < 2**20


@pytest.mark.parametrize("mode", ["turso", "range"])
def test_a_local_path_that_is_a_directory_is_an_operational_error_naming_it(tmp_path, mode):
    url = DEAD + ("/" if mode == "turso" else "/db.sqlite")
    with pytest.raises(turso_dbapi.OperationalError, match=f"'{tmp_path}': it is a directory"):
        turso_dbapi.connect(url, local_path=str(tmp_path), retries=0)


@pytest.mark.parametrize("mode", ["turso", "range"])
def test_a_local_path_under_a_regular_file_is_an_operational_error_naming_it(tmp_path, mode):
    (tmp_path / "plain").write_bytes(b"not a directory")
    bad = str(tmp_path / "plain" / "sub" / "r.db")
    url = DEAD + ("/" if mode == "turso" else "/db.sqlite")
    with pytest.raises(turso_dbapi.OperationalError, match="plain is a file, not a directory") as err:
        turso_dbapi.connect(url, local_path=bad, retries=0)
    assert bad in str(err.value)
    assert not isinstance(err.value, turso_dbapi.RemoteError)  # refused before any request


def test_a_local_path_that_cannot_be_written_is_an_operational_error(tmp_path):
    # sysfs refuses new files to every user, root included: an unwritable location that
    # exists on every Linux (a read-only mount needs privileges a test does not have).
    assert os.path.isdir("/sys/kernel"), "this test needs Linux's /sys"
    for local in ("/sys/kernel/tdb-test/r.db", "/sys/tdb-test.db"):
        with pytest.raises(turso_dbapi.OperationalError, match="unable to open database file") as err:
            turso_dbapi.connect(DEAD + "/", local_path=local, retries=0)
        assert "tdb-test" in str(err.value)
        assert not isinstance(err.value, turso_dbapi.RemoteError)
