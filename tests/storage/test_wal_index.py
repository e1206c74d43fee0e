"""WalIndex (client path: tdb_wal_follow, wal.h rule (8)) against the oracle and real SQLite."""

from __future__ import annotations

import os
import sqlite3
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turso_dbapi import _reference as ref
from turso_dbapi.storage.wal_index import WalIndex, parse_header

PS = 512


def build(salts=(7, 9), commits=((1, 2), (3,)), sizes=None, big_endian=True):
    """A WAL of ``commits`` (page numbers; the last frame of each is its commit frame)."""
    magic = ref.WAL_MAGIC | int(big_endian)
    _, head, hdr = ref.wal_write_header(magic, PS, 0, *salts)
    out = [head]
    s = (hdr.cksum1, hdr.cksum2)
    for k, pgnos in enumerate(commits):
        size = (sizes or [max(max(c) for c in commits)] * len(commits))[k]
        marks = [0] * (len(pgnos) - 1) + [size]
        pages = b"".join(bytes([p % 256, k % 256]) * (PS // 2) for p in pgnos)
        _, frames, s = ref.wal_write_frames(hdr, list(pgnos), marks, pages, s)
        out.append(frames)
    return b"".join(out), hdr


def oracle(data: bytes):
    rc, hdr = ref.wal_read_header(data)
    assert rc == ref.WAL_OK
    res, index = ref.wal_follow(data[ref.WAL_HDR:], hdr, (hdr.cksum1, hdr.cksum2), 1, 1 << 20)
    latest = {}
    for p, f in index.items():
        latest[p] = f
    return res, {p: f for p, f in latest.items() if p <= res.db_size}


def check_same(data: bytes) -> WalIndex:
    wal = WalIndex.from_bytes(data)
    assert wal is not None
    res, index = oracle(data)
    assert (wal.frames, wal.db_size, wal.cksum) == (res.n_frames, res.db_size, res.cksum)
    assert {p: wal.frame_of(p) for p in wal.pages()} == index
    for p, f in index.items():
        off = ref.WAL_HDR + (f - 1) * (24 + PS) + 24
        assert wal.page(p) == data[off:off + PS]
    return wal


def test_committed_frames_are_indexed_latest_frame_wins():
    data, _ = build(commits=((1, 2), (2, 3), (5,)))
    wal = check_same(data)
    assert (wal.frames, wal.db_size) == (5, 5)
    assert [wal.frame_of(p) for p in range(1, 7)] == [1, 3, 4, 0, 5, 0]


def test_uncommitted_tail_torn_frame_and_salt_change_are_not_trusted():
    data, hdr = build(commits=((1, 2), (3, 4)))
    frame = 24 + PS
    uncommitted = data[:ref.WAL_HDR + 3 * frame]  # commit 2 lost its commit frame
    assert check_same(uncommitted).frames == 2
    torn = data[:-100]
    assert check_same(torn).frames == 2
    bad = bytearray(data)
    bad[ref.WAL_HDR + 2 * frame + 12] ^= 1  # salt-2 of frame 3
    wal = check_same(bytes(bad))
    assert wal.frames == 2 and not wal.newer_generation_at(memoryview(bad)[ref.WAL_HDR:], wal.last_stop)
    newer = bytearray(data)
    struct.pack_into(">I", newer, ref.WAL_HDR + 2 * frame + 8, (hdr.salt1 + 1) & 0xFFFFFFFF)
    wal = check_same(bytes(newer))
    assert wal.newer_generation_at(memoryview(newer)[ref.WAL_HDR:], wal.last_stop)


def test_extend_continues_the_chain_in_pieces():
    data, _ = build(commits=((1,), (2, 3), (4,), (1, 5)))
    frame = 24 + PS
    whole = check_same(data)
    wal = WalIndex.from_bytes(data[:ref.WAL_HDR + frame])
    assert wal.frames == 1
    assert wal.extend(data[wal.end_offset:wal.end_offset + frame]) == []  # half a commit
    assert wal.extend(data[wal.end_offset:ref.WAL_HDR + 4 * frame]) == [2, 3, 4]
    assert wal.extend(data[wal.end_offset:]) == [1, 5]
    assert (wal.frames, wal.db_size, wal.cksum, bytes(wal.data)) == (
        whole.frames, whole.db_size, whole.cksum, bytes(whole.data))
    assert [wal.frame_of(p) for p in range(1, 6)] == [whole.frame_of(p) for p in range(1, 6)]


def test_headers_sqlite_ignores_mean_no_wal():
    data, _ = build()
    assert WalIndex.from_bytes(b"") is None
    assert WalIndex.from_bytes(data[:31]) is None
    bad = bytearray(data)
    bad[24] ^= 1  # header checksum
    assert WalIndex.from_bytes(bytes(bad)) is None and parse_header(bytes(bad)) is None


def test_a_database_that_grows_past_the_index_is_indexed_whole():
    commits = [tuple(range(1 + 40 * k, 41 + 40 * k)) for k in range(10)]  # 400 pages
    data, _ = build(commits=commits, sizes=[40 * (k + 1) for k in range(10)])
    wal = check_same(data)
    assert wal.db_size == 400 and len(wal.pages()) == 400


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.integers(1, 60), min_size=1, max_size=5), min_size=1, max_size=8),
       st.booleans(), st.integers(0, 2000), st.randoms(use_true_random=False))
def test_native_agrees_with_the_oracle(commits, big_endian, cut, rnd):
    data, _ = build(salts=(rnd.getrandbits(32), rnd.getrandbits(32)), commits=[tuple(c) for c in commits],
                    big_endian=big_endian)
    data = data[:max(ref.WAL_HDR, len(data) - cut)]
    if rnd.random() < 0.3 and len(data) > ref.WAL_HDR + 30:
        b = bytearray(data)
        b[rnd.randrange(ref.WAL_HDR, len(b))] ^= 0xFF
        data = bytes(b)
    check_same(data)


def test_a_wal_sqlite_wrote(tmp_path):
    path = tmp_path / "w.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("pragma page_size=512")
    con.execute("pragma journal_mode=wal")
    con.execute("pragma wal_autocheckpoint=0")
    con.execute("create table t(x)")
    for _ in range(50):
        con.execute("insert into t values (?)", (os.urandom(100),))
    data = open(str(path) + "-wal", "rb").read()
    wal = check_same(data)
    assert wal.frames == (len(data) - ref.WAL_HDR) // (24 + PS)  # every frame committed
    assert wal.db_size == con.execute("pragma page_count").fetchone()[0]
    con.close()
