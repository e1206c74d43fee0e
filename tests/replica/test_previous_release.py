"""A replica made by the previous release reopens after the restructure: same file names,
sidecar, metadata and identities (on-disk formats unchanged).

The previous release is the code of commit ``PREVIOUS`` (the last one before the rooms),
taken from this checkout's history with ``git archive`` and built in a temporary directory
(its own native core: the C core's version has moved on since). It makes a Turso replica
(bootstrapped, then pulled once) and an HTTP-range cache; this code then reopens both by
their path alone and reads them, fetching only what the old code had not cached.
"""

from __future__ import annotations

import json
import shutil
import site
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import turso_dbapi

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = "6bb941b"  # "remote: one error-path helper re-raises a statement's real cause"


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (the previous release is taken from its history)")
    if subprocess.run([git, "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS}^{{commit}}"]).returncode:
        pytest.skip(f"commit {PREVIOUS} is not in this checkout's history (a shallow clone?)")
    dest = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run([git, "-C", str(ROOT), "archive", PREVIOUS, "turso_dbapi"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    build = ("import sys; sys.path.insert(0, 'turso_dbapi/_native'); import _ffi_build; "
             "_ffi_build.ffi.compile(tmpdir='.')")
    out = subprocess.run([sys.executable, "-c", build], cwd=dest, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return dest


def run_previous(release: Path, script: str, *args: str) -> str:
    # -S: no site processing, so no .pth file of an editable install (whose import hook would
    # win over sys.path) brings in today's code; site-packages come back as plain path
    # entries after the previous release, for cffi and requests.
    code = ("import sys\n"
            f"sys.path.insert(0, {str(release)!r})\n"
            f"sys.path.extend({site.getsitepackages()!r})\n"
            "import turso_dbapi\n"
            f"assert turso_dbapi.__file__.startswith({str(release)!r}), turso_dbapi.__file__\n"
            + textwrap.dedent(script))
    out = subprocess.run([sys.executable, "-S", "-c", code, *args], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(release), "PATH": "/usr/bin:/bin",
                              "HOME": str(release)})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_a_turso_replica_of_the_previous_release_reopens_by_its_path(previous_release, turso_server, tmp_path):
    turso_server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    turso_server.db_sql("INSERT INTO t(v) SELECT hex(randomblob(300)) FROM generate_series(1, 300)")
    path = str(tmp_path / "turso" / "db")
    run_previous(previous_release, """
        con = turso_dbapi.connect(sys.argv[1], local_path=sys.argv[2], partial=True)
        assert con.execute("SELECT count(*) FROM t").fetchone() == (300,)
        con.close()
    """, turso_server.url, path)
    turso_server.db_sql("UPDATE t SET v = 'new' WHERE id <= 10")
    # the previous release pulls once, so the replica has a pull behind it too
    run_previous(previous_release, """
        con = turso_dbapi.connect(sys.argv[1])
        assert con.pull() is True
        assert con.execute("SELECT count(*) FROM t WHERE v = 'new'").fetchone() == (10,)
        assert con.stats().pull_gen == 1
    """, path)
    before = Path(path + "-tdbsync.json").read_text()

    con = turso_dbapi.connect(path)  # by its path: the saved URL, no network at open
    st = con.stats()
    assert (st.pull_gen, st.revision, st.requests) == (1, turso_server.revision, 0)
    assert con.execute("SELECT count(*) FROM t WHERE v = 'new'").fetchone() == (10,)
    assert con.execute("SELECT count(*), sum(length(v)) FROM t").fetchone() == tuple(
        int(x) for x in turso_server.db_sql("SELECT count(*), sum(length(v)) FROM t")[0])
    turso_server.db_sql("DELETE FROM t WHERE id > 290")
    assert con.pull() is True
    assert con.execute("SELECT count(*) FROM t").fetchone() == (290,)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.stats().pull_gen == 2
    con.close()
    after = json.loads(Path(path + "-tdbsync.json").read_text())
    assert set(after) == set(json.loads(before)) and after["version"] == "v1"


def test_a_range_cache_of_the_previous_release_reopens_and_serves_its_pages(
        previous_release, nginx, databases, tmp_path):
    nginx.place("prev.db", databases["p4096"])
    path = str(tmp_path / "range" / "db")
    sql = "SELECT * FROM items WHERE id BETWEEN 100 AND 140"
    run_previous(previous_release, """
        con = turso_dbapi.connect(sys.argv[1], partial=True, local_path=sys.argv[2])
        con.execute(sys.argv[3]).fetchall()
        print(con.stats().pages_fetched)
        con.close()
    """, nginx.url("prev.db"), path, sql)
    expected = sqlite3.connect(str(databases["p4096"])).execute(sql).fetchall()

    con = turso_dbapi.connect(path)  # by its path: the URL in the cache's metadata
    assert con.stats().url == nginx.url("prev.db")
    assert con.execute(sql).fetchall() == expected
    # the pages the previous release fetched are served from its cache: only the one
    # revalidation request of the open, no page fetched again
    assert (con.stats().requests, con.stats().pages_fetched) == (1, 0)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()  # its background read-ahead threads stop with it
