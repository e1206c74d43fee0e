"""Type hints of the public API, checked by a real type checker (mypy) as users run it:
connect's options, stats(), the errors, turso_dbapi.aio."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import turso_dbapi
from turso_dbapi import url as u

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = '''
import turso_dbapi
import turso_dbapi.aio

con = turso_dbapi.connect("s3://bucket/app.db", partial=True, region="eu-west-1", segment_size="64k",
                          auth_token=lambda: "t", timeout=5.0, check_same_thread=False)
n: int = con.stats().requests
err: turso_dbapi.RemoteError = turso_dbapi.RemoteChangedError("x", url="u", status=412)
status: "int | None" = err.status
row: turso_dbapi.Row

async def main() -> None:
    db = await turso_dbapi.aio.connect("https://h/app.db", partial=True)
    rows = await db.execute_fetchall("select 1")
    hits: int = (await db.stats()).hits
'''

BAD = '''
import turso_dbapi
import turso_dbapi.aio

turso_dbapi.connect("s3://bucket/app.db", partial=True, regoin="eu-west-1")
turso_dbapi.connect("https://h/app.db", retries="many")
turso_dbapi.connect("https://h/app.db", protocol="ftp")
x: str = turso_dbapi.connect("https://h/app.db").stats().requests
turso_dbapi.aio.connect("https://h/app.db", http_timeout="soon")
'''


def _mypy(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    try:
        import mypy  # noqa: F401
    except ImportError:
        raise RuntimeError("mypy is not installed: pip install '.[test]'") from None
    env = dict(os.environ, MYPYPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-incremental",
                           "--cache-dir", os.devnull, name], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.stdout


def test_correct_use_type_checks(tmp_path):
    out = _mypy(tmp_path, "good.py", GOOD)
    assert "Success" in out, out


def test_misuse_is_caught_by_the_type_checker(tmp_path):
    out = _mypy(tmp_path, "bad.py", BAD)
    lines = sorted({int(m.group(1)) for m in re.finditer(r"^bad\.py:(\d+): error", out, re.M)})
    assert lines == [5, 6, 7, 8, 9], out
    assert 'did you mean "region"' in out and "Literal['auto', 'range', 'turso']" in out


def test_typed_options_match_the_option_table():
    assert u.ConnectOptions.__optional_keys__ == set(u.OPTIONS)
    assert set(u.ConnectOptions.__optional_keys__) < set(u.ConnectArgs.__optional_keys__)


def test_py_typed_marker_ships_with_the_package():
    assert os.path.exists(os.path.join(os.path.dirname(turso_dbapi.__file__), "py.typed"))
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert re.search(r'^"turso_dbapi" = \["py.typed"\]', f.read(), re.M)
