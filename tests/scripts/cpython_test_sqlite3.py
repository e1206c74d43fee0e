"""CPython's own sqlite3 tests (``Lib/test/test_sqlite3``) with ``import sqlite3`` resolving to
turso_dbapi, unchanged: the strongest drop-in check there is.

    python tests/scripts/cpython_test_sqlite3.py [--remote URL] [unittest args, e.g. -k factory]

Prints unittest's report, then one line ``RESULT {json counts}``; exits 0 when every test
passed. Needs an interpreter that ships its test package (``test.test_sqlite3`` from 3.11 on,
``test.test_sqlite`` with ``sqlite3.test`` before; Debian splits it into
libpython3.X-testsuite).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import unittest

import sqlite3  # the stdlib module first: turso_dbapi re-exports its names

import turso_dbapi

sys.modules["sqlite3"] = turso_dbapi  # every later `import sqlite3` gets the drop-in


def _stdlib_part_over_the_drop_in(name: str, package: bool = False) -> None:
    """Load a part of the stdlib's sqlite3 package from its source under its own name, after
    the swap, so its ``import sqlite3`` (and every connection it opens) is the drop-in's:
    ``__main__`` (3.12+ test the stdlib's command-line program, ``from sqlite3.__main__
    import main``; the drop-in's own ``__main__`` is another program, ``python -m
    turso_dbapi``) and ``test`` (3.9/3.10 keep their tests in ``sqlite3.test``)."""
    base = os.path.dirname(sqlite3.__file__)
    path = os.path.join(base, name, "__init__.py") if package else os.path.join(base, name + ".py")
    if not os.path.exists(path):
        return
    spec = importlib.util.spec_from_file_location(
        f"sqlite3.{name}", path, submodule_search_locations=[os.path.dirname(path)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


_stdlib_part_over_the_drop_in("__main__")
_stdlib_part_over_the_drop_in("test", package=True)
TESTS = "test.test_sqlite3" if sys.version_info >= (3, 11) else "test.test_sqlite"


def _every_database_a_replica_of(url: str, directory: str) -> None:
    """``--remote URL``: every ``connect()`` of ``":memory:"`` or of a file path opens a replica
    of ``url`` (an empty database) instead: a fresh one for ``":memory:"``, the same one again
    for the same path. URIs (``uri=True``) stay local. Failures that are inherent to a replica
    (a file that must exist on disk, ``:memory:`` sharing, ...) are expected in this mode."""
    real = turso_dbapi.connect
    fresh = iter(range(1 << 30))
    by_path: dict = {}

    def connect(database, *args, **kwargs):
        if kwargs.get("uri") or not isinstance(database, (str, bytes, os.PathLike)):
            return real(database, *args, **kwargs)
        name = os.fsdecode(database)
        if name == ":memory:" or name == "":
            local = os.path.join(directory, f"m{next(fresh)}.db")
        else:
            local = by_path.setdefault(os.path.abspath(name), os.path.join(directory, f"f{next(fresh)}.db"))
        return real(url, *args, local_path=local, **kwargs)

    turso_dbapi.connect = connect


def main(argv: list) -> int:
    if "--remote" in argv:
        import tempfile

        i = argv.index("--remote")
        url = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
        _every_database_a_replica_of(url, tempfile.mkdtemp(prefix="tdb-cpython-"))
    importlib.import_module(TESTS)  # it imports `sqlite3`: after the swap
    assert sys.modules["sqlite3"] is turso_dbapi
    prog = unittest.main(module=None, argv=["test_sqlite3", TESTS, *argv], exit=False, verbosity=1)
    r = prog.result
    counts = {
        "run": r.testsRun, "failures": len(r.failures), "errors": len(r.errors),
        "skipped": len(r.skipped), "expected_failures": len(r.expectedFailures),
        "unexpected_successes": len(r.unexpectedSuccesses),
    }
    print("RESULT " + json.dumps(counts), flush=True)
    return 0 if r.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
