"""``python -m turso_dbapi`` driven as a user drives it: through pipes and a pseudo-terminal."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest

SHELL = [sys.executable, "-m", "turso_dbapi"]
# Not the checkout: `python -m` would import the source tree instead of the installed package.
NEUTRAL_CWD = tempfile.gettempdir()


def run(*args: str, stdin: str = "", cwd=None, env=None, timeout: float = 30):
    full_env = dict(os.environ)
    full_env.pop("TURSO_AUTH_TOKEN", None)
    full_env.update(env or {})
    return subprocess.run(
        SHELL + list(args),
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or NEUTRAL_CWD,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as c:
        c.execute("create table users (id integer primary key, name text, score real)")
        c.executemany(
            "insert into users (name, score) values (?, ?)", [("ann", 9.5), ("bob", None)]
        )
        c.execute("create index ix_users_name on users(name)")
    c.close()
    return str(path)


def closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connections are refused


# -- pipes -------------------------------------------------------------------------------


def test_sql_argument_prints_an_aligned_table_and_exits_0(db):
    r = run(db, "select id, name, score from users order by id")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines() == [
        "+----+------+-------+",
        "| id | name | score |",
        "+----+------+-------+",
        "|  1 | ann  |   9.5 |",
        "|  2 | bob  |  NULL |",
        "+----+------+-------+",
    ]


def test_script_on_a_pipe_runs_every_statement_quietly_without_prompts(tmp_path):
    script = """
        create table t (x text);
        create table log (msg text);
        create trigger t_ins after insert on t begin
            insert into log values ('saw ' || new.x);
        end;
        insert into t values ('a;b'); -- a ';' inside a string and a comment;
        insert into t values ('c');
        select x from t order by x;
        select count(*) as n
          from log;
    """
    r = run(str(tmp_path / "s.db"), stdin=script)
    assert (r.returncode, r.stderr) == (0, "")
    assert "turso>" not in r.stdout and "turso_dbapi" not in r.stdout  # no prompt, no banner
    assert r.stdout.splitlines() == [
        "+-----+",
        "| x   |",
        "+-----+",
        "| a;b |",
        "| c   |",
        "+-----+",
        "+---+",
        "| n |",
        "+---+",
        "| 2 |",
        "+---+",
    ]


def test_piped_changes_are_committed(tmp_path):
    path = tmp_path / "w.db"
    assert (
        run(str(path), stdin="create table t (x); insert into t values (1), (2);").returncode == 0
    )
    with sqlite3.connect(path) as c:
        assert c.execute("select count(*) from t").fetchone() == (2,)
    c.close()


def test_bad_sql_exits_1_with_one_error_line_and_stops_the_script(tmp_path):
    path = tmp_path / "e.db"
    r = run(
        str(path), stdin="create table t (x);\nselect * from nope;\ninsert into t values (1);\n"
    )
    assert r.returncode == 1
    assert r.stderr == "Error: no such table: nope\n"
    with sqlite3.connect(path) as c:  # nothing after the failing statement ran
        assert c.execute("select count(*) from t").fetchone() == (0,)
    c.close()


def test_bad_sql_argument_exits_1(db):
    r = run(db, "select * from x")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "Error: no such table: x\n")


def test_dot_commands_work_in_a_piped_script(db):
    r = run(db, stdin=".tables\n.schema users\n.help\n.quit\nselect 'not reached';\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "users"
    assert lines[1] == "CREATE TABLE users (id integer primary key, name text, score real);"
    assert lines[2] == "CREATE INDEX ix_users_name on users(name);"
    assert any(line.startswith(".stats") for line in lines)
    assert "not reached" not in r.stdout


def test_unknown_dot_command_and_unknown_table_are_errors(db):
    r = run(db, stdin=".frobnicate\n")
    assert (r.returncode, r.stderr) == (
        1,
        "Error: unknown command .frobnicate; .help lists commands\n",
    )
    r = run(db, ".schema nope")
    assert (r.returncode, r.stderr) == (1, "Error: no such table: nope\n")


def test_stats_on_a_local_file_says_there_is_no_remote(db):
    r = run(db, ".stats")
    assert r.returncode == 1
    assert r.stderr.startswith("Error: .stats counts a remote database")
    assert "local file" in r.stderr and "Traceback" not in r.stderr


def test_unsupported_url_scheme_exits_2_with_one_line(tmp_path):
    r = run("ftp://user:pw@example.com/db.sqlite", "select 1", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "unsupported URL scheme 'ftp'" in r.stderr and "pw@" not in r.stderr
    assert os.listdir(tmp_path) == []  # no stray file named after the URL


def test_unknown_option_exits_2_naming_the_known_ones():
    r = run("-o", "partail=true", "https://127.0.0.1:1/db.sqlite", "select 1")
    assert r.returncode == 2
    assert r.stderr.startswith("Error: unknown option 'partail'; known options: ")
    assert "partial" in r.stderr and r.stderr.count("\n") == 1


def test_bad_option_value_exits_2_without_echoing_a_secret():
    r = run(
        "-o", "segment_size=lots", "--auth-token", "s3cret", "https://127.0.0.1:1/db", "select 1"
    )
    assert r.returncode == 2
    assert "bad value 'lots' for option 'segment_size'" in r.stderr and "s3cret" not in r.stderr


def test_remote_options_on_a_local_path_exit_2(db):
    r = run("--partial", db, "select 1")
    assert r.returncode == 2
    assert "apply to remote databases" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: str(p / "missing-dir" / "a.db"), "unable to open database file"),
        (
            lambda p: (
                (p / "junk.db").write_bytes(b"not a database at all" * 50) and str(p / "junk.db")
            ),
            "file is not a database",
        ),
    ],
)
def test_unopenable_local_database_exits_2_naming_it(tmp_path, make, message):
    path = make(tmp_path)
    r = run(path, "select 1")
    assert r.returncode == 2
    assert r.stderr == f"Error: cannot open {path}: {message}\n"


def test_unreachable_server_exits_2_with_the_redacted_url():
    pytest.importorskip("turso_dbapi.replica.base")
    port = closed_loopback_port()
    url = f"http://127.0.0.1:{port}/db.sqlite"
    r = run(
        url,
        "select 1",
        "--partial",
        "-o",
        "retries=0",
        "-o",
        "http_timeout=5",
        env={"TURSO_AUTH_TOKEN": "tok-s3cret"},
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1
    assert f"127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr and "tok-s3cret" not in r.stderr
    assert r.stdout == ""


def test_empty_script_exits_0_and_prints_nothing(db):
    r = run(db, stdin="")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_memory_database_is_the_default():
    r = run(stdin="select 6 * 7 as answer;")
    assert r.returncode == 0 and "|     42 |" in r.stdout


def test_usage_error_exits_2():
    r = run("--no-such-flag")
    assert r.returncode == 2 and "usage:" in r.stderr


# -- pseudo-terminal ----------------------------------------------------------------------


@pytest.fixture
def pty_env(tmp_path):
    env = dict(os.environ)
    env.pop("TURSO_AUTH_TOKEN", None)
    env.update(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "state"), TERM="dumb")
    os.makedirs(env["HOME"])
    return env


def pexpect_eof():
    import pexpect
    return pexpect.EOF


def spawn(db, env, *options):
    import pexpect
    child = pexpect.spawn(
        sys.executable,
        ["-m", "turso_dbapi", *options, db],
        env=env,
        cwd=NEUTRAL_CWD,
        encoding="utf-8",
        timeout=15,
        dimensions=(24, 120),
    )
    return child


def test_interactive_session_prompt_multiline_dot_commands_history_and_quit(db, pty_env, tmp_path):
    child = spawn(db, pty_env)
    child.expect(r"turso_dbapi \S+ \(SQLite [\d.]+\) on .*app\.db — \.help for commands\r\n")
    assert child.before.strip() == ""  # the one line is all there is before the prompt
    child.expect_exact("turso> ")
    child.sendline("select name,")
    child.expect_exact("  ...> ")
    child.sendline("  score from users where id = 1;")
    child.expect(r"\| name \| score \|")
    child.expect(r"\| ann  \|   9\.5 \|")
    child.expect_exact("turso> ")
    child.sendline(".tables")
    child.expect(r"\r\nusers\r\n")
    child.expect_exact("turso> ")
    child.sendline(".schema users")
    child.expect_exact("CREATE TABLE users (id integer primary key, name text, score real);")
    child.expect_exact("CREATE INDEX ix_users_name on users(name);")
    child.expect_exact("turso> ")
    child.sendline(".help")
    child.expect(r"\.schema \[TABLE\]")
    child.expect_exact("turso> ")
    child.sendline("select * from nope;")  # an error does not end the session
    child.expect_exact("Error: no such table: nope")
    child.expect_exact("turso> ")
    child.sendline("insert into users (name) values ('cy');")
    child.expect_exact("turso> ")
    child.sendline(".quit")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0
    history = tmp_path / "state" / "turso_dbapi" / "history"
    lines = history.read_text().splitlines()
    assert "  score from users where id = 1;" in lines and ".quit" in lines
    with sqlite3.connect(db) as c:  # autocommit, as in python -m sqlite3
        assert c.execute("select count(*) from users").fetchone() == (3,)
    c.close()


def test_history_is_recalled_in_the_next_session(db, pty_env):
    child = spawn(db, pty_env)
    child.expect_exact("turso> ")
    child.sendline("select 40 + 2 as v;")
    child.expect(r"\| 42 \|")
    child.expect_exact("turso> ")
    child.sendeof()
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0  # Ctrl-D leaves cleanly

    child = spawn(db, pty_env)
    child.expect_exact("turso> ")
    child.send("\x10\r")  # Ctrl-P: previous history line, then Enter
    child.expect(r"\| 42 \|")
    child.expect_exact("turso> ")
    child.sendline(".exit")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_discards_the_unfinished_statement(db, pty_env):
    child = spawn(db, pty_env)
    child.expect_exact("turso> ")
    child.sendline("select 'half")
    child.expect_exact("  ...> ")
    child.sendintr()
    child.expect_exact("turso> ")  # back to a fresh statement
    child.sendline("select 'fresh' as w;")
    child.expect(r"\| fresh \|")
    child.expect_exact("turso> ")
    child.sendline(".quit")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0


def test_file_uri_options_reach_sqlite(db):
    r = run(f"file:{db}?mode=ro", "insert into users (name) values ('x')")
    assert r.returncode == 1
    assert r.stderr == "Error: attempt to write a readonly database\n"
    assert run(f"file:{db}?mode=ro", "select count(*) from users").returncode == 0


def test_installed_console_script_is_the_same_shell(db):
    script = os.path.join(os.path.dirname(sys.executable), "turso-dbapi")
    assert os.path.exists(script), (
        f"{script} missing: the tests run against an installed package (pip install '.[test]')")
    r = subprocess.run(
        [script, db, "select name from users where id = 2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (r.returncode, r.stderr) == (0, "") and "| bob  |" in r.stdout


# -- remote databases from the reference server (tests/support/turso_server.py) ----------


def fill_remote(path: str) -> None:
    with sqlite3.connect(path) as c:
        c.execute("create table t (id integer primary key, v text)")
        c.executemany("insert into t (v) values (?)", [("x" * 300,) for _ in range(2000)])
    c.close()


@pytest.fixture
def remote_env(tmp_path):
    pytest.importorskip("turso_dbapi.replica.base")
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


def stats_table(stdout: str) -> dict:
    rows = [line.split("|") for line in stdout.splitlines() if line.startswith("| ")]
    return {cells[1].strip(): cells[2].strip() for cells in rows if len(cells) == 4}


def test_stats_of_a_range_read_remote_show_requests_bytes_and_hits(
    turso_server_factory, remote_env
):
    srv = turso_server_factory(setup=fill_remote)
    r = run(
        "--partial",
        srv.file_url,
        stdin="select v from t where id = 1500;\n.stats\n",
        env=remote_env,
    )
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    stats = stats_table(r.stdout)
    size = os.path.getsize(srv.db_path)
    assert int(stats["requests"]) >= 1 and int(stats["hits"]) >= 0
    assert 0 < int(stats["bytes_received"]) < size / 2  # lazy: a point lookup, not the file
    assert stats["url"] == srv.file_url


def test_pull_in_a_session_applies_changes_made_on_the_server(
    turso_server_factory, remote_env, pty_env, tmp_path
):
    srv = turso_server_factory(setup=fill_remote)
    pty_env.update(remote_env)
    child = spawn(srv.url, pty_env, "--partial")
    child.expect_exact("turso> ")
    child.sendline("select count(*) as n from t;")
    child.expect(r"\| 2000 \|")
    child.expect_exact("turso> ")
    srv.db_sql("insert into t (v) values ('new')")
    child.sendline(".pull")
    child.expect_exact("pulled: changes applied")
    child.expect_exact("turso> ")
    child.sendline("select count(*) as n from t;")
    child.expect(r"\| 2001 \|")
    child.expect_exact("turso> ")
    child.sendline(".pull")
    child.expect_exact("already up to date")
    child.sendline(".quit")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0


def test_auth_token_comes_from_the_environment_and_a_wrong_one_exits_2(
    turso_server_factory, remote_env
):
    srv = turso_server_factory(setup=fill_remote, auth_token="tok-abc")
    ok = run(
        "--partial",
        srv.url,
        "select count(*) as n from t",
        env=dict(remote_env, TURSO_AUTH_TOKEN="tok-abc"),
    )
    assert (ok.returncode, ok.stderr) == (0, "") and "| 2000 |" in ok.stdout
    # A fresh cache: a replica bootstrapped above would reopen without asking the server.
    fresh = {"XDG_CACHE_HOME": remote_env["XDG_CACHE_HOME"] + "-2"}
    bad = run("--partial", "--auth-token", "tok-wrong", srv.url, "select 1", env=fresh)
    assert bad.returncode == 2
    assert bad.stderr.startswith("Error: ") and bad.stderr.count("\n") == 1
    assert "401" in bad.stderr and "tok-wrong" not in bad.stderr


def test_ctrl_c_stops_a_running_query_and_keeps_the_session(db, pty_env):
    child = spawn(db, pty_env)
    child.expect_exact("turso> ")
    child.sendline(
        "with recursive r(i) as (select 1 union all select i + 1 from r) "
        "select count(*) from r where i < 10000000000;"
    )
    time.sleep(0.5)
    child.sendintr()
    child.expect_exact("Error: interrupted", timeout=10)
    child.expect_exact("turso> ")
    child.sendline("select 'alive' as s;")
    child.expect(r"\| alive \|")
    child.sendline(".quit")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0


def test_replica_location_from_the_path_or_local_path_and_options_from_the_url(
    turso_server_factory, remote_env, tmp_path
):
    srv = turso_server_factory(setup=fill_remote)
    file_url = srv.file_url
    # PATH -o url=...: the path is the replica (the SQLAlchemy form, sqlite+turso_dbapi:///PATH?url=)
    r = run(
        str(tmp_path / "a.db"),
        "select count(*) as n from t",
        "-o",
        f"url={file_url}",
        "-o",
        "partial=true",
        env=remote_env,
    )
    assert (r.returncode, r.stderr) == (0, "") and "| 2000 |" in r.stdout
    assert (tmp_path / "a.db").exists()
    # URL --local-path PATH, with partial=true in the URL's own query string.
    r = run(
        f"{file_url}?partial=true", "--local-path", str(tmp_path / "b.db"), ".stats", env=remote_env
    )
    assert (r.returncode, r.stderr) == (0, "")
    assert (tmp_path / "b.db").exists()
    assert int(stats_table(r.stdout)["bytes_received"]) < os.path.getsize(srv.db_path)
    assert not (tmp_path / "cache").exists()  # nothing went to the default cache


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    sql = "with recursive r(i) as (select 1 union all select i + 1 from r limit 200000) select i from r"
    proc = subprocess.Popen(
        SHELL + [":memory:", sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=NEUTRAL_CWD
    )
    assert proc.stdout.readline() == b"+--------+\n"
    proc.stdout.close()  # like `| head -1`
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert err == ""
