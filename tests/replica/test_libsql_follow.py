"""protocol=libsql: a libSQL server's embedded-replica protocol (/info, /export, /sync frames)
through the WAL frame path, against the reference server, with the PyPI ``libsql``
package's embedded replica on the same server as the independent peer (in a subprocess:
its Rust core holds the GIL while it waits for the network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import turso_dbapi
from turso_dbapi.errors import ProtocolError

PEER = """
import json, os, libsql
c = libsql.connect(os.environ["REPLICA"], sync_url=os.environ["URL"])
c.sync()
print(json.dumps(c.execute("SELECT id, v FROM t ORDER BY id").fetchall()))
"""


def peer_rows(srv, path) -> list:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(PEER)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "REPLICA": str(path), "URL": srv.url})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [list(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


def server_rows(srv) -> list:
    return [[int(i), v] for i, v in srv.db_sql("SELECT id, v FROM t ORDER BY id")]


def ours(con) -> list:
    return [list(r) for r in con.execute("SELECT id, v FROM t ORDER BY id").fetchall()]


def test_both_replicas_converge_to_the_server_through_generations(turso_server, tmp_path):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    srv.db_sql("INSERT INTO t(v) SELECT hex(randomblob(200)) FROM generate_series(1, 300)")
    con = turso_dbapi.connect(srv.url, protocol="libsql", local_path=str(tmp_path / "ours.db"))
    assert con.stats().requests == 2  # /info, /export of the current generation
    assert ours(con) == server_rows(srv)
    assert con.pull() is False  # up to date: one /sync answered "end of generation"
    assert con.stats().requests == 3

    srv.db_sql("INSERT INTO t(v) VALUES ('after bootstrap')")
    srv.db_sql("UPDATE t SET v = 'changed' WHERE id % 7 = 0")
    assert con.pull() is True
    assert con.stats().requests == 4  # one /sync: a short reply is all there is
    assert ours(con) == server_rows(srv)

    # the peer bootstraps: its /info starts a new generation; then more writes land in it
    assert peer_rows(srv, tmp_path / "peer.db") == server_rows(srv)
    srv.db_sql("INSERT INTO t(v) SELECT 'gen2 ' || value FROM generate_series(1, 50)")
    srv.db_sql("DELETE FROM t WHERE id < 20")
    assert con.pull() is True  # the rest of generation 1 (nothing), then the next ones' frames
    assert "generation=1;" not in con.stats().version
    assert ours(con) == server_rows(srv) == peer_rows(srv, tmp_path / "peer.db")
    con.close()


def test_a_replica_follows_many_batches(turso_server, tmp_path):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con = turso_dbapi.connect(srv.url, protocol="libsql", local_path=str(tmp_path / "ours.db"))
    # more than one /sync batch (1024 frames) of history, commits of ~400 frames: a batch
    # ends inside a commit, whose frames are asked again by the next request
    for _ in range(3):
        srv.db_sql("INSERT INTO t(v) SELECT hex(randomblob(1500)) FROM generate_series(1, 400)")
    requests = con.stats().requests
    assert con.pull() is True
    assert con.stats().requests - requests == 2  # a full batch (2 of 3 commits), then the rest
    assert ours(con) == server_rows(srv)
    con.close()


def test_frames_that_break_the_chain_are_refused(turso_server, tmp_path, monkeypatch):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con = turso_dbapi.connect(srv.url, protocol="libsql", local_path=str(tmp_path / "ours.db"))
    srv.db_sql("INSERT INTO t(v) SELECT hex(randomblob(3000)) FROM generate_series(1, 10)")
    source = con._replica.source
    real = source._frames

    def damaged(gen, start):
        body = real(gen, start)
        if isinstance(body, bytes) and len(body) > 3 * 4120:
            b = bytearray(body)
            b[2 * 4120 + 24 + 100] ^= 0xFF  # a byte of frame 3's page
            return bytes(b)
        return body

    monkeypatch.setattr(source, "_frames", damaged)
    with pytest.raises(ProtocolError, match="breaks the checksum chain"):
        con.pull()
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)  # nothing applied
    monkeypatch.setattr(source, "_frames", real)
    assert con.pull() is True and ours(con) == server_rows(srv)
    con.close()


def test_follow_pulls_frames_at_the_next_read_transaction(turso_server, tmp_path):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con = turso_dbapi.connect(srv.url + "?follow=0&protocol=libsql", local_path=str(tmp_path / "f.db"))
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    srv.db_sql("INSERT INTO t(v) VALUES ('seen without pull()')")
    assert ours(con) == server_rows(srv)
    con.close()
