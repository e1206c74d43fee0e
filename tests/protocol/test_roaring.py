"""Roaring portable format: spec §2.9 vectors, pyroaring as oracle both ways, hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from turso_dbapi.protocol import roaring

H = bytes.fromhex

VECTORS = [
    (set(), "3a 30 00 00 00 00 00 00"),
    ({0}, "3a 30 00 00 01 00 00 00 00 00 00 00 10 00 00 00 00 00"),
    (set(range(0, 32)), "3b 30 00 00 01 00 00 1f 00 01 00 00 00 1f 00"),
    (set(range(32, 64)), "3b 30 00 00 01 00 00 1f 00 01 00 20 00 1f 00"),
    ({5, 6, 7, 100}, "3a 30 00 00 01 00 00 00 00 00 03 00 10 00 00 00 05 00 06 00 07 00 64 00"),
    (
        set(range(65530, 65546)),
        "3b 30 01 00 03 00 00 05 00 01 00 09 00 01 00 fa ff 05 00 01 00 00 00 09 00",
    ),
]


@pytest.mark.parametrize("members,hexstr", VECTORS)
def test_spec_vectors(members, hexstr):
    assert roaring.serialize(members) == H(hexstr)
    assert set(roaring.deserialize(H(hexstr))) == members
    assert set(BitMap.deserialize(H(hexstr))) == members  # the vectors are real roaring


def test_empty_selector_is_not_all_pages():
    assert roaring.deserialize_ranges(H("3a 30 00 00 00 00 00 00")) == []


def test_range_of_three_is_a_run_like_the_rust_client():
    assert roaring.serialize_range(0, 3) == BitMap(range(0, 3)).serialize()


# A mix that produces arrays, bitmaps (> 4096 per chunk), runs and several containers.
members = st.one_of(
    st.sets(st.integers(0, 2**32 - 1), max_size=50),
    st.sets(st.integers(0, 300_000), max_size=3000),
    st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 70_000)), max_size=6).map(
        lambda rs: {v for a, n in rs for v in range(a, a + n)}
    ),
    st.builds(
        lambda step, n: set(range(0, n * step, step)), st.integers(2, 3), st.integers(4000, 9000)
    ),
)


@settings(max_examples=120, deadline=None)
@given(members)
def test_ours_decoded_by_pyroaring(vals):
    data = roaring.serialize(vals)
    assert set(BitMap.deserialize(data)) == vals


@settings(max_examples=120, deadline=None)
@given(members, st.booleans())
def test_pyroaring_decoded_by_ours(vals, optimize):
    bm = BitMap(vals)
    if optimize:
        bm.run_optimize()  # cookie 12347 (with offsets once there are >= 4 containers)
    got = roaring.deserialize_ranges(bm.serialize())
    assert [v for a, b in got for v in range(a, b)] == sorted(vals)
    assert all(a < b for a, b in got) and all(x[1] < y[0] for x, y in zip(got, got[1:]))


def test_both_cookies_with_and_without_offsets():
    many_runs = set()
    for k in range(5):  # 5 containers with runs -> 12347 with offsets
        many_runs |= set(range(k << 16, (k << 16) + 100))
    for vals in (many_runs, set(range(0, 10)) | {1 << 16}, {1, 3, 5}, set(range(0, 70000, 2))):
        ours = roaring.serialize(vals)
        assert set(roaring.deserialize(ours)) == vals
        bm = BitMap(vals)
        bm.run_optimize()
        assert set(roaring.deserialize(bm.serialize())) == vals
    assert struct.unpack_from("<I", roaring.serialize(many_runs))[0] & 0xFFFF == 12347
    assert struct.unpack_from("<I", roaring.serialize({1, 3, 5}))[0] == 12346


def test_huge_run_bitmap_is_cheap_and_capped():
    bm = BitMap()
    bm.add_range(0, 2**32)
    bm.run_optimize()
    ranges = roaring.deserialize_ranges(bm.serialize())
    assert ranges == [(0, 2**32)]
    assert roaring.clip(ranges, 10) == [(0, 10)]
    with pytest.raises(ValueError, match="more than"):
        roaring.deserialize(bm.serialize())


HOSTILE = [
    b"",
    H("3a 30"),
    H("00 00 00 00"),  # bad cookie
    H("3a 30 00 00 01 00 00 00"),  # truncated descriptors
    H("3a 30 00 00 01 00 00 00 00 00 00 00 10 00 00 00"),  # truncated array data
    H("3a 30 00 00 01 00 00 00 00 00 00 00 11 00 00 00 00 00"),  # wrong offset
    H("3a 30 00 00 01 00 00 00 00 00 01 00 10 00 00 00 05 00 05 00"),  # not increasing
    H(
        "3a 30 00 00 02 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 0000 00 00 00 00 00"
    ),  # duplicate keys
    H("3a 30 00 00 01 00 00 00 00 00 00 00 10 00 00 00 00 00 ff"),  # trailing bytes
    H("3a 30 00 00 ff ff ff ff"),  # absurd container count
    H("3b 30 00 00 01 00 00 1f 00 01 00 00 00 2f 00"),  # run cardinality != declared
    H("3b 30 00 00 01 00 00 01 00 02 00 00 00 01 00 01 00 00 00"),  # overlapping runs
    H("3b 30 00 00 01 00 00 ff ff 01 00 ff ff 01 00"),  # run past 65535
    H("3b 30 00 00 01"),  # truncated 12347
]


@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_input_raises_value_error(data):
    with pytest.raises(ValueError):
        roaring.deserialize_ranges(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_never_crashes_differently(data):
    try:
        roaring.deserialize_ranges(data)
    except ValueError:
        pass


def test_serialize_rejects_out_of_range():
    with pytest.raises(ValueError):
        roaring.serialize([2**32])
    with pytest.raises(ValueError):
        roaring.serialize([-1])
