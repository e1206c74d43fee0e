"""SQLAlchemy's own dialect compliance suite (``sqlalchemy.testing.suite``) against
``sqlite+turso_dbapi``: a local file, a Turso replica and an HTTP-range replica.

SQLAlchemy's pytest plugin takes over collection and fixtures, so the suite runs in its own
pytest process (``tests/sqlalchemy_suite``, set up as SQLAlchemy's README.dialects says:
conftest with its plugin, a requirements class, ``[sqla_testing]``/``[db]`` in setup.cfg)
with the database given by ``--dburi``. Measured: each mode runs the whole suite (about
1450 tests) in 15-30 s here, so all three run it fully.
"""

from __future__ import annotations

import glob
import os
import re
import sqlite3
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

import sqlalchemy  # noqa: F401 - a test dependency: missing, this file fails to import

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = os.path.join(HERE, "sqlalchemy_suite")


def run_suite(dburi: str, cwd: str) -> dict:
    """Run the whole compliance suite against ``dburi`` (database files go to ``cwd``)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings",
         f"--confcutdir={SUITE}", os.path.join(SUITE, "test_suite.py"), "--dburi", dburi],
        capture_output=True, text=True, timeout=600, cwd=cwd,
    )
    elapsed = time.perf_counter() - started
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", summary)}
    counts["error"] = counts.pop("errors", 0) + counts.pop("error", 0)
    print(f"SQLAlchemy compliance suite, {dburi.split('?')[0]}: {counts} in {elapsed:.1f} s")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return counts


def _assert_clean(counts: dict) -> None:
    assert counts.get("failed", 0) == 0 and counts["error"] == 0
    assert counts.get("passed", 0) >= 1000  # the suite really ran (1054 with SQLAlchemy 2.1)


def _empty_database(path: str) -> None:
    con = sqlite3.connect(path)
    con.execute("pragma user_version = 1")  # a valid one-page database with no tables
    con.commit()
    con.close()


def test_compliance_suite_on_a_local_file(tmp_path):
    _assert_clean(run_suite("sqlite+turso_dbapi:///suite.db", str(tmp_path)))


@pytest.mark.parametrize("mode", ["turso", "range"])
def test_compliance_suite_through_a_remote_replica(mode, request, tmp_path):
    if mode == "turso":
        remote = request.getfixturevalue("turso_server_factory")(setup=_empty_database).url
    else:  # a rollback-journal file on a static host (a WAL-mode one is followed live: see README)
        nginx = request.getfixturevalue("nginx")
        _empty_database(str(tmp_path / "empty.db"))
        remote = nginx.url(nginx.place(f"suite-{os.getpid()}.db", tmp_path / "empty.db").name)
    query = f"url={quote(remote, safe='')}" + ("&partial=true" if mode == "range" else "")
    _assert_clean(run_suite(f"sqlite+turso_dbapi:///replica.db?{query}", str(tmp_path)))
    # the suite's database was that replica (SQLite's provisioning names it replica_<driver>.db)
    assert glob.glob(str(tmp_path / "replica_turso_dbapi.db-tdbmeta.json"))
    if mode == "turso":
        assert glob.glob(str(tmp_path / "replica_turso_dbapi.db-tdbsync.json"))
