"""A remote ``-wal`` as SQLite's recovery sees it: committed frames, page -> frame index.

``WalIndex`` holds the bytes of one WAL generation (its 32-byte header and every frame up
to the last valid commit frame), the running checksum after that commit, and a dense
``array('I')`` mapping page number -> 1-based frame number (0: the page is not in the WAL).
Validation and indexing are ONE call into C per batch of bytes (``tdb_wal_follow``, wal.h
rule (8)); ``extend`` continues the chain with bytes appended later (a pull reads only
those), so a growing WAL is never parsed twice.

Rules:
  (1) A header SQLite would not use (truncated, bad magic, page size, checksum, version)
      means "no WAL": the database file alone is the state (``from_bytes`` returns None).
  (2) Frames are trusted exactly as SQLite's recovery trusts them: salts equal to the
      header's, page number nonzero, cumulative checksum; everything after the last valid
      commit frame (a torn frame, a transaction still being written, an older generation's
      leftovers) is ignored.
  (3) ``newer_generation_at(buf, n)`` tells whether the first untrusted frame carries the
      salt-1 of the NEXT generation (SQLite increments salt-1 on every WAL restart): the
      WAL was restarted while we read it, so the frames we got may be a prefix of an old
      generation whose later frames are already in the database file. Callers re-read.
"""

from __future__ import annotations

import struct
from array import array
from typing import Any, List, Optional, Tuple, Union

from .. import _reference as ref
from .._native import ffi, lib

Buffer = Union[bytes, bytearray, memoryview]


class WalIndex:
    """One WAL generation's committed frames (see the module rules)."""

    def __init__(self, header: ref.WalHeader, raw_header: bytes):
        self.header = header
        self.raw_header = bytes(raw_header)
        self.page_size = header.page_size
        self.frame_size = ref.FRAME_HDR + header.page_size
        self.frames = 0  # committed frames (SQLite's mxFrame)
        self.db_size = 0  # pages after the last commit; 0 when no commit yet
        self.cksum = (header.cksum1, header.cksum2)  # running checksum after the last commit
        self.data: Buffer = bytearray()  # the committed frames, end to end (offset 32 onward)
        self.index = array("I", bytes(4 * 64))
        self.last_stop = 0  # valid frames in the last buffer given to extend()
        if lib is None:  # pragma: no cover - the pure-Python path is the oracle in tests
            raise ImportError("the native core is needed to follow a WAL")

    @property
    def salts(self) -> Tuple[int, int]:
        return self.header.salt1, self.header.salt2

    @property
    def end_offset(self) -> int:
        """Byte offset in the WAL file just past the last committed frame."""
        return ref.WAL_HDR + self.frames * self.frame_size

    def same_generation(self, raw_header: bytes) -> bool:
        return bytes(raw_header[: ref.WAL_HDR]) == self.raw_header

    @classmethod
    def from_bytes(cls, data: Buffer) -> Optional[WalIndex]:
        """The committed frames of a whole WAL file, or None when SQLite would ignore it (1)."""
        view = memoryview(data)
        hdr = parse_header(view)
        if hdr is None:
            return None
        wal = cls(hdr, view[: ref.WAL_HDR].tobytes())
        wal.extend(view[ref.WAL_HDR:], pages=False)
        return wal

    def extend(self, buf: Buffer, pages: bool = True) -> List[int]:
        """Trust the committed frames at the start of ``buf`` (bytes from ``end_offset``
        on), rules (2); returns the page numbers they wrote (in frame order, repeats
        included; ``pages=False``: an empty list). Untrusted bytes after them are left out."""
        view = memoryview(buf)
        res, n_valid = self._follow(view)
        n = res.n_frames
        self.last_stop = n_valid  # frames of buf that passed the checks (rule (3) looks there)
        if not n:
            return []
        size = n * self.frame_size
        committed = view[:size]
        fs = self.frame_size
        pgnos = [struct.unpack_from(">I", committed, k * fs)[0] for k in range(n)] if pages else []
        if not self.frames and not len(self.data):
            self.data = committed  # the first frames: no copy (the caller's bytes are kept)
        else:
            if not isinstance(self.data, bytearray):
                self.data = bytearray(self.data)
            self.data += committed
        self.frames += n
        self.db_size = res.db_size
        self.cksum = (res.cksum1, res.cksum2)
        return pgnos

    def _follow(self, view: memoryview) -> Tuple[Any, int]:
        hdr = ffi.new("tdb_wal_header *", self.header._asdict())
        res = ffi.new("tdb_wal_result *")
        buf = ffi.from_buffer("uint8_t[]", view) if len(view) else ffi.NULL
        s = ffi.new("uint32_t[2]", list(self.cksum))
        idx = ffi.from_buffer("uint32_t[]", self.index)
        rc = lib.tdb_wal_follow(buf, len(view), hdr, s, self.frames + 1, idx, len(self.index), res)
        ffi.release(idx)  # the array may be resized below
        if rc != ref.WAL_OK:  # arguments come from a checked header: a bug here
            raise RuntimeError(f"tdb_wal_follow failed with code {rc}")
        if res.db_size >= len(self.index):
            # The database grew past the index: grow it, then index again (no re-validation).
            self.index.extend(bytes(4 * (res.db_size + 1 + res.db_size // 4 - len(self.index))))
            idx = ffi.from_buffer("uint32_t[]", self.index)
            lib.tdb_wal_index_frames(buf, len(view), self.page_size, res.n_frames, self.frames + 1, idx,
                                     len(self.index))
            ffi.release(idx)
        return res, int(res.n_valid)

    def frame_of(self, pgno: int) -> int:
        """1-based frame number holding the latest committed image of ``pgno``, or 0."""
        if 0 < pgno <= self.db_size and pgno < len(self.index):
            return self.index[pgno]
        return 0

    def page(self, pgno: int) -> Optional[bytes]:
        """The page image of ``pgno`` in the WAL snapshot, or None when it is not there."""
        f = self.frame_of(pgno)
        if not f:
            return None
        off = (f - 1) * self.frame_size + ref.FRAME_HDR
        return bytes(self.data[off : off + self.page_size])

    def pages(self) -> List[int]:
        """Every page number the snapshot holds (within its database size)."""
        top = min(self.db_size + 1, len(self.index))
        return [p for p in range(1, top) if self.index[p]]

    def newer_generation_at(self, buf: Buffer, n_valid: int) -> bool:
        """Rule (3): does the first untrusted frame of ``buf`` belong to the next generation?"""
        off = n_valid * self.frame_size
        if len(buf) - off < ref.FRAME_HDR:
            return False
        salt1 = struct.unpack_from(">I", buf, off + 8)[0]
        return salt1 == (self.header.salt1 + 1) & 0xFFFFFFFF


def parse_header(data: Buffer) -> Optional[ref.WalHeader]:
    """The WAL header, or None when SQLite would ignore the WAL (rule (1))."""
    if len(data) < ref.WAL_HDR:
        return None
    hdr = ffi.new("tdb_wal_header *")
    raw = bytes(memoryview(data)[: ref.WAL_HDR])
    if lib.tdb_wal_read_header(raw, ref.WAL_HDR, hdr) != ref.WAL_OK:
        return None
    return ref.WalHeader(*(int(getattr(hdr, f)) for f in ref.WalHeader._fields))
