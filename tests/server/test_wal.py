"""What the served database relies on from server/wal.py: a live WAL is indexed to the
newest committed image of each page, and appended frames are read by SQLite itself.
(The byte-level parser and writer are checked against the oracle in test_native_wal.py.)"""

from __future__ import annotations

import sqlite3

import pytest

from turso_dbapi.server.wal import WalFormatError, append_frames, parse_wal

PS = 4096


def live_wal(tmp_path):
    path = str(tmp_path / "w.db")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute(f"PRAGMA page_size={PS}")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t(x)")
    for i in range(3):
        con.execute("INSERT INTO t VALUES (?)", (f"row-{i}" * 100,))
    return path, con


def test_a_live_wal_indexes_the_newest_committed_page_images(tmp_path):
    path, con = live_wal(tmp_path)
    data = open(path + "-wal", "rb").read()
    scan = parse_wal(data)
    assert scan.page_size == PS and scan.max_frame == len(scan.frames) > 0
    assert scan.db_size == con.execute("PRAGMA page_count").fetchone()[0]
    assert scan.end_offset == 32 + scan.max_frame * scan.frame_size
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # now the file holds what the WAL held
    db = open(path, "rb").read()
    for pgno in scan.page_index:
        assert scan.page(data, pgno) == db[(pgno - 1) * PS:pgno * PS], pgno
    assert scan.page(data, 10 ** 6) is None


def test_an_empty_or_foreign_file_is_a_format_error_naming_the_problem():
    with pytest.raises(WalFormatError):
        parse_wal(b"")
    with pytest.raises(WalFormatError):
        parse_wal(b"\0" * 64)


def test_appended_frames_extend_the_scan_as_one_more_commit(tmp_path):
    path, con = live_wal(tmp_path)
    data = open(path + "-wal", "rb").read()
    scan = parse_wal(data)
    target = max(scan.page_index)
    image = bytes(reversed(scan.page(data, target)))
    more = append_frames(scan, [[(target, image)]], [scan.db_size])
    again = parse_wal(data[:scan.end_offset] + more)
    assert again.max_frame == scan.max_frame + 1 and again.db_size == scan.db_size
    assert again.page(data[:scan.end_offset] + more, target) == image
    assert (again.salt1, again.salt2) == (scan.salt1, scan.salt2)
