"""The rebase's replay is set-based (sync/rebase.py, replay_file.py): a few statements per
changed table whatever the number of rows, every kind of key, values kept exactly; and a
format 2 (JSON) replay file an interrupted apply of an earlier version left is finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import turso_dbapi
from turso_dbapi.sync import apply as pull_apply
from turso_dbapi.sync import internal, rebase
from turso_dbapi.sync import metadata as sync_meta

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 2000


class Counting:
    """A connection that counts the statements run through it (each row of an
    ``executemany`` is one)."""

    def __init__(self, conn, seen):
        self._conn, self._seen = conn, seen

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def execute(self, sql, *args):
        self._seen.append(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql, rows):
        def each():
            for row in rows:
                self._seen.append(sql)
                yield row
        return self._conn.executemany(sql, each())


@pytest.fixture
def statements_run(monkeypatch):
    """Every statement the driver's internal connections run."""
    seen = []
    real = internal.connect
    monkeypatch.setattr(internal, "connect", lambda *a, **k: Counting(real(*a, **k), seen))
    return seen


def tables(server):
    server.db_sql("CREATE TABLE a(id INTEGER PRIMARY KEY, v INTEGER, b BLOB)")  # the rowid alias
    server.db_sql("CREATE TABLE r(x TEXT, y REAL)")  # no primary key: the rowid is the key
    server.db_sql("CREATE TABLE k(s TEXT, n INTEGER, v, PRIMARY KEY (s, n)) WITHOUT ROWID")
    server.db_sql("INSERT INTO a SELECT value, 0, NULL FROM generate_series(1, 100)")
    server.db_sql("INSERT INTO r SELECT 'r' || value, value FROM generate_series(1, 100)")
    server.db_sql("INSERT INTO k SELECT 'k', value, 0 FROM generate_series(1, 100)")


def dump(conn):
    return {t: conn.execute(f"SELECT rowid, * FROM {t} ORDER BY 1, 2, 3" if t != "k" else
                            "SELECT * FROM k ORDER BY s, n").fetchall() for t in ("a", "r", "k")}


def test_a_rebase_runs_a_few_statements_per_table_not_one_per_row(turso_server, tmp_path, statements_run):
    tables(turso_server)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    conn.executemany("INSERT INTO a VALUES (?, ?, ?)", [(1000 + i, i, bytes([i % 256]) * 3) for i in range(N)])
    conn.execute("UPDATE a SET v = -1, b = x'00ff' WHERE id <= 10")
    conn.execute("DELETE FROM a WHERE id BETWEEN 11 AND 20")
    conn.executemany("INSERT INTO r VALUES (?, ?)", [(f"n{i}", i + 0.5) for i in range(N)])
    conn.execute("UPDATE r SET y = 1e300 WHERE rowid <= 5")
    conn.execute("DELETE FROM r WHERE rowid BETWEEN 6 AND 9")
    conn.executemany("INSERT INTO k VALUES (?, ?, ?)", [("new", i, 9.25) for i in range(300)])
    conn.execute("UPDATE k SET v = 'text' WHERE s = 'k' AND n <= 3")
    conn.execute("DELETE FROM k WHERE s = 'k' AND n BETWEEN 4 AND 6")
    conn.commit()
    local = dump(conn)
    turso_server.db_sql("INSERT INTO a VALUES (-5, 5, NULL)")  # a server change to pull
    statements_run.clear()
    assert conn.pull() is True
    # 4k+ changes of the tables keyed by rowid, extracted and replayed in a few statements;
    # the 306 keys of k (a primary key other than the rowid) are read key by key (2 each)
    # and written to the replay file row by row; its 3 deletes are NULL-safe, one by one
    per_key = 3 * 306 + 3
    # (+ ~15 a table keyed by rowid after the commit: its tail starts above its rows, tail.start)
    assert len(statements_run) < 120 + 2 * 15 + per_key, len(statements_run)
    after = dump(conn)
    assert after["a"] == sorted(local["a"] + [(-5, -5, 5, None)])
    assert after["r"] == local["r"] and after["k"] == local["k"]
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.stats().pending_changes == 2 * N + 10 + 10 + 5 + 4 + 300 + 3 + 3


