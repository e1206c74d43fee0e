"""`/pull-updates` wire format: spec §2.9 vectors, Google protobuf as oracle, framing parser."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support._proto_oracle import PageDataPB, PullUpdatesRequestPB, PullUpdatesResponseHeaderPB

from turso_dbapi.protocol import protobuf as pb
from turso_dbapi.protocol import roaring
from turso_dbapi.errors import ProtocolError
from turso_dbapi.protocol.sync_wire import (
    PageData,
    PullUpdatesRequest,
    PullUpdatesResponseHeader,
    PullUpdatesStreamParser,
    ZstdEncoding,
    encode_page_frame,
    encode_response,
    frame,
    parse_response,
)

H = bytes.fromhex


# ---------------------------------------------------------------- spec §2.9 vectors


def test_request_vectors():
    assert PullUpdatesRequest().encode() == b""  # full bootstrap = empty body
    assert PullUpdatesRequest.decode(b"") == PullUpdatesRequest()
    # The spec's prefix vector reads `2a 0e ...` with 14 selector bytes, but its own range
    # 0..32 bitmap vector (and pyroaring) is 15 bytes: the corrected request is below.
    prefix = PullUpdatesRequest(server_pages_selector=roaring.serialize_range(0, 32))
    assert prefix.encode() == H("2a 0f 3b 30 00 00 01 00 00 1f 00 01 00 00 00 1f 00")
    assert PullUpdatesRequest(client_revision="17").encode() == H("1a 02 31 37")
    lazy = PullUpdatesRequest(
        server_revision="17", server_pages_selector=roaring.serialize([5, 6, 7, 100])
    )
    vec = H(
        "12 02 31 37 2a 18 3a 30 00 00 01 00 00 00 00 00 03 00 10 00 00 00 05 00 06 00 07 00 64 00"
    )
    assert lazy.encode() == vec
    assert PullUpdatesRequest.decode(vec) == lazy
    assert PullUpdatesRequest(stream_kind=1).encode() == H("40 01")
    assert PullUpdatesRequest.decode(H("40 01")).stream_kind == 1


def test_response_vectors():
    hdr = PullUpdatesResponseHeader(server_revision="17", db_size=3, protocol=1)
    assert hdr.encode() == H("0a 02 31 37 10 03 1a 00 40 01")
    assert frame(hdr.encode()) == H("0a 0a 02 31 37 10 03 1a 00 40 01")
    assert PullUpdatesResponseHeader.decode(hdr.encode()) == hdr
    page = os.urandom(4096)
    framed = encode_page_frame(5, page)
    assert framed == H("85 20 08 05 12 80 20") + page and len(framed) == 4103
    assert len(encode_page_frame(0, page)) == 4101  # page_id 0 omitted
    assert encode_page_frame(5, page) == frame(PageData(5, page).encode())


def test_raw_encoding_absent_is_decoded_as_absent():
    hdr = PullUpdatesResponseHeader.decode(H("0a 01 30"))
    assert hdr.server_revision == "0" and not hdr.raw_encoding and hdr.zstd_encoding is None
    with pytest.raises(ValueError, match="both raw and zstd"):
        PullUpdatesResponseHeader.decode(H("1a 00 22 00"))


# ---------------------------------------------------------------- oracle round trips

u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
text = st.text(max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    st.builds(
        PullUpdatesRequest,
        st.integers(0, 1),
        text,
        text,
        u32,
        st.binary(max_size=40),
        st.binary(max_size=10),
        text,
        st.integers(0, 1),
    )
)
def test_request_matches_protobuf(req):
    oracle = PullUpdatesRequestPB()
    oracle.ParseFromString(req.encode())
    assert (oracle.encoding, oracle.server_revision, oracle.client_revision) == (
        req.encoding,
        req.server_revision,
        req.client_revision,
    )
    assert oracle.long_poll_timeout_ms == req.long_poll_timeout_ms
    assert oracle.server_pages_selector == req.server_pages_selector
    assert oracle.client_pages == req.client_pages
    assert oracle.server_query_selector == req.server_query_selector
    assert oracle.stream_kind == req.stream_kind
    assert PullUpdatesRequest.decode(oracle.SerializeToString()) == req
    assert oracle.SerializeToString() == req.encode()  # canonical field order both sides


@settings(max_examples=200, deadline=None)
@given(text, u64, st.booleans(), st.integers(0, 1), st.integers(0, 1), st.integers(0, 2))
def test_header_matches_protobuf(rev, size, raw, stream_kind, apply_mode, protocol):
    ours = PullUpdatesResponseHeader(rev, size, raw, None, stream_kind, apply_mode, None, protocol)
    oracle = PullUpdatesResponseHeaderPB(
        server_revision=rev,
        db_size=size,
        stream_kind=stream_kind,
        apply_mode=apply_mode,
        protocol=protocol,
    )
    if raw:
        oracle.raw_encoding.SetInParent()
    assert ours.encode() == oracle.SerializeToString()
    assert PullUpdatesResponseHeader.decode(oracle.SerializeToString()) == ours


def test_zstd_header_roundtrip_via_oracle():
    oracle = PullUpdatesResponseHeaderPB(server_revision="9", db_size=1)
    oracle.zstd_encoding.level = 3
    oracle.zstd_encoding.pages_dict.extend([1, 300])
    hdr = PullUpdatesResponseHeader.decode(oracle.SerializeToString())
    assert hdr.zstd_encoding == ZstdEncoding(3, [1, 300]) and not hdr.raw_encoding
    back = PullUpdatesResponseHeaderPB()
    back.ParseFromString(hdr.encode())
    assert back == oracle


@settings(max_examples=100, deadline=None)
@given(u64, st.binary(max_size=64))
def test_page_data_matches_protobuf(page_id, page):
    oracle = PageDataPB(page_id=page_id, encoded_page=page)
    assert PageData(page_id, page).encode() == oracle.SerializeToString()
    assert PageData.decode(oracle.SerializeToString()) == PageData(page_id, page)


def test_unknown_fields_are_skipped():
    # field 1 with the wrong wire type is an error, not silently misread
    with pytest.raises(ValueError):
        PullUpdatesRequest.decode(H("0a 01 35"))
    ok = H("12 01 35") + H("49") + bytes(8) + H("55") + bytes(4) + H("78 07") + H("62 02 aa bb")
    assert PullUpdatesRequest.decode(ok) == PullUpdatesRequest(server_revision="5")


# ---------------------------------------------------------------- varints and framing


@given(u64)
def test_varint_roundtrip(v):
    enc = pb.encode_varint(v)
    assert pb.decode_varint(enc) == (v, len(enc))


def test_varint_errors():
    with pytest.raises(ValueError, match="unexpected end of protobuf message"):
        pb.decode_varint(H("80 80"))
    with pytest.raises(ValueError, match="longer than 10"):
        pb.decode_varint(H("80") * 10 + H("01"))
    with pytest.raises(ValueError):
        pb.encode_varint(-1)


def _body(n_pages=3, rev="42", size=7):
    pages = [PageData(i * 3, bytes([i]) * 4096) for i in range(n_pages)]
    return encode_response(PullUpdatesResponseHeader(rev, size, protocol=1), pages), pages


def test_parser_incremental_any_split():
    body, pages = _body()
    for step in (1, 2, 3, 7, 4096, 5000, len(body)):
        parser = PullUpdatesStreamParser()
        got = []
        for i in range(0, len(body), step):
            got += parser.feed(body[i : i + step])
        hdr = parser.finish()
        assert got[0] is hdr and hdr.server_revision == "42" and hdr.db_size == 7
        assert got[1:] == pages


def test_parser_header_only_and_errors():
    hdr, pages = parse_response(frame(PullUpdatesResponseHeader("0", 0).encode()))
    assert hdr.server_revision == "0" and pages == []
    with pytest.raises(ProtocolError, match="no header returned"):
        parse_response(b"")
    body, _ = _body()
    for cut in (1, 5, len(body) - 1, len(body) - 4000):
        with pytest.raises(ProtocolError, match="unexpected end of protobuf message"):
            parse_response(body[:cut])
    with pytest.raises(ValueError, match="longer than 9"):
        PullUpdatesStreamParser().feed(H("ff") * 9 + H("01"))
    bad = frame(PullUpdatesResponseHeader("1", 1).encode()) + encode_page_frame(0, bytes(100))
    with pytest.raises(ValueError, match="page has unexpected size"):
        parse_response(bad)
    zstd = PullUpdatesResponseHeader("1", 1, raw_encoding=False, zstd_encoding=ZstdEncoding())
    with pytest.raises(ValueError, match="zstd encoding is not supported"):
        parse_response(frame(zstd.encode()) + encode_page_frame(0, bytes(4096)))
    noenc = PullUpdatesResponseHeader("1", 1, raw_encoding=False)
    assert parse_response(frame(noenc.encode()))[1] == []  # tolerated without pages
    with pytest.raises(ValueError, match="no page encoding"):
        parse_response(frame(noenc.encode()) + encode_page_frame(0, bytes(4096)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error(data):
    for decode in (PullUpdatesRequest.decode, PullUpdatesResponseHeader.decode, PageData.decode):
        try:
            decode(data)
        except pb.DecodeError:
            pass
    parser = PullUpdatesStreamParser()
    try:
        parser.feed(data)
        parser.finish()
    except pb.DecodeError:
        pass
