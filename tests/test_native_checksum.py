"""CRC32C: published vectors, and the native core (both paths) against the pure-Python oracle."""

from __future__ import annotations

import os
import platform
import zlib
from array import array
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turso_dbapi import _reference as ref
from turso_dbapi.storage import checksum
from turso_dbapi._native import ffi, lib


# RFC 3720 (iSCSI) appendix B.4, plus the customary check value.
VECTORS = [
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"123456789", 0xE3069283),
    (b"", 0),
]


@pytest.fixture(params=["hw", "table"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a native test once on the hardware path (when the CPU has it) and once on tables."""
    if lib is None:
        pytest.fail("native core not built (pip install .): see test_build.py")
    if request.param == "hw" and not lib.tdb_crc32c_hw():
        pytest.skip("no CRC instructions on this CPU")
    lib.tdb_crc32c_force_table(request.param == "table")
    try:
        assert bool(lib.tdb_crc32c_hw()) == (request.param == "hw")
        yield request.param
    finally:
        lib.tdb_crc32c_force_table(0)


def native_crc(data: bytes, crc: int = 0) -> int:
    return lib.tdb_crc32c(crc, data, len(data))


def native_pages(buf: bytes, page_size: int, n: int) -> list:
    out = ffi.new("uint32_t[]", n + 1)
    out[n] = 0xDEADBEEF  # sentinel: rule (2) writes exactly n entries
    lib.tdb_crc32c_pages(buf, page_size, n, out)
    assert out[n] == 0xDEADBEEF
    return list(out)[:n]


@pytest.mark.parametrize("data,expected", VECTORS)
def test_reference_vectors(data: bytes, expected: int) -> None:
    assert ref.crc32c(0, data) == expected


@pytest.mark.parametrize("data,expected", VECTORS)
def test_native_vectors(path: str, data: bytes, expected: int) -> None:
    assert native_crc(data) == expected
    assert checksum.crc32c(data) == expected


@pytest.mark.parametrize("data,expected", VECTORS)
def test_api_vectors(data: bytes, expected: int) -> None:
    assert checksum.crc32c(data) == expected
    assert checksum.crc32c(bytearray(data)) == expected
    assert checksum.crc32c(memoryview(b"x" + data)[1:]) == expected


def test_hardware_detected_where_the_cpu_has_it() -> None:
    if lib is None:
        pytest.fail("native core not built (pip install .): see test_build.py")
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64") and " sse4_2" in flags:
        assert checksum.hardware()
    elif machine in ("aarch64", "arm64") and " crc32" in flags:
        assert checksum.hardware()


# Lengths around the 3-way block sizes (256, 1360, 8192 per chain) and the 8-byte step.
EDGE_LENGTHS = [1, 7, 8, 9, 767, 768, 769, 4079, 4080, 4096, 4097, 24575, 24576, 24577, 30001]


@pytest.mark.parametrize("n", EDGE_LENGTHS)
def test_native_edge_lengths(path: str, n: int) -> None:
    data = os.urandom(n + 5)[5:]
    assert native_crc(data) == ref.crc32c(0, data)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=5000), skew=st.integers(0, 15), cut=st.integers(0, 5000))
def test_native_matches_oracle_any_alignment_and_chaining(data: bytes, skew: int, cut: int) -> None:
    cut = min(cut, len(data))
    buf = bytes(skew) + data
    view = ffi.from_buffer(buf) + skew  # misaligned start
    expected = ref.crc32c(0, data)
    for table in (0, 1):
        lib.tdb_crc32c_force_table(table)
        try:
            assert lib.tdb_crc32c(0, view, len(data)) == expected
            first = lib.tdb_crc32c(0, data[:cut], cut)
            assert lib.tdb_crc32c(first, data[cut:], len(data) - cut) == expected  # rule (1)
        finally:
            lib.tdb_crc32c_force_table(0)
    assert checksum.crc32c(data[cut:], checksum.crc32c(data[:cut])) == expected


@settings(max_examples=60, deadline=None)
@given(page_size=st.integers(0, 700), n=st.integers(0, 8), seed=st.binary(min_size=1, max_size=64))
def test_native_pages_match_oracle(page_size: int, n: int, seed: bytes) -> None:
    buf = (seed * (page_size * n // len(seed) + 1))[: page_size * n]
    buf = bytes(b ^ (i % 251) for i, b in enumerate(buf))  # pages differ from each other
    expected = ref.crc32c_pages(buf, page_size, n)
    for table in (0, 1):
        lib.tdb_crc32c_force_table(table)
        try:
            assert native_pages(buf, page_size, n) == expected
        finally:
            lib.tdb_crc32c_force_table(0)


def test_pages_api_typical_pages(path: str) -> None:
    buf = os.urandom(4096 * 7)
    got = checksum.crc32c_pages(buf, 4096)
    assert isinstance(got, array) and len(got) == 7
    assert list(got) == [ref.crc32c(0, buf[i * 4096 : (i + 1) * 4096]) for i in range(7)]
    assert list(checksum.crc32c_pages(b"", 4096)) == []


def test_api_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="whole number of 4096-byte pages"):
        checksum.crc32c_pages(bytes(5000), 4096)
    with pytest.raises(ValueError, match="page size must be positive"):
        checksum.crc32c_pages(b"", 0)
    with pytest.raises(ValueError, match="unsigned 32-bit"):
        checksum.crc32c(b"x", crc=-1)
    with pytest.raises(ValueError, match="contiguous"):
        checksum.crc32c(memoryview(bytes(10))[::2])


def test_reference_is_not_zlib_crc32() -> None:
    # Guards against an oracle that silently used the wrong polynomial.
    assert ref.crc32c(0, b"123456789") != zlib.crc32(b"123456789")
