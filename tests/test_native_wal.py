"""SQLite WAL: the native parser/writer against the oracle, and both against real SQLite."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turso_dbapi import _reference as ref
from turso_dbapi.server import wal
from turso_dbapi._native import ffi, lib

PS = 1024  # small pages keep the SQLite fixtures tiny


# ---- helpers --------------------------------------------------------------------------


def scan_both(data: bytes) -> ref.WalResult:
    """The raw scan from the oracle, asserting the native core agrees exactly."""
    oracle = wal._scan(data, native=False)
    if lib is not None:
        assert wal._scan(data, native=True) == oracle
    return oracle


def parse_both(data: bytes):
    """parse_wal on both backends: same WalScan, or the same WalFormatError message."""
    try:
        expected = wal.parse_wal(data, reference=True)
    except wal.WalFormatError as exc:
        with pytest.raises(wal.WalFormatError) as got:
            wal.parse_wal(data)
        assert str(got.value) == str(exc)
        return None
    assert wal.parse_wal(data) == expected
    return expected


def connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), isolation_level=None)
    con.execute(f"PRAGMA page_size={PS}")
    con.execute("PRAGMA journal_mode=WAL")
    return con


def make_db(path: Path, rows: int) -> None:
    """A WAL-mode database, closed (so checkpointed: no -wal left)."""
    with contextlib.closing(connect(path)) as con:
        con.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)")
        con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"row{i}" * 20) for i in range(rows)])
    assert not Path(str(path) + "-wal").exists()


def changed_pages(old: bytes, new: bytes) -> List[Tuple[int, bytes]]:
    """(pgno, image) of every page of ``new`` that differs from ``old``."""
    out = []
    for i in range(len(new) // PS):
        page = new[i * PS : (i + 1) * PS]
        if old[i * PS : (i + 1) * PS] != page:
            out.append((i + 1, page))
    return out


def rows(path: Path) -> List[tuple]:
    with contextlib.closing(sqlite3.connect(str(path))) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return con.execute("SELECT k, v FROM t ORDER BY k").fetchall()


def evolve(tmp_path: Path) -> Tuple[List[bytes], List[List[tuple]]]:
    """Three states of one database: base, +rows/updates, +deletes (files and contents)."""
    a = tmp_path / "state.db"
    make_db(a, 40)
    states = [a.read_bytes()]
    contents = [rows(a)]
    with contextlib.closing(connect(a)) as con:
        con.executemany("INSERT INTO t VALUES (?, ?)", [(i, "new" * 30) for i in range(40, 90)])
        con.execute("UPDATE t SET v = 'changed' WHERE k % 7 = 0")
    states.append(a.read_bytes())
    contents.append(rows(a))
    with contextlib.closing(connect(a)) as con:
        con.execute("DELETE FROM t WHERE k > 60 OR k % 3 = 0")
    states.append(a.read_bytes())
    contents.append(rows(a))
    return states, contents


def wal_from_states(states: List[bytes], **kw) -> bytes:
    commits = [changed_pages(states[i], states[i + 1]) for i in range(len(states) - 1)]
    sizes = [len(s) // PS for s in states[1:]]
    return wal.build_wal(PS, commits, sizes, **kw)


def open_with_wal(tmp_path: Path, base: bytes, wal_bytes: bytes) -> List[tuple]:
    """What plain SQLite sees in ``base`` with ``wal_bytes`` placed as its -wal."""
    d = tmp_path / f"open{len(list(tmp_path.iterdir()))}"
    d.mkdir()
    (d / "x.db").write_bytes(base)
    (d / "x.db-wal").write_bytes(wal_bytes)
    return rows(d / "x.db")


@pytest.fixture(scope="module")
def sqlite_wal(tmp_path_factory: pytest.TempPathFactory) -> Tuple[bytes, bytes, bytes]:
    """(db file, its -wal, the db file after a checkpoint), copied while a connection is open."""
    d = tmp_path_factory.mktemp("live")
    path = d / "live.db"
    con = connect(path)
    try:
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)")
        for i in range(30):  # many small commits: pages recur across frames
            con.execute("INSERT INTO t VALUES (?, ?)", (i, os.urandom(150).hex()))
        con.execute("UPDATE t SET v = 'x' WHERE k < 10")
        con.execute("PRAGMA cache_size=5")  # a big transaction now spills into the WAL
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO t VALUES (?, 'uncommitted')", [(1000 + i,) for i in range(200)]
        )
        db, wal_bytes = path.read_bytes(), Path(str(path) + "-wal").read_bytes()
        con.execute("ROLLBACK")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        checkpointed = path.read_bytes()
    finally:
        con.close()
    return db, wal_bytes, checkpointed


# ---- the checksum -----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    words=st.binary(max_size=512).map(lambda b: b[: len(b) // 8 * 8]),
    big=st.booleans(),
    s0=st.integers(0, 2**32 - 1),
    s1=st.integers(0, 2**32 - 1),
)
def test_wal_checksum_matches_oracle(words: bytes, big: bool, s0: int, s1: int) -> None:
    s = ffi.new("uint32_t[2]", [s0, s1])
    assert lib.tdb_wal_checksum(big, words, len(words), s) == ref.WAL_OK
    assert tuple(s) == ref.wal_checksum(big, words, (s0, s1))


def test_wal_checksum_known_value_and_bad_length() -> None:
    # Worked by hand from rule (1): pairs (1,2),(3,4) -> s0=1,s1=3 -> s0=7,s1=14.
    data = struct.pack(">4I", 1, 2, 3, 4)
    assert ref.wal_checksum(True, data) == (7, 14)
    assert ref.wal_checksum(False, struct.pack("<4I", 1, 2, 3, 4)) == (7, 14)
    with pytest.raises(ValueError, match="multiple of 8"):
        ref.wal_checksum(True, b"1234")
    if lib is not None:
        assert lib.tdb_wal_checksum(1, b"1234", 4, ffi.new("uint32_t[2]")) == ref.WAL_EARG


# ---- parsing a WAL written by SQLite --------------------------------------------------------


def test_sqlite_wal_parsed_identically(sqlite_wal: Tuple[bytes, bytes, bytes]) -> None:
    db, wal_bytes, _ = sqlite_wal
    scan = parse_both(wal_bytes)
    assert scan is not None
    assert scan.version == 3007000 and scan.page_size == PS
    assert scan.max_frame > 30 and scan.db_size == len(sqlite_wal[2]) // PS
    # The index maps each page to its LAST committed frame.
    expected: Dict[int, int] = {}
    for i, (pgno, _, off) in enumerate(scan.frames):
        expected[pgno] = i
        assert off == 32 + i * (24 + PS)
    assert scan.page_index == expected
    assert scan.frames[-1][1] == scan.db_size  # the last counted frame is a commit
    # The open transaction spilled valid frames that no commit covers (rule 4).
    assert scan.valid_frames > scan.max_frame


def test_applying_the_index_equals_sqlite_checkpoint(
    sqlite_wal: Tuple[bytes, bytes, bytes],
) -> None:
    db, wal_bytes, checkpointed = sqlite_wal
    scan = wal.parse_wal(wal_bytes)
    image = bytearray(db.ljust(scan.db_size * PS, b"\0")[: scan.db_size * PS])
    for pgno in scan.page_index:
        if pgno <= scan.db_size:
            image[(pgno - 1) * PS : pgno * PS] = scan.page(wal_bytes, pgno)
    assert bytes(image) == checkpointed[: scan.db_size * PS]


def test_sqlite_wal_recovered_by_sqlite_matches_scan(
    tmp_path: Path, sqlite_wal: Tuple[bytes, bytes, bytes]
) -> None:
    db, wal_bytes, _ = sqlite_wal
    got = open_with_wal(tmp_path, db, wal_bytes)
    assert len(got) == 30 and all(v == "x" for k, v in got if k < 10)  # no spilled rows


# ---- header errors ------------------------------------------------------------------------------


def _header(**fields) -> bytearray:
    base = dict(magic=0x377F0683, page_size=4096, checkpoint_seq=0, salt1=1, salt2=2)
    base.update(fields)
    _, head, _ = ref.wal_write_header(**base)
    return bytearray(head)


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "truncated header: 0 bytes"),
        (bytes(12), "truncated header: 12 bytes"),
        (b"\x12\x34\x56\x78" + bytes(28), "bad WAL magic 0x12345678"),
        (
            struct.pack(">3I", 0x377F0683, 3007000, 3000) + bytes(20),
            "page size 3000 is not a power of two",
        ),
        (struct.pack(">3I", 0x377F0682, 3007000, 256) + bytes(20), "page size 256 is outside"),
        (
            struct.pack(">3I", 0x377F0682, 3007000, 131072) + bytes(20),
            "page size 131072 is outside",
        ),
        (struct.pack(">3I", 0x377F0682, 3007000, 0) + bytes(20), "page size 0 is outside"),
        (_header()[:31] + b"\x00", "bad WAL header checksum"),
    ],
)
def test_header_errors_name_the_problem(data: bytes, message: str) -> None:
    for reference in (True, False):
        with pytest.raises(wal.WalFormatError, match=message):
            wal.parse_wal(bytes(data), reference=reference)


def test_version_checked_after_checksum() -> None:
    head = bytearray(_header())
    head[4:8] = struct.pack(">I", 3007001)
    c = ref.wal_checksum(True, bytes(head[:24]))
    head[24:32] = struct.pack(">2I", *c)  # valid checksum over a wrong version
    with pytest.raises(wal.WalFormatError, match="unsupported WAL format version 3007001"):
        wal.parse_wal(bytes(head))
    assert issubclass(wal.WalFormatError, ValueError)


def test_header_only_wal_is_empty() -> None:
    scan = parse_both(bytes(_header(page_size=65536)))
    assert scan is not None
    assert (scan.frames, scan.page_index, scan.db_size, scan.max_frame) == ([], {}, 0, 0)
    assert scan.last_checksum == scan.checksum


# ---- hostile and random input: C and oracle agree, never crash ------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_agrees(data: bytes) -> None:
    parse_both(data)


@settings(max_examples=200, deadline=None)
@given(
    page_size=st.sampled_from([0, 1, 511, 512, 513, 1024, 65536, 2**31, 2**32 - 1]),
    tail=st.binary(max_size=2000),
    big=st.booleans(),
)
def test_hostile_page_sizes_agree(page_size: int, tail: bytes, big: bool) -> None:
    head = struct.pack(">6I", 0x377F0682 | big, 3007000, page_size, 0, 5, 6)
    head += struct.pack(">2I", *ref.wal_checksum(big, head))  # checksum is right
    scan_both(head + tail)
    parse_both(head + tail)


@pytest.fixture(scope="module")
def built_wal() -> bytes:
    """A 3-commit WAL of 512-byte pages with a repeated page, for mutation tests."""
    pages = [(p, bytes([p]) * 512) for p in (1, 2, 3)]
    commits = [pages, [(2, b"\x07" * 512), (4, b"\x08" * 512)], [(2, b"\x09" * 512)]]
    return wal.build_wal(512, commits, [3, 4, 4], salts=(11, 22))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_wal_agrees(built_wal: bytes, data: st.DataObject) -> None:
    buf = bytearray(built_wal)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
        if not buf:
            break
        pos = data.draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            del buf[pos:]
        else:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=40))
    parse_both(bytes(buf))


def reseal(buf: bytearray, page_size: int) -> None:
    """Recompute the header's and every whole frame's checksum: only non-checksum rules
    (salts, page number 0) can then reject a frame."""
    big = bool(buf[3] & 1)
    s = ref.wal_checksum(big, bytes(buf[:24]))
    buf[24:32] = struct.pack(">2I", *s)
    off = 32
    while off + 24 + page_size <= len(buf):
        s = ref.wal_checksum(big, bytes(buf[off : off + 8]), s)
        s = ref.wal_checksum(big, bytes(buf[off + 24 : off + 24 + page_size]), s)
        buf[off + 16 : off + 24] = struct.pack(">2I", *s)
        off += 24 + page_size


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_resealed_field_mutations_agree(built_wal: bytes, data: st.DataObject) -> None:
    buf = bytearray(built_wal)
    frame = data.draw(st.integers(0, 5))
    field = data.draw(st.integers(0, 3))  # pgno, commit size, salt-1, salt-2
    pos = 32 + frame * (24 + 512) + 4 * field
    old = struct.unpack_from(">I", buf, pos)[0]
    new = data.draw(st.sampled_from([0, 1, old ^ 1, old ^ 0x80000000, 2**32 - 1]))
    struct.pack_into(">I", buf, pos, new)
    reseal(buf, 512)
    scan = parse_both(bytes(buf))
    assert scan is not None
    if field >= 2 and new != old or field == 0 and new == 0:
        assert scan.valid_frames == frame  # rule (3): the frame is rejected


def test_uncorrupted_built_wal(built_wal: bytes) -> None:
    scan = parse_both(built_wal)
    assert scan is not None
    assert [f[:2] for f in scan.frames] == [(1, 0), (2, 0), (3, 3), (2, 0), (4, 4), (2, 4)]
    assert scan.page_index == {1: 0, 2: 5, 3: 2, 4: 4}
    assert scan.page(built_wal, 2) == b"\x09" * 512 and scan.page(built_wal, 9) is None


@pytest.mark.parametrize("cut", [1, 24, 100, 536])
def test_torn_tail_drops_the_last_commit(built_wal: bytes, cut: int) -> None:
    scan = parse_both(built_wal[:-cut])
    assert scan is not None and scan.max_frame == 5 and scan.db_size == 4
    assert scan.valid_frames == 5


def test_native_guards(built_wal: bytes) -> None:
    hdr = ffi.new("tdb_wal_header *")
    res = ffi.new("tdb_wal_result *")
    pg = ffi.new("uint32_t[]", 2)
    cm = ffi.new("uint32_t[]", 2)
    # (5) arrays too small: an error, and nothing written past them
    assert lib.tdb_wal_scan(built_wal, len(built_wal), hdr, pg, cm, 2, res) == ref.WAL_ESPACE
    assert (
        lib.tdb_wal_scan(built_wal, len(built_wal), hdr, ffi.NULL, ffi.NULL, 0, res)
        == ref.WAL_ESPACE
    )
    assert lib.tdb_wal_scan(built_wal, len(built_wal), hdr, pg, cm, 2, ffi.NULL) == ref.WAL_EARG
    assert lib.tdb_wal_read_header(ffi.NULL, 5, hdr) == ref.WAL_EARG
    assert lib.tdb_wal_max_frames(3000, 10**9) == 0
    assert lib.tdb_wal_max_frames(512, 10) == 0
    # (7) writer refuses page number 0 and a short output buffer, writing nothing
    head = ffi.new("tdb_wal_header *", {"magic": 0x377F0683, "page_size": 512})
    out = bytearray(b"\xaa" * 600)
    s = ffi.new("uint32_t[2]")
    page = bytes(512)
    zero = ffi.new("uint32_t[]", [0])
    assert (
        lib.tdb_wal_write_frames(ffi.from_buffer(out), 600, head, zero, zero, page, 1, s)
        == ref.WAL_EARG
    )
    one = ffi.new("uint32_t[]", [1])
    assert (
        lib.tdb_wal_write_frames(ffi.from_buffer(out), 535, head, one, zero, page, 1, s)
        == ref.WAL_EARG
    )
    assert out == b"\xaa" * 600
    bad = ffi.new("tdb_wal_header *", {"magic": 0x377F0683, "page_size": 1000})
    assert lib.tdb_wal_write_header(ffi.from_buffer(out), 600, bad) == ref.WAL_EARG


# ---- the writer --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    commits=st.lists(
        st.lists(
            st.tuples(st.integers(1, 2**32 - 1), st.binary(min_size=1, max_size=8)),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=4,
    ),
    big=st.booleans(),
    salts=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    seq=st.integers(0, 2**32 - 1),
)
def test_build_then_parse_round_trip(commits, big: bool, salts, seq: int) -> None:
    commits = [[(p, (b * 512)[:512]) for p, b in c] for c in commits]
    sizes = [max(p for p, _ in c) for c in commits]
    data = wal.build_wal(512, commits, sizes, salts=salts, big_endian=big, checkpoint_seq=seq)
    assert data[:32] == ref.wal_write_header(0x377F0682 | big, 512, seq, *salts)[1]
    scan = parse_both(data)
    assert scan is not None
    flat = [(p, page) for c in commits for p, page in c]
    assert [f[0] for f in scan.frames] == [p for p, _ in flat]
    assert (
        scan.db_size == sizes[-1]
        and scan.checkpoint_seq == seq
        and (scan.salt1, scan.salt2) == salts
    )
    for pgno, i in scan.page_index.items():
        assert scan.page(data, pgno) == flat[i][1]
        assert all(p != pgno for p, _ in flat[i + 1 :])


def test_native_writer_matches_reference_writer(built_wal: bytes) -> None:
    scan = wal.parse_wal(built_wal)
    hdr = ref.WalHeader(scan.magic, scan.version, scan.page_size, scan.checkpoint_seq,
                        scan.salt1, scan.salt2, *scan.checksum)  # fmt: skip
    pgnos = [f[0] for f in scan.frames]
    marks = [f[1] for f in scan.frames]
    pages = b"".join(built_wal[f[2] + 24 : f[2] + 24 + 512] for f in scan.frames)
    rc, frames, s = ref.wal_write_frames(hdr, pgnos, marks, pages, scan.checksum)
    assert rc == ref.WAL_OK and built_wal == built_wal[:32] + frames and s == scan.last_checksum


def test_build_wal_argument_errors() -> None:
    page = bytes(512)
    with pytest.raises(wal.WalFormatError, match="page size 1000 is not a power of two"):
        wal.build_wal(1000, [[(1, page)]], [1])
    with pytest.raises(ValueError, match="1 commits but 2 db sizes"):
        wal.build_wal(512, [[(1, page)]], [1, 2])
    with pytest.raises(ValueError, match="commit 0 has no pages"):
        wal.build_wal(512, [[]], [1])
    with pytest.raises(ValueError, match="page number 0"):
        wal.build_wal(512, [[(0, page)]], [1])
    with pytest.raises(ValueError, match="has 3 bytes, not 512"):
        wal.build_wal(512, [[(1, b"abc")]], [1])
    with pytest.raises(ValueError, match="db size 0"):
        wal.build_wal(512, [[(1, page)]], [0])


@pytest.mark.parametrize("big_endian", [True, False])
def test_sqlite_reads_a_built_wal(tmp_path: Path, big_endian: bool) -> None:
    states, contents = evolve(tmp_path)
    data = wal_from_states(states, big_endian=big_endian)
    assert open_with_wal(tmp_path, states[0], data) == contents[2]
    scan = parse_both(data)
    assert scan is not None and scan.db_size == len(states[2]) // PS


def test_sqlite_reads_frames_appended_to_its_own_wal(tmp_path: Path) -> None:
    states, contents = evolve(tmp_path)
    first = wal_from_states(states[:2])
    scan = wal.parse_wal(first)
    more = wal.append_frames(scan, [changed_pages(states[1], states[2])], [len(states[2]) // PS])
    assert open_with_wal(tmp_path, states[0], first[: scan.end_offset] + more) == contents[2]


def _corrupt(data: bytes, scan: wal.WalScan, how: str) -> bytes:
    buf = bytearray(data)
    off = scan.frames[-1][2]  # the final commit frame
    if how == "torn":
        return bytes(buf[: off + 24 + PS // 2])
    if how == "salt":
        buf[off + 8] ^= 1
    elif how == "checksum":
        buf[off + 24 + 100] ^= 0x40
    elif how == "middle":  # a non-commit frame of the last commit
        buf[scan.frames[-2][2] + 24 + 5] ^= 1
    return bytes(buf)


@pytest.mark.parametrize("how", ["torn", "salt", "checksum", "middle"])
def test_damaged_last_commit_stops_where_sqlite_does(tmp_path: Path, how: str) -> None:
    states, contents = evolve(tmp_path)
    data = wal_from_states(states)
    scan = wal.parse_wal(data)
    first_commit_frames = len(changed_pages(states[0], states[1]))
    assert len(changed_pages(states[1], states[2])) >= 2  # "middle" needs two frames
    bad = _corrupt(data, scan, how)
    got = parse_both(bad)
    assert got is not None
    assert got.max_frame == first_commit_frames and got.db_size == len(states[1]) // PS
    assert open_with_wal(tmp_path, states[0], bad) == contents[1]  # SQLite agrees


def test_wal_of_an_older_generation_is_ignored_after_the_restart(tmp_path: Path) -> None:
    """Frames whose salts belong to a previous WAL generation end the scan (rule 3)."""
    states, contents = evolve(tmp_path)
    new = wal_from_states(states[:2], salts=(5, 6))
    old = wal_from_states(states, salts=(4, 6))
    scan = wal.parse_wal(new)
    mixed = new + old[scan.end_offset :]
    got = parse_both(mixed)
    assert got is not None and got.max_frame == scan.max_frame
    assert open_with_wal(tmp_path, states[0], mixed) == contents[1]


def test_public_api_without_the_native_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a compiler the reference does all the work: SQLite must still accept it."""
    states, contents = evolve(tmp_path)
    native = wal_from_states(states, salts=(1, 2))
    monkeypatch.setattr(wal, "lib", None)
    fallback = wal_from_states(states, salts=(1, 2))
    assert fallback == native
    assert open_with_wal(tmp_path, states[0], fallback) == contents[2]
    assert wal.parse_wal(fallback) == wal.parse_wal(native, reference=True)
