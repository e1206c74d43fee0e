"""`import turso_dbapi as sqlite3` must be a true drop-in for the standard library.

The strongest check is behavioural: the same script, run once with ``sqlite3`` and once
with the import swapped, prints exactly the same thing. The rest pins the surface
(same names, the very same exception classes) and the connect()/factory contract.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import types
import subprocess
import sys
import threading
import warnings

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


# -- issue 15: divergences found by CPython's test_sqlite3 ---------------------------------


class Factory(sqlite3.Connection):
    pass


def test_a_factory_given_by_position_is_the_one_used():
    # connect(database, timeout, detect_types, isolation_level, check_same_thread, factory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.13+: positional arguments
        con = turso_dbapi.connect(":memory:", 5.0, 0, None, True, Factory)
    assert type(con) is Factory
    con.close()


def _attribute(module, name):
    """``module.name`` and the warnings it raised (category, text, file, line): both modules
    are read on the same line, so a warning's place must match exactly."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = getattr(module, name)
        except AttributeError:
            value = AttributeError
    return value, [(w.category, str(w.message), w.filename, w.lineno) for w in caught]


# Every deprecated or lazy module attribute of 3.9-3.13 (3.10/3.11: OptimizedUnicode;
# 3.12+: version, version_info; 3.10/3.11 enable_shared_cache warns when called).
DEPRECATED = ["OptimizedUnicode", "version", "version_info", "enable_shared_cache"]


@pytest.mark.parametrize("name", DEPRECATED + ["no_such_attribute"])
def test_deprecated_module_attributes_behave_like_the_running_stdlib(name):
    expected = _attribute(sqlite3, name)
    assert _attribute(turso_dbapi, name) == expected
    for warning in expected[1]:
        assert warning[2] == __file__  # the caller's line, not a line of turso_dbapi


@pytest.mark.skipif(sys.version_info < (3, 10), reason="3.9's sqlite3 has no deprecated attribute")
def test_the_running_stdlib_has_a_deprecated_attribute_to_compare():
    warned = [n for n in DEPRECATED if _attribute(sqlite3, n)[1]]
    assert warned and all(_attribute(turso_dbapi, n)[1] for n in warned)


