"""The page store on its own: slots, layers, sidecar, metadata, cache identity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from turso_dbapi._util import atomic
from turso_dbapi.fetch.miss import MissHandler
from turso_dbapi.storage import pagestore
from turso_dbapi._native import lib
from turso_dbapi.storage.checksum import crc32c
from turso_dbapi.errors import OperationalError

ROOT = Path(__file__).resolve().parents[2]  # the checkout (tests/<room>/this file)
PS = 1024


def _store(tmp_path: Path, size: int = 64 * PS, ident: bytes = b"\x01" * 32, page_size: int = PS,
           name: str = "db") -> pagestore.PageStore:
    return pagestore.open_store(str(tmp_path / name), page_size=page_size, size=size, identity=ident)


def _page(byte: int, page_size: int = PS) -> bytes:
    return bytes([byte]) * page_size


def test_put_fills_only_absent_slots_unless_overwrite(tmp_path):
    s = _store(tmp_path)
    assert not s.is_present(5)
    assert s.put_synced(5, _page(1)) is True
    assert s.put_synced(5, _page(2)) is False  # kept: never overwrite a present page
    assert s.read_page(5) == _page(1)
    assert s.put_synced(5, _page(3), overwrite=True) is True  # a new synced revision
    assert s.read_page(5) == _page(3)
    assert s.state(5) & lib.TDB_PG_SYNCED and not s.state(5) & lib.TDB_PG_LOCAL


def test_pages_past_the_remote_size_are_refused_and_read_as_absent_holes(tmp_path):
    s = _store(tmp_path, size=10 * PS)
    with pytest.raises(OperationalError, match="past the remote size"):
        s.put_synced(11, _page(1))
    assert s.read_page(11) == bytes(PS)  # a hole: zeros, no fetch
    assert s.read_page(3) is None  # inside the remote: absent
    with pytest.raises(ValueError):
        s.put_synced(3, b"short")


def test_first_absent_and_presence(tmp_path):
    s = _store(tmp_path, size=8 * PS)
    for p in (1, 2, 4):
        s.put_synced(p, _page(p))
    assert s.first_absent() == 3
    assert s.first_absent(5) == 5
    for p in range(1, 9):
        s.put_synced(p, _page(p))
    assert s.first_absent() == 0


def test_prefetched_bit_clears_on_first_read(tmp_path):
    s = _store(tmp_path)
    s.put_synced(7, _page(7), prefetched=True)
    assert not s.was_read(7)
    assert s.read_page(7) == _page(7)
    assert s.was_read(7)
    c = s.counters()
    assert c["prefetched"] == 1 and c["prefetch_used"] == 1


def test_drop_synced_makes_a_page_absent_again(tmp_path):
    s = _store(tmp_path)
    s.put_synced(9, _page(9))
    s.drop_synced(9)
    assert not s.is_present(9) and s.read_page(9) is None


def _batch(pages: dict, gap: int = 3) -> tuple:
    """``put_synced_many``'s arguments: the pages with a few bytes between them (as in a body)."""
    buf, pgnos, offsets = bytearray(), [], []
    for p, data in pages.items():
        buf += bytes(gap)
        pgnos.append(p)
        offsets.append(len(buf))
        buf += data
    return bytes(buf), pgnos, offsets


def test_put_synced_many_stores_each_page_and_keeps_present_ones(tmp_path):
    s = _store(tmp_path, size=300 * PS)
    s.put_synced(3, _page(33))
    # a run longer than one pwritev (64 pages), a gap, page 3 already present, out of order
    pages = {p: _page(p % 200) for p in [*range(100, 250), 2, 3, 4, 7, 1]}
    s.put_synced_many(*_batch(pages))
    assert all(s.read_page(p) == (_page(33) if p == 3 else data) for p, data in pages.items())
    assert s.read_page(5) is None and s.read_page(99) is None and s.read_page(250) is None
    s.put_synced_many(*_batch({3: _page(44), 4: _page(45)}), overwrite=True)
    assert s.read_page(3) == _page(44) and s.read_page(4) == _page(45)
    # the CRCs recorded match the bytes: a fresh open (nothing verified yet) checks them
    pagestore.release_store(s)
    s = _store(tmp_path, size=300 * PS)
    assert not s.state(100) & lib.TDB_PG_VERIFIED
    assert all(s.read_page(p) == data for p, data in pages.items() if p not in (3, 4))
    assert s.counters()["crc_failures"] == 0


def test_put_synced_many_refuses_pages_past_the_remote_size_naming_the_first(tmp_path):
    s = _store(tmp_path, size=10 * PS)
    with pytest.raises(OperationalError, match="cannot store page 11 .*past the remote size"):
        s.put_synced_many(*_batch({9: _page(9), 10: _page(10), 11: _page(11), 12: _page(12)}))
    assert s.read_page(9) == _page(9) and s.read_page(10) == _page(10)  # the pages before it went in
    with pytest.raises(ValueError, match="past the"):
        s.put_synced_many(b"x" * (PS + 2), [1], [3])


