"""CRC32C (Castagnoli) of buffers and pages: the native core when built, else the reference.

``crc32c(b"123456789") == 0xE3069283``. ``crc32c_pages`` checksums every page of a buffer in
one native call (three pages in flight at once on the hardware path).
"""

from __future__ import annotations

from array import array
from typing import Union

from .. import _reference
from .._native import ffi, lib

Buffer = Union[bytes, bytearray, memoryview]

__all__ = ["crc32c", "crc32c_pages", "hardware", "native"]


def native() -> bool:
    """True when the compiled core is in use (False: pure-Python reference, slow)."""
    return lib is not None


def hardware() -> bool:
    """True when CRC32C runs on CPU instructions (SSE4.2 / ARMv8 CRC)."""
    return lib is not None and bool(lib.tdb_crc32c_hw())


def _bytes_view(data: Buffer) -> memoryview:
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError("buffer must be C-contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def crc32c(data: Buffer, crc: int = 0) -> int:
    """CRC32C of ``data``, continuing ``crc`` (a previous result) to checksum in pieces."""
    if not 0 <= crc <= 0xFFFFFFFF:
        raise ValueError(f"crc must be an unsigned 32-bit value, got {crc}")
    if lib is not None and type(data) is bytes:  # fast path: cffi passes bytes as is
        return lib.tdb_crc32c(crc, data, len(data))
    view = _bytes_view(data)
    if lib is None:
        return _reference.crc32c(crc, view)
    return lib.tdb_crc32c(crc, ffi.from_buffer("uint8_t[]", view), len(view))


def crc32c_pages(buf: Buffer, page_size: int) -> array:
    """CRC32C of each ``page_size`` page of ``buf`` (whose length must be a multiple)."""
    view = _bytes_view(buf)
    if page_size <= 0:
        raise ValueError(f"page size must be positive, got {page_size}")
    if len(view) % page_size:
        raise ValueError(
            f"buffer of {len(view)} bytes is not a whole number of {page_size}-byte pages"
        )
    n = len(view) // page_size
    if lib is None:
        return array("I", _reference.crc32c_pages(view, page_size, n))
    out = array("I", bytes(4 * n))
    if n:
        lib.tdb_crc32c_pages(
            ffi.from_buffer("uint8_t[]", view), page_size, n, ffi.from_buffer("uint32_t[]", out)
        )
    return out
