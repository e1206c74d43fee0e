"""Minimal proto3 wire-format helpers: varints and length-delimited fields.

Hand-coded on purpose: the sync protocol uses a handful of flat messages, so a runtime
dependency on ``protobuf`` is not worth it. Only the wire types proto3 scalars, strings,
bytes and sub-messages need are produced; unknown fields of every wire type are skipped
when decoding, as protobuf requires.
"""

from __future__ import annotations

from typing import Iterator, Tuple, Union

from ..errors import ProtocolError

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5

_U64_MAX = (1 << 64) - 1


class DecodeError(ProtocolError, ValueError):
    """Bytes that are not a valid protobuf message (also a ``ValueError``)."""


TRUNCATED = "unexpected end of protobuf message"


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128; negative numbers are not needed by these messages and refused."""
    if value < 0 or value > _U64_MAX:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes, pos: int = 0, max_bytes: int = 10) -> Tuple[int, int]:
    """Return ``(value, next_pos)``; raise ``DecodeError`` if truncated or too long."""
    result = 0
    shift = 0
    end = len(buf)
    for i in range(max_bytes):
        if pos + i >= end:
            raise DecodeError(TRUNCATED)
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result > _U64_MAX:
                raise DecodeError("varint overflows 64 bits")
            return result, pos + i + 1
        shift += 7
    raise DecodeError(f"varint longer than {max_bytes} bytes")


def key(field: int, wire_type: int) -> bytes:
    return encode_varint((field << 3) | wire_type)


def field_varint(field: int, value: int) -> bytes:
    """A varint field; proto3 omits the default 0, so this returns b"" for it."""
    if not value:
        return b""
    return key(field, VARINT) + encode_varint(int(value))


def field_bytes(field: int, value: bytes, *, always: bool = False) -> bytes:
    """A length-delimited field; empty values are omitted unless ``always`` (sub-messages)."""
    if not value and not always:
        return b""
    return key(field, LEN) + encode_varint(len(value)) + bytes(value)


def field_string(field: int, value: str) -> bytes:
    return field_bytes(field, value.encode("utf-8"))


FieldValue = Union[int, bytes]


def iter_fields(buf: bytes) -> Iterator[Tuple[int, int, FieldValue]]:
    """Yield ``(field_number, wire_type, value)``; value is int (varint) or bytes."""
    pos = 0
    end = len(buf)
    while pos < end:
        k, pos = decode_varint(buf, pos)
        field, wire_type = k >> 3, k & 7
        if field == 0:
            raise DecodeError("invalid protobuf field number 0")
        if wire_type == VARINT:
            value, pos = decode_varint(buf, pos)
            yield field, wire_type, value
        elif wire_type == LEN:
            length, pos = decode_varint(buf, pos)
            if pos + length > end:
                raise DecodeError(TRUNCATED)
            yield field, wire_type, bytes(buf[pos : pos + length])
            pos += length
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
            if pos + size > end:
                raise DecodeError(TRUNCATED)
            yield field, wire_type, bytes(buf[pos : pos + size])
            pos += size
        else:
            # Groups (3/4) are proto2-only and wire types 6/7 do not exist.
            raise DecodeError(f"unsupported protobuf wire type {wire_type} (field {field})")


def expect(wire_type: int, want: int, name: str) -> None:
    if wire_type != want:
        raise DecodeError(f"field {name} has wire type {wire_type}, expected {want}")


def decode_str(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"field {name} is not valid UTF-8")
