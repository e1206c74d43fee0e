"""The C fast path of /pull-updates bodies (_native/frames.h): it takes canonical page
frames only, stops at anything else, and the parser gives the same pages and the same
errors as the general protobuf decoder, however the body is cut into chunks."""

from __future__ import annotations

import random

import pytest

from turso_dbapi._native import ffi, lib
from turso_dbapi.errors import ProtocolError
from turso_dbapi.protocol import protobuf as pb
from turso_dbapi.protocol.sync_wire import (
    PageData,
    PageRun,
    PullUpdatesResponseHeader,
    PullUpdatesStreamParser,
    encode_page_frame,
    frame,
)

PS = 4096


def scan(data: bytes, max_frames: int = 100):
    if lib is None:
        pytest.fail("native core not built (pip install .): see test_build.py")
    ids = ffi.new("uint32_t[]", max_frames)
    offs = ffi.new("uint32_t[]", max_frames)
    used = ffi.new("size_t *")
    n = lib.tdb_scan_page_frames(data, len(data), PS, ids, offs, max_frames, used)
    return list(ids[0:n]), list(offs[0:n]), int(used[0])


def page(i: int) -> bytes:
    return bytes([i % 251]) * 7 + random.Random(i).randbytes(PS - 7)


def reversed_fields(page_id: int, data: bytes) -> bytes:
    """Valid protobuf the servers do not write: the page before its id."""
    return frame(pb.field_bytes(2, data) + pb.key(1, pb.VARINT) + pb.encode_varint(page_id))


def with_unknown_field(page_id: int, data: bytes) -> bytes:
    return frame(pb.field_varint(1, page_id) + pb.field_bytes(2, data) + pb.field_varint(9, 5))


def explicit_zero_id(page_id: int, data: bytes) -> bytes:
    assert page_id == 0
    return frame(b"\x08\x00" + pb.field_bytes(2, data))


def test_canonical_frames_are_found_with_the_offsets_of_their_pages():
    pages = {0: page(0), 1: page(1), 200: page(200), 70000: page(7), 2**31: page(9)}
    body = b"".join(encode_page_frame(i, p) for i, p in pages.items()) + explicit_zero_id(0, page(3))
    ids, offs, used = scan(body)
    assert ids == [*pages, 0] and used == len(body)
    assert [body[o:o + PS] for o in offs] == [*pages.values(), page(3)]
    ids, _, used = scan(body, max_frames=2)  # at most max_frames
    assert ids == [0, 1] and used == len(encode_page_frame(0, page(0))) + len(encode_page_frame(1, page(1)))


@pytest.mark.parametrize("odd", [
    reversed_fields(5, page(5)),
    with_unknown_field(5, page(5)),
    frame(pb.field_varint(1, 5) + pb.field_bytes(2, page(5)[:100])),  # a page of another size
    frame(pb.field_varint(1, 0xFFFFFFFE) + pb.field_bytes(2, page(5))),  # past SQLite's pages
    b"\x81\x80\x00" + b"\x08\x05" + b"\x12\x80\x20" + page(5)[:1],  # a length prefix not minimal
    frame(pb.field_varint(1, 5) + b"\x12\x80\xa0\x00" + page(5)),  # a page length not minimal
    pb.encode_varint(PS + 33) + bytes(PS + 33),  # longer than any page frame
])
def test_the_scan_stops_at_a_frame_it_does_not_take(odd):
    first = encode_page_frame(3, page(3))
    ids, offs, used = scan(first + odd + encode_page_frame(4, page(4)))
    assert ids == [3] and used == len(first)


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 100, PS + 4])
def test_the_scan_stops_before_an_incomplete_frame(cut):
    first = encode_page_frame(3, page(3))
    ids, offs, used = scan(first + encode_page_frame(5, page(5))[:cut])
    assert ids == [3] and used == len(first)


def body_and_pages(n: int, seed: int):
    """A body mixing canonical frames with valid odd ones, and the pages it holds."""
    rng = random.Random(seed)
    want = []
    parts = [frame(PullUpdatesResponseHeader("7", 10_000, protocol=1).encode())]
    for i in range(n):
        pid = rng.choice([0, 1, 2, i, 9_999])
        data = page(i)
        kind = rng.random()
        if kind < 0.1:
            parts.append(reversed_fields(pid, data))
        elif kind < 0.15:
            parts.append(with_unknown_field(pid, data))
        else:
            parts.append(encode_page_frame(pid, data))
        want.append(PageData(pid, data))
    return b"".join(parts), want


@pytest.mark.parametrize("seed", range(6))
def test_runs_and_general_decoding_give_the_same_pages_whatever_the_chunks(seed):
    body, want = body_and_pages(120, seed)
    rng = random.Random(seed)
    for mode in ("feed", "feed_runs"):
        parser = PullUpdatesStreamParser()
        got, runs, pos = [], 0, 0
        while pos < len(body):
            step = rng.choice([1, 5, 4099, 4110, 65536, 200_000])
            chunk = body[pos:pos + step]
            pos += step
            for m in getattr(parser, mode)(chunk):
                if isinstance(m, PageRun):
                    runs += 1
                    got += [PageData(pid, m.page(i)) for i, pid in enumerate(m.page_ids)]
                elif isinstance(m, PageData):
                    got.append(m)
        assert parser.finish().server_revision == "7"
        assert got == want and parser.pages_seen == len(want)
        if mode == "feed_runs":
            assert 0 < runs < len(want)  # pages came in runs, not one by one


def test_errors_after_canonical_frames_are_the_general_decoders():
    head = frame(PullUpdatesResponseHeader("1", 10).encode()) + encode_page_frame(1, page(1))
    parser = PullUpdatesStreamParser()
    with pytest.raises(ProtocolError, match="page has unexpected size: 100"):
        parser.feed_runs(head + encode_page_frame(2, bytes(100)))
    with pytest.raises(ProtocolError, match=f"page message of {PS + 40} bytes"):
        PullUpdatesStreamParser().feed_runs(head + pb.encode_varint(PS + 40) + bytes(10))
    with pytest.raises(ProtocolError, match="past the largest SQLite page"):
        PullUpdatesStreamParser().feed_runs(head + encode_page_frame(0xFFFFFFFE, page(2)))
