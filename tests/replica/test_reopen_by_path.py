"""``connect(local_path)`` of a replica this driver made reopens it through the VFS: a
Turso replica with its saved URL, an HTTP-range cache with the URL in its metadata — never
as a plain file, whose unfetched pages are holes that would read as zeros."""

from __future__ import annotations

import sqlite3

import pytest

import turso_dbapi


def test_a_range_cache_reopens_lazily_by_its_path(nginx, databases, tmp_path):
    nginx.place("reopen.db", databases["p4096"])
    path = str(tmp_path / "cache" / "db")
    expected = sqlite3.connect(str(databases["p4096"])).execute(
        "SELECT count(*), sum(id) FROM items").fetchone()
    first = turso_dbapi.connect(nginx.url("reopen.db"), partial=True, local_path=path)
    first.execute("SELECT * FROM items WHERE id = 7").fetchall()
    first.close()
    con = turso_dbapi.connect(path)  # no URL: the cache's metadata has it
    assert con.stats().url == nginx.url("reopen.db")
    # reopening costs one revalidation request that reads the header page only
    assert (con.stats().requests, con.stats().bytes_received) == (1, 4096)
    assert con.execute("SELECT count(*), sum(id) FROM items").fetchone() == expected
    assert con.stats().pages_fetched < con.stats().size // 4096  # lazily, not a download
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_cache_whose_url_had_credentials_asks_for_the_url_again(nginx, databases, tmp_path):
    nginx.place("cred.db", databases["p4096"])
    path = str(tmp_path / "c2" / "db")
    url = nginx.url("cred.db") + "?token=pw-secret"  # e.g. a signed/tokened CDN URL
    turso_dbapi.connect(url, partial=True, local_path=path).close()
    with pytest.raises(turso_dbapi.ProgrammingError, match="page cache of a remote database") as info:
        turso_dbapi.connect(path)
    assert "pw-secret" not in str(info.value)
    # given again, the cache is reused (same URL identity: nothing is downloaded twice)
    again = turso_dbapi.connect(url, partial=True, local_path=path)
    assert again.execute("SELECT count(*) FROM items").fetchone()[0] > 0