def _page_with_crc_zero(page_size: int = PS) -> bytes:
    """A page whose CRC32C is 0: solve for its last 4 bytes (CRC is affine in the bits)."""
    base = bytearray(b"\x5a" * page_size)
    target = crc32c(bytes(base))
    deltas = []
    for bit in range(32):
        flipped = bytearray(base)
        flipped[page_size - 4 + bit // 8] ^= 1 << (bit % 8)
        deltas.append(crc32c(bytes(flipped)) ^ target)
    # Gaussian elimination over GF(2): find a set of bits whose deltas XOR to target
    rows = [(d, 1 << i) for i, d in enumerate(deltas)]
    basis: list = []
    for d, m in rows:
        for bd, bm in basis:
            if d ^ bd < d:
                d, m = d ^ bd, m ^ bm
        if d:
            basis.append((d, m))
            basis.sort(reverse=True)
    want, mask = target, 0
    for bd, bm in basis:
        if want ^ bd < want:
            want, mask = want ^ bd, mask ^ bm
    assert want == 0
    for bit in range(32):
        if mask >> bit & 1:
            base[page_size - 4 + bit // 8] ^= 1 << (bit % 8)
    assert crc32c(bytes(base)) == 0
    return bytes(base)


def test_a_page_whose_crc_is_zero_is_present_and_verifies(tmp_path):
    zero_crc = _page_with_crc_zero()
    s = _store(tmp_path)
    assert s.put_synced(4, zero_crc) is True
    assert s.is_present(4)  # stored as 1, not as "absent"
    entry = Path(str(tmp_path / "db") + "-tdbmap").read_bytes()[4096 + 8 * 3:4096 + 8 * 3 + 4]
    assert int.from_bytes(entry, sys.byteorder) == 1
    # a fresh process verifies it on first read (the tag 1 stands for a real CRC of 0)
    code = ("import sys; sys.path.insert(0, sys.argv[1])\nfrom turso_dbapi.storage import pagestore\n"
            "s = pagestore.open_store(sys.argv[2], page_size=1024, size=64*1024, identity=b'\\x01'*32)\n"
            "p = s.read_page(4); print(p is not None and s.counters()['crc_failures'] == 0)\n")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path / "db")],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def test_sidecar_is_shared_with_other_processes(tmp_path):
    s = _store(tmp_path)
    s.put_synced(3, _page(3))
    code = ("import sys; sys.path.insert(0, sys.argv[1])\nfrom turso_dbapi.storage import pagestore\n"
            "s = pagestore.open_store(sys.argv[2], page_size=1024, size=64*1024, identity=b'\\x01'*32)\n"
            "print(s.is_present(3), s.read_page(3) == bytes([3]) * 1024, s.is_present(4))\n"
            "s.put_synced(4, bytes([4]) * 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path / "db")],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr
    assert s.is_present(4) and s.read_page(4) == _page(4)  # the other process's page, seen here


def test_metadata_is_json_beside_the_replica_and_a_new_identity_starts_fresh(tmp_path):
    s = _store(tmp_path, name="a/db")
    s.put_synced(2, _page(2))
    meta = json.loads(Path(s.path + "-tdbmeta.json").read_text())
    assert meta["identity"] == (b"\x01" * 32).hex() and meta["page_size"] == PS
    assert not list(Path(s.path).parent.glob("*.tmp-*"))  # temp file renamed away
    # another process, another version at the same path: a fresh cache, never a mix
    code = ("import sys; sys.path.insert(0, sys.argv[1])\nfrom turso_dbapi.storage import pagestore\n"
            "s = pagestore.open_store(sys.argv[2], page_size=1024, size=64*1024, identity=b'\\x02'*32)\n"
            "print(s.is_present(2))\n")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), s.path], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    assert json.loads(Path(s.path + "-tdbmeta.json").read_text())["identity"] == (b"\x02" * 32).hex()


def test_same_path_another_identity_in_one_process_is_refused(tmp_path):
    _store(tmp_path)
    with pytest.raises(OperationalError, match="another version"):
        _store(tmp_path, ident=b"\x03" * 32)
    assert _store(tmp_path) is _store(tmp_path)  # same identity: the same store


def test_write_json_atomic_replaces_whole(tmp_path):
    target = str(tmp_path / "m.json")
    atomic.write_json_atomic(target, {"a": 1})
    atomic.write_json_atomic(target, {"b": 2})
    assert atomic.read_json(target) == {"b": 2}
    Path(target).write_text("{broken")
    assert atomic.read_json(target) is None


def test_addresses_past_the_sqlite_lock_page_at_1_gib(tmp_path):
    # SQLite never reads or writes the page holding byte 0x40000000 (the lock page),
    # so the store needs nothing special for it; but the pages around and after it live
    # past 1 GiB of a sparse file and far into the sidecar. A real >1 GiB database
    # would take minutes to build on the shared test machine; the addressing is what
    # can go wrong, and this checks it.
    page_size = 512
    lock_pgno = 0x40000000 // page_size + 1
    s = _store(tmp_path, size=(lock_pgno + 10) * page_size, page_size=page_size, name="big/db")
    for p in (lock_pgno - 1, lock_pgno + 1, lock_pgno + 10):
        assert s.put_synced(p, _page(p % 251, page_size))
    for p in (lock_pgno - 1, lock_pgno + 1, lock_pgno + 10):
        assert s.read_page(p) == _page(p % 251, page_size)
    assert s.read_page(lock_pgno) is None
    st = os.stat(s.path)
    assert st.st_size == (lock_pgno + 10) * page_size and st.st_blocks * 512 < 1 << 20  # sparse