def _connect_warnings(module, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.connect(":memory:", *args).close()
    return [(w.category, str(w.message), w.filename, w.lineno) for w in caught]


@pytest.mark.parametrize("args", [(5.0,), (5.0, 0, None, True, Factory), ()])
def test_positional_argument_warnings_point_at_the_caller_like_sqlite3(args):
    # 3.13+ warns about positional arguments, at the line that called connect()
    expected = _connect_warnings(sqlite3, *args)
    assert _connect_warnings(turso_dbapi, *args) == expected
    if sys.version_info >= (3, 13) and args:
        assert expected and all(w[2] == __file__ for w in expected)


# -- the same contract on remote connections (Turso sync and HTTP ranges) -------------------


def _small_table(path):
    with sqlite3.connect(path) as c:
        c.execute("create table t(x)")
        c.executemany("insert into t values (?)", [(i,) for i in range(100)])
    c.close()


@pytest.fixture(params=["turso", "range"])
def remote(request, turso_server_factory):
    """connect(**remote) opens a fresh replica of a small served database."""
    server = turso_server_factory(setup=_small_table)
    url = server.url if request.param == "turso" else server.file_url
    count = iter(range(1000))
    tmp = request.getfixturevalue("tmp_path")

    def connect(**kwargs):
        return turso_dbapi.connect(url, local_path=str(tmp / f"r{next(count)}.db"), **kwargs)

    return connect


def test_remote_cursor_none_is_a_type_error_like_sqlite3(remote):
    with pytest.raises(TypeError):
        sqlite3.connect(":memory:").cursor(None)
    con = remote()
    with pytest.raises(TypeError):
        con.cursor(None)
    assert con.cursor().execute("select count(*) from t").fetchone() == (100,)
    con.close()


def test_remote_factory_may_be_any_callable_returning_a_connection(remote):
    calls = []

    def relayed(*args, **kwargs):  # CPython's test_connection_factory_relayed_call
        calls.append(kwargs)
        kwargs["isolation_level"] = None
        return sqlite3.Connection(*args, **kwargs)

    con = remote(factory=relayed)
    assert calls and type(con) is sqlite3.Connection and con.isolation_level is None
    assert con.execute("select sum(x) from t").fetchone() == (4950,)
    con.close()

    def ours(*args, **kwargs):
        return turso_dbapi.Connection(*args, **kwargs)

    con = remote(factory=ours)
    assert type(con) is turso_dbapi.Connection
    assert con.execute("select count(*) from t").fetchone() == (100,)
    assert con.stats()["pages_read"] > 0  # the replica is attached: stats() works
    con.close()


def test_remote_factory_must_return_a_connection(remote):
    with pytest.raises(turso_dbapi.ProgrammingError, match="not a sqlite3.Connection"):
        remote(factory=lambda *args, **kwargs: 5)


def test_remote_factory_whose_init_skips_the_base_is_returned_like_sqlite3(remote):
    class Defect(sqlite3.Connection):  # CPython's test_connection_factories
        def __init__(self, *args, **kwargs):
            return None

    assert isinstance(sqlite3.connect(":memory:", factory=Defect), Defect)
    con = remote(factory=Defect)
    assert isinstance(con, Defect)
    with pytest.raises(turso_dbapi.ProgrammingError, match="__init__ not called"):
        con.execute("select 1")


# -- CPython's own sqlite3 tests, through the drop-in ----------------------------------------

CPYTHON_TESTS = os.path.join(HERE, "scripts", "cpython_test_sqlite3.py")


def test_iterdump_works_where_the_drop_in_is_swapped_in_as_sys_modules_sqlite3(tmp_path):
    # Connection.iterdump() imports "sqlite3.dump" by name, when called
    out = _run_script(
        "import sqlite3, sys\n"
        "import turso_dbapi\n"
        "sys.modules['sqlite3'] = turso_dbapi\n"
        "con = turso_dbapi.connect(':memory:')\n"
        "con.execute('create table t(x)')\n"
        "print(list(con.iterdump()))\n", tmp_path)
    assert "CREATE TABLE t(x);" in out


def test_cpythons_own_sqlite3_tests_pass_through_the_drop_in(tmp_path):
    import importlib.util

    tests = "test.test_sqlite3" if sys.version_info >= (3, 11) else "test.test_sqlite"
    if importlib.util.find_spec(tests) is None:
        pytest.skip(f"this interpreter ships no {tests} (Debian: package libpython3.X-testsuite)")
    proc = subprocess.run([sys.executable, CPYTHON_TESTS], capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path))
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and result, proc.stderr[-4000:]
    counts = json.loads(result[-1][len("RESULT "):])
    print(f"CPython {sys.version_info[0]}.{sys.version_info[1]} {tests} through turso_dbapi: {counts}")
    assert counts["failures"] == counts["errors"] == 0 and counts["run"] > 250


@pytest.mark.parametrize("mode", ["turso", "range"])
def test_remote_connections_work_where_the_drop_in_is_swapped_in_as_sys_modules_sqlite3(
        mode, turso_server_factory, tmp_path):
    # the remote modules load after the swap, so their `import sqlite3` is this module: its
    # connect() must hand the VFS URIs they open to SQLite, not take them for replicas
    server = turso_server_factory(setup=_small_table)
    url = server.url if mode == "turso" else server.file_url
    out = _run_script(
        "import sqlite3, sys\n"
        "import turso_dbapi\n"
        "sys.modules['sqlite3'] = turso_dbapi\n"
        f"con = turso_dbapi.connect({url!r}, local_path='r.db')\n"
        "print(con.execute('select sum(x) from t').fetchone()[0])\n"
        "con.close()\n", tmp_path)
    assert out.split() == ["4950"]
