"""`import turso_dbapi as sqlite3` must be a true drop-in for the standard library.

The strongest check is behavioural: the same script, run once with ``sqlite3`` and once
with the import swapped, prints exactly the same thing. The rest pins the surface
(same names, the very same exception classes) and the connect()/factory contract.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import types
import subprocess
import sys
import threading

import pytest

import turso_dbapi

HERE = os.path.dirname(os.path.abspath(__file__))
TOUR = os.path.join(HERE, "scripts", "stdlib_tour.py")


def _run_script(source: str, tmp_path) -> str:
    path = tmp_path / "script.py"
    path.write_text(source)
    proc = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, cwd=str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_stdlib_script_prints_the_same_with_the_import_swapped(tmp_path):
    with open(TOUR) as f:
        original = f.read()
    swapped = original.replace("import sqlite3\n", "import turso_dbapi as sqlite3\n", 1)
    assert swapped != original
    expected = _run_script(original, tmp_path)
    assert expected.count("\n") >= 28  # the tour really ran (3.11+ prints a few more lines)
    assert _run_script(swapped, tmp_path) == expected


def test_every_public_stdlib_name_is_exported():
    # submodules (sqlite3.dump appears once any iterdump() ran in this process) are not names
    missing = [n for n in dir(sqlite3) if not n.startswith("_") and not hasattr(turso_dbapi, n)
               and not isinstance(getattr(sqlite3, n), types.ModuleType)]
    assert missing == []


def test_exported_names_are_the_stdlib_objects_except_connect_and_connection():
    different = [
        n
        for n in dir(sqlite3)
        if not n.startswith("_") and not isinstance(getattr(sqlite3, n), types.ModuleType)
        and getattr(turso_dbapi, n) is not getattr(sqlite3, n)
        and getattr(turso_dbapi, n) != getattr(sqlite3, n)  # equal constants are fine
    ]
    assert sorted(different) == ["Connection", "connect"]


@pytest.mark.parametrize(
    "name",
    ["Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
     "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"],
)
def test_exception_classes_are_the_stdlib_classes(name):
    assert getattr(turso_dbapi, name) is getattr(sqlite3, name)


def test_pep249_module_globals():
    assert turso_dbapi.apilevel == "2.0"
    assert turso_dbapi.paramstyle == "qmark"
    assert turso_dbapi.threadsafety == sqlite3.threadsafety
    assert turso_dbapi.sqlite_version == sqlite3.sqlite_version


def test_remote_errors_are_operational_errors():
    assert issubclass(turso_dbapi.RemoteError, sqlite3.OperationalError)
    assert issubclass(turso_dbapi.RemoteChangedError, turso_dbapi.RemoteError)


def test_connect_returns_a_subclass_of_the_stdlib_connection(tmp_path):
    con = turso_dbapi.connect(str(tmp_path / "a.db"))
    assert type(con) is turso_dbapi.Connection
    assert isinstance(con, sqlite3.Connection)
    con.close()


def test_user_factory_is_honoured_for_both_kinds_of_subclass(tmp_path):
    class Mine(turso_dbapi.Connection):
        pass

    class Plain(sqlite3.Connection):
        pass

    assert type(turso_dbapi.connect(":memory:", factory=Mine)) is Mine
    assert type(turso_dbapi.connect(":memory:", factory=Plain)) is Plain


def test_positional_arguments_mean_what_they_mean_in_sqlite3(tmp_path):
    # connect(database, timeout, detect_types, isolation_level, ...)
    con = turso_dbapi.connect(str(tmp_path / "p.db"), 1.5, sqlite3.PARSE_DECLTYPES, None)
    assert con.isolation_level is None
    con.close()


def test_uri_filenames_work_like_sqlite3(tmp_path):
    path = tmp_path / "u.db"
    sqlite3.connect(str(path)).execute("create table t(x)")
    con = turso_dbapi.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        con.execute("insert into t values (1)")


def test_same_exception_for_unknown_keyword_as_sqlite3():
    with pytest.raises(TypeError):
        sqlite3.connect(":memory:", bogus=1)
    with pytest.raises(TypeError):
        turso_dbapi.connect(":memory:", bogus=1)


def test_remote_options_on_a_local_path_are_a_clear_error():
    with pytest.raises(turso_dbapi.ProgrammingError, match="partial.*local path"):
        turso_dbapi.connect(":memory:", partial=True)


def test_replica_methods_on_a_local_connection_say_why_they_cannot_work():
    con = turso_dbapi.connect(":memory:")
    for method in (con.pull, con.push, con.stats, con.sync):
        with pytest.raises(turso_dbapi.NotSupportedError, match="remote database"):
            method()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="autocommit attribute is 3.12+")
def test_autocommit_attribute_behaves_like_sqlite3():
    for mod in (sqlite3, turso_dbapi):
        con = mod.connect(":memory:", autocommit=False)
        assert con.autocommit is False
        assert con.in_transaction  # PEP 249 mode opens a transaction at once
        con.autocommit = True
        assert not con.in_transaction


def test_file_database_persists_across_connections(tmp_path):
    path = str(tmp_path / "f.db")
    with turso_dbapi.connect(path) as con:
        con.execute("create table t(x)")
        con.execute("insert into t values (1)")
    con.close()
    assert sqlite3.connect(path).execute("select x from t").fetchall() == [(1,)]


def test_threads_with_check_same_thread_false_share_one_connection(tmp_path):
    con = turso_dbapi.connect(str(tmp_path / "th.db"), check_same_thread=False)
    con.execute("create table t(x)")
    lock = threading.Lock()

    def insert(n):
        for i in range(50):
            with lock:
                con.execute("insert into t values (?)", (n * 100 + i,))

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    con.commit()
    assert con.execute("select count(*), count(distinct x) from t").fetchone() == (200, 200)


def test_row_objects_pickle_like_stdlib_rows_do_not():
    # sqlite3.Row is not picklable; ours is the same class, so the same TypeError.
    con = turso_dbapi.connect(":memory:")
    con.row_factory = turso_dbapi.Row
    row = con.execute("select 1 as a").fetchone()
    assert type(row) is sqlite3.Row
    with pytest.raises(TypeError):
        pickle.dumps(row)