# -- byte-addressed reads and writes (the VFS methods), with a real source behind ----------

SHORT_READ = 10 | (2 << 8)


@pytest.fixture
def backed(tmp_path, databases):
    """A store over the p1024 database with a FileSource miss handler attached."""
    from turso_dbapi.sources.file import FileSource

    src = databases["p1024"]
    source = FileSource(src)
    source.open()
    store = pagestore.open_store(str(tmp_path / "bk" / "db"), page_size=1024, size=source.size,
                                 identity=pagestore.identity_of("bk", source.version, 1024, source.size))
    handler = MissHandler(store, source, segment_size=1024, readahead_max=1024)
    store.attach(handler)
    return store, source, Path(src).read_bytes(), handler


def _pread(store, amt, off):
    buf = bytearray(amt)
    from turso_dbapi._native import ffi
    rc = lib.tdb_store_read(store._ptr, 0, ffi.from_buffer(buf), amt, off)
    return rc, bytes(buf)


def test_a_read_spanning_pages_at_an_odd_offset_fetches_the_run_once(backed):
    store, source, data, _ = backed
    rc, got = _pread(store, 2500, 5 * 1024 + 300)
    assert rc == 0 and got == data[5 * 1024 + 300:5 * 1024 + 2800]
    assert source.fetch_log == [[6, 7, 8]]  # one call for the run of absent pages


def test_only_the_part_past_the_logical_end_is_zero_filled_with_short_read(backed):
    store, _, data, _ = backed
    end = len(data)
    rc, got = _pread(store, 3000, end - 1000)
    assert rc == SHORT_READ
    assert got[:1000] == data[-1000:] and got[1000:] == bytes(2000)


def test_partial_page_write_reads_the_page_first_and_makes_it_local(backed):
    store, source, data, _ = backed
    rc = lib.tdb_store_write(store._ptr, 0, b"PATCH", 5, 9 * 1024 + 10)  # page 10, absent
    assert rc == 0 and [10] in source.fetch_log
    expected = bytearray(data[9 * 1024:10 * 1024])
    expected[10:15] = b"PATCH"
    assert store.read_page(10) == bytes(expected)
    assert store.state(10) & lib.TDB_PG_LOCAL and store.state(10) & lib.TDB_PG_SYNCED
    assert Path(store.path).read_bytes()[9 * 1024:10 * 1024] == data[9 * 1024:10 * 1024]  # synced untouched


def test_a_failed_fetch_is_ioerr_read_and_nothing_is_written(backed):
    store, source, _, _ = backed
    from turso_dbapi.errors import RemoteError

    source.fail_with = RemoteError("down")
    assert lib.tdb_store_write(store._ptr, 0, b"x", 1, 20 * 1024 + 1) == 10 | (1 << 8)
    assert not store.state(21) & lib.TDB_PG_LOCAL
    assert _pread(store, 1024, 30 * 1024)[0] == 10 | (1 << 8)
    source.fail_with = None
    assert _pread(store, 1024, 30 * 1024)[0] == 0


def test_writes_past_the_end_grow_and_truncate_shrinks_the_logical_size(backed):
    store, _, data, _ = backed
    end = len(data)
    assert lib.tdb_store_write(store._ptr, 0, b"\x07" * 1024, 1024, end + 2048) == 0
    assert store.logical_size == end + 3072
    rc, got = _pread(store, 1024, end + 1024)  # the hole between: zeros, no fetch
    assert rc == 0 and got == bytes(1024)
    assert lib.tdb_store_truncate(store._ptr, 4096) == 0
    assert store.logical_size == 4096
    assert _pread(store, 1024, 8192)[0] == SHORT_READ
    assert lib.tdb_store_truncate(store._ptr, 16384) == 0  # regrow: cut pages read as zeros
    rc, got = _pread(store, 1024, 8192)
    assert rc == 0 and got == bytes(1024)


def test_first_local_finds_local_pages_in_order_and_only_them(backed):
    store, _, data, _ = backed
    assert store.first_local() == 0  # synced pages only: no local changes
    page = b"\x05" * 1024
    for pgno in (12, 3):
        assert lib.tdb_store_write(store._ptr, 0, page, 1024, (pgno - 1) * 1024) == 0
    assert store.first_local() == 3
    assert store.first_local(4) == 12
    assert store.first_local(13) == 0
    assert store.first_local(1, 2) == 0  # bounded
    end = len(data)
    assert lib.tdb_store_write(store._ptr, 0, page, 1024, end) == 0  # growth past the remote
    assert store.first_local(13) == end // 1024 + 1
