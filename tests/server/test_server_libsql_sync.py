"""libSQL embedded-replica sync on the reference server: /info, /export, /sync frames.

The frames must be what the libsql crate's ``try_pull`` inserts: 4120-byte frames, commit
frames carrying the database size, and — since they come from the native WAL writer — a
real WAL: the generation's header followed by its frames is recovered by plain SQLite.
"""

from __future__ import annotations

import sqlite3
import struct

import pytest
import requests

from turso_dbapi.server.libsql_sync import FRAME_SIZE
from turso_dbapi.server.wal import parse_wal


def get(srv, path, **kw):
    return requests.get(srv.url + path, timeout=30, **kw)


def pull_all(srv, gen, start=1, batch=128):
    """Frames from ``start`` on, as try_pull asks for them, until end of generation."""
    out = b""
    while True:
        r = get(srv, f"/sync/{gen}/{start}/{start + batch}")
        if r.status_code == 400:
            return out, r.json()["generation"]
        assert r.status_code == 200 and len(r.content) % FRAME_SIZE == 0 and r.content
        out += r.content
        start += len(r.content) // FRAME_SIZE


def materialize(tmp_path, srv, gen, export, frames, name="replica.db"):
    """The replica a client builds: the export, then the frames. A non-empty export is
    opened with header + frames as its WAL (plain SQLite's recovery does the replay); an
    empty one is not in WAL mode yet, so the frames' pages are written into it."""
    db = tmp_path / name
    if not export:
        image = bytearray()
        for i in range(0, len(frames), FRAME_SIZE):
            pgno, size = struct.unpack(">II", frames[i : i + 8])
            end = pgno * 4096
            image.extend(bytes(max(0, end - len(image))))
            image[end - 4096 : end] = frames[i + 24 : i + FRAME_SIZE]
            if size:
                del image[size * 4096 :]
        db.write_bytes(bytes(image))
        return sqlite3.connect(db)
    db.write_bytes(export)
    header, _ = srv.server.httpd.libsql.header(gen)
    (tmp_path / (name + "-wal")).write_bytes(header + frames)
    return sqlite3.connect(db)


def test_info_export_and_frames_replay_the_history(turso_server, tmp_path):
    srv = turso_server
    assert get(srv, "/info").json() == {"current_generation": 1}
    assert get(srv, "/export/1").content == b""  # generation 1 starts at the empty database
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    srv.db_sql("INSERT INTO t(x) SELECT randomblob(3000) FROM generate_series(1, 20)")
    srv.db_sql("UPDATE t SET x = 'small' WHERE id % 2 = 0")
    frames, current = pull_all(srv, 1)
    assert current == 1
    headers = [struct.unpack(">II", frames[i : i + 8]) for i in range(0, len(frames), FRAME_SIZE)]
    commits = [size for _, size in headers if size]
    assert len(commits) == 3  # one commit per revision
    assert commits[-1] == int(srv.db_sql("PRAGMA page_count")[0][0])
    scan = parse_wal(srv.server.httpd.libsql.header(1)[0] + frames)
    assert scan.max_frame == len(headers) and scan.valid_frames == len(headers)  # checksums chain
    conn = materialize(tmp_path, srv, 1, b"", frames)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT count(*), sum(x = 'small') FROM t").fetchone() == (20, 10)
    # pulling from the middle continues the same numbering and checksums
    mid = len(headers) // 2 + 1
    assert get(srv, f"/sync/1/{mid}/{mid + 3}").content == frames[(mid - 1) * FRAME_SIZE :][
        : 3 * FRAME_SIZE
    ]


def test_a_size_only_revision_is_a_commit_frame(turso_server, tmp_path):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(x)")
    srv.db_sql("INSERT INTO t SELECT randomblob(4000) FROM generate_series(1, 30)")
    srv.db_sql("DELETE FROM t")
    srv.db_sql("VACUUM")  # shrinks the file
    frames, _ = pull_all(srv, 1)
    conn = materialize(tmp_path, srv, 1, b"", frames)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert conn.execute("PRAGMA page_count").fetchone()[0] == int(srv.db_sql("PRAGMA page_count")[0][0])


def test_generations_roll_and_old_ones_end_where_the_next_export_starts(turso_server, tmp_path):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    srv.db_sql("INSERT INTO t(x) VALUES ('a')")
    old_frames, _ = pull_all(srv, 1)
    for i in range(40):
        srv.db_sql(f"UPDATE t SET x = 'v{i}'")
    assert get(srv, "/info").json() == {"current_generation": 2}
    export2 = get(srv, "/export/2").content
    assert len(export2) == int(srv.db_sql("PRAGMA page_count")[0][0]) * 4096
    # a replica still on generation 1 gets the rest of it, then "end of generation" naming 2
    rest, current = pull_all(srv, 1, start=len(old_frames) // FRAME_SIZE + 1)
    assert current == 2 and len(rest) // FRAME_SIZE == 40
    conn = materialize(tmp_path, srv, 1, b"", old_frames + rest, "old.db")
    assert conn.execute("SELECT x FROM t").fetchone() == ("v39",)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert (tmp_path / "old.db").read_bytes() == export2  # generation 1's end is 2's export
    assert get(srv, "/info").json() == {"current_generation": 2}  # nothing new: no new one
    srv.db_sql("UPDATE t SET x = 'new'")
    frames2, _ = pull_all(srv, 2)
    conn = materialize(tmp_path, srv, 2, export2, frames2, "new.db")
    assert conn.execute("SELECT x FROM t").fetchone() == ("new",)


def test_bad_sync_requests_are_clear_errors(turso_server_factory):
    srv = turso_server_factory(auth_token="tok")
    h = {"Authorization": "Bearer tok"}
    for path in ("/info", "/export/1", "/sync/1/1/2"):
        assert get(srv, path).status_code == 401
    r = get(srv, "/sync/7/1/10", headers=h)
    assert r.status_code == 409 and "generation 7 does not exist" in r.json()["message"]
    assert get(srv, "/export/0", headers=h).status_code == 409
    r = get(srv, "/sync/1/0/10", headers=h)
    assert r.status_code == 409 and "frames count from 1" in r.json()["message"]
    r = get(srv, "/sync/1/1/10", headers=h)  # an empty database has no frames yet
    assert r.status_code == 400 and r.json()["generation"] == 1
    r = requests.post(srv.url + "/sync/1/1/2", data=b"x" * FRAME_SIZE, headers=h, timeout=10)
    assert r.status_code == 405 and "remote writes" in r.json()["message"]


@pytest.mark.parametrize("start", [2])
def test_frames_are_capped_per_reply(turso_server, start):
    srv = turso_server
    srv.db_sql("CREATE TABLE t(x)")
    srv.db_sql("INSERT INTO t SELECT randomblob(4000) FROM generate_series(1, 1100)")
    r = get(srv, f"/sync/1/{start}/100000")
    assert len(r.content) == 1024 * FRAME_SIZE
