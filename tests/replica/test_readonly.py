"""Read-only replicas (issue 15.6): ``readonly=True`` (also ``?readonly=true`` in the URL, and
``mode=ro`` in a ``file:`` URI of a replica) opens an existing replica the way
``sqlite3.connect("file:x.db?mode=ro", uri=True)`` opens a file: every write fails with the
stdlib's own error, and nothing is ever written to any of the replica's files (checked by
size, mtime and SHA-256 of every file in its directory). A page the replica has not cached
cannot be fetched (storing it would write): a clear error, no request.

The read-only directory is real where the machine allows it: a private mount namespace
(``unshare -m``) in which the replica's directory is bind-mounted read-only, so any write
fails with EROFS even as root. Where ``unshare`` is unavailable the same script instead
asserts that every file of the replica set is open read-only (``/proc/self/fdinfo``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import turso_dbapi

ROWS = 300


def _fill(path: str) -> None:
    with sqlite3.connect(path) as c:
        c.execute("create table t(id integer primary key, v text)")
        c.executemany("insert into t(v) values (?)", [("x" * 500,) for _ in range(ROWS)])  # ~40 pages
    c.close()


def remote(mode: str, request, tmp_path) -> tuple:
    """(Turso server or None, URL) of the test database: the reference server (Turso sync),
    or nginx serving the file (HTTP ranges; a rollback-journal file, so it is not followed
    live: a WAL-mode one is, which writes its cache)."""
    if mode == "turso":
        server = request.getfixturevalue("turso_server_factory")(setup=_fill)
        return server, server.url
    nginx = request.getfixturevalue("nginx")
    _fill(str(tmp_path / "served.db"))
    name = f"ro-{os.getpid()}-{tmp_path.name}.db"
    return None, nginx.url(nginx.place(name, tmp_path / "served.db").name)


@pytest.fixture(params=["turso", "range"])
def replica(request, tmp_path):
    """(server, remote URL, replica path) of a replica with every page cached, closed."""
    server, url = remote(request.param, request, tmp_path)
    path = str(tmp_path / "replica" / "r.db")
    con = turso_dbapi.connect(url, local_path=path)  # partial=False: the whole file
    assert con.execute("select count(*) from t").fetchone() == (ROWS,)
    con.close()
    return server, url, path


def snapshot(directory: str) -> dict:
    out = {}
    for name in sorted(os.listdir(directory)):
        p = os.path.join(directory, name)
        with open(p, "rb") as f:
            out[name] = (os.path.getsize(p), os.stat(p).st_mtime_ns, hashlib.sha256(f.read()).hexdigest())
    return out


def stdlib_readonly_error(tmp_path) -> str:
    plain = str(tmp_path / "plain.db")
    sqlite3.connect(plain).execute("create table t(x)").connection.commit()
    con = sqlite3.connect(f"file:{plain}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as info:
        con.execute("insert into t values (1)")
    con.close()
    return str(info.value)


WRITES = ["insert into t(v) values ('y')", "update t set v = 'z' where id = 1", "delete from t",
          "create table u(x)", "pragma user_version = 7"]


def test_writes_fail_as_on_a_read_only_sqlite3_database_and_nothing_is_written(replica, tmp_path):
    server, url, path = replica
    expected = stdlib_readonly_error(tmp_path)
    assert "readonly" in expected
    before = snapshot(os.path.dirname(path))
    sep = "&" if "?" in url else "?"
    opens = [lambda: turso_dbapi.connect(url, local_path=path, readonly=True),
             lambda: turso_dbapi.connect(f"{url}{sep}readonly=true", local_path=path),
             lambda: turso_dbapi.connect(path, readonly=True),  # reopen by its path
             lambda: turso_dbapi.connect(f"file:{path}?mode=ro", uri=True)]
    for open_ in opens:
        con = open_()
        assert con.execute("select count(*), sum(length(v)) from t").fetchone() == (ROWS, 500 * ROWS)
        for sql in WRITES:
            with pytest.raises(sqlite3.OperationalError) as info:
                con.execute(sql)
            assert str(info.value) == expected, sql
        with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
            con.executescript("begin; insert into t(v) values ('w'); commit;")
        con.close()
    assert snapshot(os.path.dirname(path)) == before


def test_pull_and_push_of_a_read_only_turso_replica_are_refused(turso_server_factory, tmp_path):
    server = turso_server_factory(setup=_fill)
    path = str(tmp_path / "rep" / "r.db")
    turso_dbapi.connect(server.url, local_path=path).close()
    server.db_sql("update t set v = 'new' where id = 1")
    before = snapshot(os.path.dirname(path))
    requests_before = server.stats["pull_requests"]
    con = turso_dbapi.connect(path, readonly=True)
    for method in (con.pull, con.push):
        with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
            method()
    assert con.execute("select v from t where id = 1").fetchone() == ("x" * 500,)
    con.close()
    assert snapshot(os.path.dirname(path)) == before and server.stats["pull_requests"] == requests_before


@pytest.mark.parametrize("mode", ["turso", "range"])
def test_a_page_the_replica_has_not_cached_is_a_clear_error_without_a_request(mode, request, tmp_path):
    _, url = remote(mode, request, tmp_path)
    path = str(tmp_path / "rep" / "r.db")
    con = turso_dbapi.connect(url, local_path=path, partial=True, segment_size=4096)
    assert con.execute("select v from t where id = 1").fetchone() == ("x" * 500,)  # a few pages
    con.close()
    before = snapshot(os.path.dirname(path))
    con = turso_dbapi.connect(url, local_path=path, readonly=True)
    assert con.execute("select v from t where id = 1").fetchone() == ("x" * 500,)  # cached: works
    requests = con.stats()["requests"]
    with pytest.raises(sqlite3.OperationalError, match="is not cached, and a read-only replica never writes"):
        con.execute("select count(*), sum(length(v)) from t")  # every page: most are not cached
    assert con.stats()["requests"] == requests  # no fetch was even tried
    con.close()
    assert snapshot(os.path.dirname(path)) == before


def test_readonly_needs_an_existing_replica_and_creates_nothing(request, tmp_path):
    for mode in ("turso", "range"):
        _, url = remote(mode, request, tmp_path)
        with pytest.raises(sqlite3.OperationalError, match="never creates one"):
            turso_dbapi.connect(url, local_path=str(tmp_path / "none" / "r.db"), readonly=True)
    assert not os.path.exists(tmp_path / "none")


def test_sqlite_uri_parameters_other_than_mode_are_refused_for_a_replica(replica):
    _, _, path = replica
    with pytest.raises(turso_dbapi.ProgrammingError, match="only mode=ro"):
        turso_dbapi.connect(f"file:{path}?mode=ro&cache=shared", uri=True)


READ_ONLY_SCRIPT = textwrap.dedent('''
    import os, sqlite3, sys
    import turso_dbapi
    path, method = sys.argv[1], sys.argv[2]
    directory = os.path.dirname(path)
    con = turso_dbapi.connect(path, readonly=True)
    assert con.execute("select count(*), sum(length(v)) from t").fetchone() == ({rows}, {total})
    try:
        con.execute("insert into t(v) values ('y')")
        raise SystemExit("a write succeeded")
    except sqlite3.OperationalError as exc:
        assert "attempt to write a readonly database" in str(exc), exc
    if method == "rofs":  # the directory really is read-only, even for root
        try:
            open(os.path.join(directory, "probe"), "w")
            raise SystemExit("the directory is writable")
        except OSError as exc:
            assert exc.errno == 30, exc  # EROFS
    else:  # no private mount: every file of the replica set is open read-only
        opened = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{{fd}}")
            except OSError:
                continue
            if os.path.dirname(target) == directory:
                with open(f"/proc/self/fdinfo/{{fd}}") as f:
                    flags = int(next(l for l in f if l.startswith("flags:")).split()[1], 8)
                assert flags & os.O_ACCMODE == os.O_RDONLY, (target, oct(flags))
                opened += 1
        assert opened >= 3, opened  # the file, its local layer and its sidecar at least
    con.close()
    print("read-only replica OK")
''').format(rows=ROWS, total=500 * ROWS)


def _private_read_only_mount_works(directory: str) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f'mount --bind "{directory}" "{directory}" && '
         f'mount -o remount,ro,bind "{directory}" && ! touch "{directory}/probe"'],
        capture_output=True, timeout=30)
    return probe.returncode == 0 and not os.path.exists(os.path.join(directory, "probe"))


def test_a_read_only_replica_in_a_read_only_directory_works_while_its_cache_has_the_pages(replica, tmp_path):
    _, _, path = replica
    directory = os.path.dirname(path)
    before = snapshot(directory)
    script = tmp_path / "ro.py"
    script.write_text(READ_ONLY_SCRIPT)
    if _private_read_only_mount_works(directory):
        method = "rofs"
        cmd = ["unshare", "-m", "sh", "-c",
               f'mount --bind "{directory}" "{directory}" && mount -o remount,ro,bind "{directory}" '
               f'&& exec "{sys.executable}" "{script}" "{path}" rofs']
    else:
        method = "fdinfo"
        cmd = [sys.executable, str(script), path, "fdinfo"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "read-only replica OK" in proc.stdout, proc.stderr[-3000:]
    print(f"read-only directory checked by: {method}")
    assert snapshot(directory) == before


def test_a_wal_replica_keeps_an_empty_wal_and_its_shm_after_its_last_close(turso_server_factory, tmp_path):
    """vfs.c rule (23): what a later read-only open needs, and no frame already checkpointed."""
    server = turso_server_factory(setup=_fill)
    path = str(tmp_path / "rep" / "r.db")
    con = turso_dbapi.connect(server.url, local_path=path)
    assert con.execute("pragma journal_mode").fetchone() == ("wal",)
    con.execute("insert into t(v) values ('local')")
    con.commit()
    assert os.path.getsize(path + "-wal") > 0  # the commit is in the WAL
    con.close()
    assert os.path.getsize(path + "-wal") == 0 and os.path.exists(path + "-shm")
    again = turso_dbapi.connect(path, readonly=True)
    assert again.execute("select count(*) from t where v = 'local'").fetchone() == (1,)
    again.close()


LIVE_WRITER_SCRIPT = textwrap.dedent('''
    import sys
    import turso_dbapi
    con = turso_dbapi.connect(sys.argv[1], readonly=True)
    print(con.execute("select count(*), max(v) from t where v like 'live%'").fetchone())
    con.close()
''')


def test_a_read_only_open_in_a_read_only_directory_sees_what_a_live_writer_has_only_in_the_wal(
        turso_server_factory, tmp_path):
    """The writer (this process) keeps its connection open, so its commits are WAL frames
    and its -shm is live; the reader (another process, where the directory is read-only
    when the machine allows a private mount) maps that -shm read-only and sees them."""
    server = turso_server_factory(setup=_fill)
    path = str(tmp_path / "rep" / "r.db")
    writer = turso_dbapi.connect(server.url, local_path=path)
    writer.execute("pragma wal_autocheckpoint = 0")
    for i in range(3):
        writer.execute("insert into t(v) values (?)", (f"live{i}",))
        writer.commit()
    assert os.path.getsize(path + "-wal") > 0
    directory = os.path.dirname(path)
    script = tmp_path / "live.py"
    script.write_text(LIVE_WRITER_SCRIPT)
    if _private_read_only_mount_works(directory):
        cmd = ["unshare", "-m", "sh", "-c",
               f'mount --bind "{directory}" "{directory}" && mount -o remount,ro,bind "{directory}" '
               f'&& exec "{sys.executable}" "{script}" "{path}"']
    else:
        cmd = [sys.executable, str(script), path]
    shm_before = snapshot(directory)[os.path.basename(path) + "-shm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "(3, 'live2')"
    assert snapshot(directory)[os.path.basename(path) + "-shm"] == shm_before  # mapped read-only
    writer.close()


@pytest.mark.parametrize("gone", ["-wal", "-shm"])
def test_a_wal_replica_missing_its_wal_or_shm_is_a_clear_error_for_a_read_only_open(
        turso_server_factory, tmp_path, gone):
    server = turso_server_factory(setup=_fill)
    path = str(tmp_path / "rep" / "r.db")
    turso_dbapi.connect(server.url, local_path=path).close()
    os.remove(path + gone)  # as an older version's clean close left it
    before = snapshot(os.path.dirname(path))
    with pytest.raises(sqlite3.OperationalError, match=f"its {gone} file is missing and a read-only open creates none"):
        turso_dbapi.connect(path, readonly=True)
    assert snapshot(os.path.dirname(path)) == before
    again = turso_dbapi.connect(path)  # a writable open recreates it
    assert again.execute("select count(*) from t").fetchone() == (ROWS,)
    again.close()
    assert os.path.exists(path + gone)
