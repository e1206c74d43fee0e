"""The files at a replica path: a file we did not create is never touched, a replica answers
to one remote, and damage to our side files is reported, never a silent loss of local
pages (issue 14, items 1-3; storage/claim.py)."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest
from support.databases import make_database

import turso_dbapi


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _precious(path) -> str:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE precious(x)")
    con.execute("INSERT INTO precious VALUES ('keep me')")
    con.commit()
    con.close()
    return _digest(path)


def _served(nginx, tmp_path, name, rows=300, seed=1):
    nginx.place(name, make_database(tmp_path / f"src-{name}", rows=rows, seed=seed))
    return nginx.url(name)


def _turso(server, n=40):
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x BLOB)")
    server.db_sql(f"INSERT INTO t SELECT value, randomblob(1500) FROM generate_series(1, {n})")
    return server


def _with_local_table(url, path):
    con = turso_dbapi.connect(url, local_path=path)
    con.execute("CREATE TABLE mine(v)")
    con.execute("INSERT INTO mine VALUES ('committed locally')")
    con.commit()
    con.close()


# -- 1. a file we did not create ----------------------------------------------------------


@pytest.mark.parametrize("partial", [True, False])
def test_an_ordinary_database_at_local_path_is_refused_and_untouched_range(nginx, tmp_path, partial):
    url = _served(nginx, tmp_path, "r1.db")
    app = str(tmp_path / "app.db")
    before = _precious(app)
    with pytest.raises(turso_dbapi.OperationalError, match="app.db.*not created by turso_dbapi"):
        turso_dbapi.connect(url, partial=partial, local_path=app)
    assert _digest(app) == before
    assert sqlite3.connect(app).execute("SELECT x FROM precious").fetchall() == [("keep me",)]
    assert not [n for n in os.listdir(tmp_path) if n.startswith("app.db-tdbm")]


@pytest.mark.parametrize("partial", [True, False])
def test_an_ordinary_database_at_local_path_is_refused_and_untouched_turso(turso_server, tmp_path, partial):
    _turso(turso_server)
    app = str(tmp_path / "app.db")
    before = _precious(app)
    requests = turso_server.stats.get("pull_requests", 0)
    with pytest.raises(turso_dbapi.OperationalError, match="app.db.*not created by turso_dbapi"):
        turso_dbapi.connect(turso_server.url, partial=partial, local_path=app)
    assert _digest(app) == before
    assert sqlite3.connect(app).execute("SELECT x FROM precious").fetchall() == [("keep me",)]
    assert turso_server.stats.get("pull_requests", 0) == requests  # refused before the network


def test_any_foreign_file_even_an_empty_one_is_refused(turso_server, tmp_path):
    _turso(turso_server)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database")
    with pytest.raises(turso_dbapi.OperationalError, match="notes.txt"):
        turso_dbapi.connect(turso_server.url, local_path=str(notes))
    assert notes.read_text() == "not a database"


# -- 2. one remote per replica ------------------------------------------------------------


def test_a_turso_replica_reopened_with_another_servers_url_is_refused(turso_server_factory, tmp_path):
    a = _turso(turso_server_factory(), 40)
    b = _turso(turso_server_factory(), 90)
    path = str(tmp_path / "r.db")
    con = turso_dbapi.connect(a.url, partial=True, local_path=path)
    assert con.execute("SELECT count(*) FROM t WHERE id = 1").fetchone() == (1,)
    con.close()
    with pytest.raises(turso_dbapi.OperationalError, match=f"belongs to {a.url}.*not {b.url}"):
        turso_dbapi.connect(b.url, partial=True, local_path=path)
    again = turso_dbapi.connect(path)  # still A's replica, whole
    assert again.execute("SELECT count(*) FROM t").fetchone() == (40,)
    assert again.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert again.stats().url == a.url
    again.close()


def test_a_range_cache_re_pointed_at_another_url_is_refused(nginx, tmp_path):
    one = _served(nginx, tmp_path, "one.db", rows=300, seed=1)
    two = _served(nginx, tmp_path, "two.db", rows=350, seed=2)
    path = str(tmp_path / "cache.db")
    turso_dbapi.connect(one, partial=True, local_path=path).close()
    with pytest.raises(turso_dbapi.OperationalError, match="one.db.*not .*two.db"):
        turso_dbapi.connect(two, partial=True, local_path=path)
    con = turso_dbapi.connect(one, partial=True, local_path=path)
    assert con.execute("SELECT count(*) FROM items").fetchone() == (300,)
    con.close()


def test_a_range_cache_with_local_changes_is_kept_when_the_remote_version_changes(nginx, tmp_path):
    url = _served(nginx, tmp_path, "ver.db", rows=300, seed=3)
    path = str(tmp_path / "cache.db")
    _with_local_table(url, path)
    nginx.place("ver.db", make_database(tmp_path / "v2.db", rows=350, seed=4))
    with pytest.raises(turso_dbapi.OperationalError, match="another version.*local changes"):
        turso_dbapi.connect(url, partial=True, local_path=path)
    assert os.path.getsize(path + "-tdblocal") > 0  # nothing removed


# -- 3. damaged side files ----------------------------------------------------------------


def _damage_map_header(path):
    with open(path + "-tdbmap", "r+b") as f:
        f.write(b"garbage!" * 8)


@pytest.mark.parametrize("damage", ["delete -tdbmap", "garbage in the -tdbmap header", "delete -tdbsync.json"])
def test_damaged_side_files_of_a_turso_replica_with_local_changes_are_reported(turso_server, tmp_path, damage):
    _turso(turso_server)
    path = str(tmp_path / "r.db")
    _with_local_table(turso_server.url, path)
    if damage == "delete -tdbmap":
        os.remove(path + "-tdbmap")
    elif damage == "delete -tdbsync.json":
        os.remove(path + "-tdbsync.json")
    else:
        _damage_map_header(path)
    local = _digest(path + "-tdblocal")
    for target in (path, turso_server.url):  # by its path, and with the URL
        kw = {} if target == path else {"local_path": path}
        with pytest.raises(turso_dbapi.OperationalError, match="r.db.*local changes.*nothing was changed"):
            turso_dbapi.connect(target, **kw)
    assert _digest(path + "-tdblocal") == local


def test_a_turso_replica_whose_sidecar_was_lost_is_refused_as_it_holds_local_pages(turso_server, tmp_path):
    # A Turso replica always holds local pages: its change capture (sync/capture.py) lives
    # in the database file. Without the sidecar nobody can tell them apart from user
    # changes, so the open is refused, naming the files, and nothing is removed.
    _turso(turso_server)
    path = str(tmp_path / "r.db")
    turso_dbapi.connect(turso_server.url, partial=True, local_path=path).close()
    os.remove(path + "-tdbmap")
    with pytest.raises(turso_dbapi.OperationalError, match="lost its sidecar.*local changes"):
        turso_dbapi.connect(path)
    assert os.path.getsize(path + "-tdblocal") > 0


@pytest.mark.parametrize("damage", ["delete -tdbmap", "garbage in the -tdbmap header"])
def test_damaged_sidecar_of_a_range_cache_with_local_changes_is_reported(nginx, tmp_path, damage):
    url = _served(nginx, tmp_path, "dmg.db")
    path = str(tmp_path / "cache.db")
    _with_local_table(url, path)
    if damage == "delete -tdbmap":
        os.remove(path + "-tdbmap")
    else:
        _damage_map_header(path)
    with pytest.raises(turso_dbapi.OperationalError, match="sidecar.*local changes"):
        turso_dbapi.connect(url, partial=True, local_path=path)


def test_garbage_in_a_range_caches_checksum_entries_heals_by_refetching(nginx, tmp_path):
    url = _served(nginx, tmp_path, "crc.db", rows=400, seed=5)
    path = str(tmp_path / "cache.db")
    con = turso_dbapi.connect(url, partial=True, local_path=path)
    want = con.execute("SELECT count(*), sum(length(payload)), sum(length(body)) FROM items, docs "
                       "WHERE docs.id = items.id").fetchall()
    con.close()
    with open(path + "-tdbmap", "r+b") as f:  # both CRC words of the first 64 pages
        f.seek(4096)
        f.write(os.urandom(64 * 8))
    con = turso_dbapi.connect(url, partial=True, local_path=path)
    assert con.execute("SELECT count(*), sum(length(payload)), sum(length(body)) FROM items, docs "
                       "WHERE docs.id = items.id").fetchall() == want
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.stats().crc_failures > 0
    con.close()
