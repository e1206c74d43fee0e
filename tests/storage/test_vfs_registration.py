"""Registration of the VFS into the stdlib's SQLite: route A here, route B under Debian's
Python (which has load_extension), the clear error when no route works."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from turso_dbapi.storage import vfs
from turso_dbapi._native import ffi, lib

ROOT = Path(__file__).resolve().parents[2]  # the checkout (tests/<room>/this file)
SYSTEM_PYTHON = "/usr/bin/python3"


def _run(python: str, code: str, route: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", TURSO_DBAPI_VFS_ROUTE=route)
    return subprocess.run([python, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)


def test_route_a_registers_into_the_library_sqlite3_uses():
    assert vfs.ensure_registered() in ("A", "B")
    assert vfs.probe()
    # the probe connection really went through the VFS registered in _sqlite3's library
    con = sqlite3.connect("file:x?mode=memory&vfs=turso_dbapi", uri=True)
    con.close()


def test_registration_is_idempotent_and_never_rewrites_the_registered_struct():
    vfs.ensure_registered()
    import _sqlite3
    import ctypes

    handle = ctypes.CDLL(_sqlite3.__file__, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    handle.sqlite3_vfs_find.restype = ctypes.c_void_p
    handle.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
    before = handle.sqlite3_vfs_find(b"turso_dbapi")
    find = ctypes.cast(handle.sqlite3_vfs_find, ctypes.c_void_p).value
    register = ctypes.cast(handle.sqlite3_vfs_register, ctypes.c_void_p).value
    for _ in range(3):
        assert lib.tdb_vfs_register(ffi.cast("void *", find), ffi.cast("void *", register)) == lib.TDB_VFS_OK
    assert handle.sqlite3_vfs_find(b"turso_dbapi") == before
    # not made the default VFS: plain connections keep the default one
    assert handle.sqlite3_vfs_find(None) != before


def test_local_connections_do_not_register_anything(tmp_path):
    code = ("import sys, turso_dbapi, turso_dbapi.storage.vfs as v\n"
            "c = turso_dbapi.connect(sys.argv[1] + '/l.db'); c.execute('create table t(x)')\n"
            "print(v.probe(), v.registered_route())\n")
    out = _run(sys.executable, code, "", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "None"]


def _system_python_reason() -> str:
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not installed"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sqlite3, cffi; "
         "print(hasattr(sqlite3.connect(':memory:'), 'enable_load_extension'))"],
        capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} lacks cffi (apt-get install python3-cffi)"
    if probe.stdout.strip() != "True":
        return f"{SYSTEM_PYTHON}'s sqlite3 has no enable_load_extension"
    return ""


ROUTE_B = """
import sys
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[1])))
import sqlite3
from support.databases import make_database
from turso_dbapi.fetch.miss import MissHandler
from turso_dbapi.storage import pagestore, vfs
from turso_dbapi._native import lib
from turso_dbapi.sources.file import FileSource
assert vfs.ensure_registered() == "B", vfs.registered_route()
assert chr(lib.tdb_vfs_route()) == "B"
# the capture's transaction ids (txn.c) reach every later connection through route B too
assert sqlite3.connect(":memory:").execute("SELECT id FROM sqlite_tdb_txn").fetchall() == [(None,)]
src = make_database(Path(sys.argv[1]) / "src.db", rows=300)
source = FileSource(src); source.open()
ident = pagestore.identity_of("b", source.version, source.page_size, source.size)
store = pagestore.open_store(sys.argv[1] + "/rep/db", page_size=source.page_size, size=source.size, identity=ident)
handler = MissHandler(store, source)  # the store holds it weakly: keep it
cid = store.attach(handler)
con = sqlite3.connect(f"file:{store.path}?vfs=turso_dbapi&tdbconn={cid}", uri=True)
ref = sqlite3.connect(src)
for q in ("select count(*), sum(price) from items", "select * from kv order by k", "pragma integrity_check"):
    assert con.execute(q).fetchall() == ref.execute(q).fetchall(), q
print("misses", store.counters()["misses"])
"""


def test_route_b_load_extension_under_debian_python(tmp_path):
    reason = _system_python_reason()
    if reason:
        pytest.skip(reason)
    out = _run(SYSTEM_PYTHON, ROUTE_B, "B", tmp_path)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) > 0  # pages really came through the miss path


def test_no_route_gives_not_supported_error_and_local_mode_still_works(tmp_path):
    # this interpreter (pyenv) has no load_extension: forcing route B leaves no route
    if hasattr(sqlite3.connect(":memory:"), "enable_load_extension"):
        pytest.skip("this Python has load_extension: route B would succeed here")
    code = ("import sys, turso_dbapi\nfrom turso_dbapi.storage import vfs\n"
            "try:\n    vfs.ensure_registered()\nexcept turso_dbapi.NotSupportedError as e:\n    print('ERR', e)\n"
            "c = turso_dbapi.connect(sys.argv[1] + '/l.db'); c.execute('create table t(x)'); print('local ok')\n"
            "try:\n    turso_dbapi.connect('http://127.0.0.1:9/x.db')\n"
            "except turso_dbapi.NotSupportedError as e:\n    print('REMOTE', type(e).__name__)\n")
    out = _run(sys.executable, code, "B", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ERR cannot register the turso_dbapi VFS" in out.stdout
    assert "load_extension" in out.stdout
    assert "local ok" in out.stdout
    assert "REMOTE NotSupportedError" in out.stdout