_LEGACY_CRASH = textwrap.dedent("""
    import base64, json, os, sys
    sys.path.insert(0, sys.argv[1])
    import turso_dbapi
    from turso_dbapi.sync import changes, metadata, rebase
    def legacy_extract(ic, replica, store, url):
        # what the previous version wrote: one JSON document (format 2)
        ch = changes.collect(ic, 0, untracked_rows=True)
        enc = lambda vals: [{"b": base64.b64encode(v).decode()} if isinstance(v, bytes) else v for v in vals]
        tables = {c.table: [list(ch.infos[c.table].columns), list(ch.infos[c.table].pk),
                            ch.infos[c.table].kind, ch.infos[c.table].rowid_name, False] for c in ch.rows}
        rows = [[c.table, enc(c.key), None if c.row is None else enc(c.row.values()), c.change_id]
                for c in ch.rows]
        doc = {"format": 2, "gen": 0, "before": [], "after": [], "rows": rows, "tables": tables}
        with open(rebase.replay_path(replica), "w") as f:
            json.dump(doc, f)
        return len(rows)
    rebase.extract = legacy_extract
    rebase.prepare = lambda ic, replica: None  # (this version extracts ahead of the lock)
    real_save = metadata.save
    def save_and_die(path, meta):
        real_save(path, meta)
        if meta.pending_pull is not None:
            os._exit(3)  # the apply was recorded, then the process died
    metadata.save = save_and_die
    conn = turso_dbapi.connect(sys.argv[2])
    conn.pull()
""")


def test_an_apply_interrupted_with_a_format_2_replay_file_is_finished(turso_server, tmp_path):
    tables(turso_server)
    path = str(tmp_path / "r.db")
    conn = turso_dbapi.connect(turso_server.url, local_path=path, journal_mode="delete")
    conn.executemany("INSERT INTO a VALUES (?, ?, NULL)", [(1000 + i, i) for i in range(50)])
    conn.execute("DELETE FROM a WHERE id = 1")
    conn.execute("UPDATE r SET x = 'changed' WHERE rowid = 2")
    conn.execute("UPDATE a SET b = x'00ff10' WHERE id = 5")  # a blob: base64 in format 2
    conn.commit()
    local = dump(conn)
    conn.close()
    turso_server.db_sql("INSERT INTO a VALUES (-5, 5, NULL)")
    proc = subprocess.run([sys.executable, "-c", _LEGACY_CRASH, ROOT, path], capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 3, proc.stderr
    with open(rebase.replay_path(path), encoding="utf-8") as f:
        assert json.load(f)["format"] == 2
    assert sync_meta.load(path).pending_pull is not None and os.path.exists(pull_apply.stage_path(path))
    conn = turso_dbapi.connect(path)  # the open finishes the apply from the JSON file
    assert sync_meta.load(path).pending_pull is None and not os.path.exists(rebase.replay_path(path))
    after = dump(conn)
    assert after["a"] == sorted(local["a"] + [(-5, -5, 5, None)]) and after["r"] == local["r"]
    assert conn.stats().pending_changes == 53



def test_the_replay_file_is_extracted_before_the_lock_and_redone_if_a_commit_came_between(
        turso_server, tmp_path, monkeypatch):
    tables(turso_server)
    conn = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"), journal_mode="delete")
    conn.executemany("INSERT INTO a VALUES (?, ?, NULL)", [(1000 + i, i) for i in range(20)])
    conn.commit()
    turso_server.db_sql("INSERT INTO a VALUES (-5, 5, NULL)")

    def no_extract_under_the_lock(*args, **kwargs):
        raise AssertionError("extracted under the lock")

    real_extract = rebase.extract
    monkeypatch.setattr(rebase, "extract", no_extract_under_the_lock)
    assert conn.pull() is True  # the file extracted ahead of the lock was used
    assert conn.execute("SELECT count(*) FROM a WHERE id >= 1000 OR id = -5").fetchone() == (21,)

    # a commit between the extraction and the lock: the file is stale, extracted again
    monkeypatch.setattr(rebase, "extract", real_extract)
    real_prepare = rebase.prepare
    late = turso_dbapi.connect(str(tmp_path / "r.db"))

    def prepare_then_commit(ic, replica):
        prepared = real_prepare(ic, replica)
        late.execute("INSERT INTO a VALUES (5000, 1, NULL)")  # after the extraction
        late.commit()
        return prepared

    monkeypatch.setattr(rebase, "prepare", prepare_then_commit)
    turso_server.db_sql("INSERT INTO a VALUES (-6, 6, NULL)")
    assert conn.pull() is True
    assert conn.execute("SELECT id FROM a WHERE id IN (-6, 5000) ORDER BY id").fetchall() == [(-6,), (5000,)]
    assert conn.execute("SELECT count(*) FROM a WHERE id >= 1000").fetchone() == (21,)
    assert not [f for f in os.listdir(tmp_path) if ".tmp." in f]  # the stale file is gone


