"""Read and write SQLite write-ahead logs (the ``<db>-wal`` file).

``parse_wal`` validates a WAL the way SQLite's recovery does and reports the committed
frames; ``build_wal`` writes a WAL that plain SQLite accepts, ``append_frames`` extends
one. The work happens in the native core (wal.c) in a single call per WAL; without the
extension the pure-Python reference does the same, slowly.

Frame indexes are 0-based positions in ``WalScan.frames``; SQLite's frame numbers are
1-based, so SQLite's mxFrame equals ``WalScan.max_frame`` == ``len(frames)``.
"""

from __future__ import annotations

import os
import struct
from array import array
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .. import _reference as ref
from .._native import ffi, lib

Buffer = Union[bytes, bytearray, memoryview]
Commit = Sequence[Tuple[int, bytes]]  # (page number, page image) in write order

__all__ = ["WalFormatError", "WalScan", "parse_wal", "build_wal", "append_frames"]


class WalFormatError(ValueError):
    """The bytes are not a WAL this module can read (the message names the problem)."""


@dataclass(frozen=True)
class WalScan:
    magic: int
    version: int
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    checksum: Tuple[int, int]  # the header's own checksum
    frames: List[Tuple[int, int, int]]  # (pgno, commit_size, offset) up to the last commit
    page_index: Dict[int, int]  # pgno -> index in frames of its latest committed frame
    db_size: int  # pages in the database after the last commit; 0 if no commit
    valid_frames: int  # frames that passed the checks, including an uncommitted tail
    last_checksum: Tuple[int, int]  # running checksum after the last commit (to append)

    @property
    def big_endian(self) -> bool:
        return bool(self.magic & 1)

    @property
    def max_frame(self) -> int:
        return len(self.frames)

    @property
    def frame_size(self) -> int:
        return ref.FRAME_HDR + self.page_size

    @property
    def end_offset(self) -> int:
        """Byte offset just past the last committed frame: where appended frames go."""
        return ref.WAL_HDR + len(self.frames) * self.frame_size

    def page(self, data: Buffer, pgno: int) -> Optional[bytes]:
        """The latest committed image of ``pgno`` in ``data`` (the scanned WAL), or None."""
        i = self.page_index.get(pgno)
        if i is None:
            return None
        off = self.frames[i][2] + ref.FRAME_HDR
        return bytes(memoryview(data)[off : off + self.page_size])


def _u8(data: Buffer) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _error(rc: int, length: int, hdr: ref.WalHeader) -> WalFormatError:
    if rc == ref.WAL_ETRUNC:
        return WalFormatError(f"truncated header: {length} bytes (a WAL header is {ref.WAL_HDR})")
    if rc == ref.WAL_EMAGIC:
        return WalFormatError(
            f"bad WAL magic 0x{hdr.magic:08x} (expected 0x377f0682 or 0x377f0683)"
        )
    if rc == ref.WAL_EPAGESIZE:
        return WalFormatError(_page_size_problem(hdr.page_size))
    if rc == ref.WAL_ECKSUM:
        return WalFormatError(
            f"bad WAL header checksum (0x{hdr.cksum1:08x}, 0x{hdr.cksum2:08x}): "
            "the header is corrupt or torn, and SQLite would ignore this WAL"
        )
    if rc == ref.WAL_EVERSION:
        return WalFormatError(
            f"unsupported WAL format version {hdr.version} (expected {ref.WAL_VERSION})"
        )
    return WalFormatError(f"WAL scan failed with code {rc}")  # ESPACE/EARG: a bug here


def _page_size_problem(page_size: int) -> str:
    if page_size & (page_size - 1):
        return f"page size {page_size} is not a power of two"
    return f"page size {page_size} is outside 512..65536"


def _scan(data: Buffer, native: bool) -> ref.WalResult:
    """The raw scan of either backend (the tests compare the two)."""
    view = _u8(data)
    if not native:
        rc, hdr = ref.wal_read_header(view)
        return ref.wal_scan(view, ref.wal_max_frames(hdr.page_size, len(view)))
    buf = ffi.from_buffer("uint8_t[]", view)
    chdr = ffi.new("tdb_wal_header *")
    res = ffi.new("tdb_wal_result *")
    max_frames = 0
    if lib.tdb_wal_read_header(buf, len(view), chdr) == ref.WAL_OK:
        max_frames = lib.tdb_wal_max_frames(chdr.page_size, len(view))
    pgno = array("I", bytes(4 * max_frames))
    commit = array("I", bytes(4 * max_frames))
    rc = lib.tdb_wal_scan(
        buf,
        len(view),
        chdr,
        ffi.from_buffer("uint32_t[]", pgno),
        ffi.from_buffer("uint32_t[]", commit),
        max_frames,
        res,
    )
    hdr = ref.WalHeader(
        chdr.magic, chdr.version, chdr.page_size, chdr.checkpoint_seq,
        chdr.salt1, chdr.salt2, chdr.cksum1, chdr.cksum2,
    )  # fmt: skip
    if rc != ref.WAL_OK:
        return ref.WalResult(rc, hdr, [], [], 0, 0, 0, (0, 0))
    n = res.n_valid
    return ref.WalResult(
        rc, hdr, pgno[:n].tolist(), commit[:n].tolist(), res.n_frames, n, res.db_size,
        (res.cksum1, res.cksum2),
    )  # fmt: skip


def parse_wal(data: Buffer, *, reference: bool = False) -> WalScan:
    """Validate a WAL and index its committed frames, stopping where SQLite's recovery does.

    Raises WalFormatError for a header SQLite would not use (truncated, bad magic, page
    size, header checksum or version). Invalid frames are not errors: the scan ends at the
    last commit before the first torn, stale or corrupt frame. ``reference=True`` forces
    the pure-Python implementation.
    """
    r = _scan(data, native=lib is not None and not reference)
    if r.rc != ref.WAL_OK:
        raise _error(r.rc, len(_u8(data)), r.header)
    h, n = r.header, r.n_frames
    frame = ref.FRAME_HDR + h.page_size
    pgnos = r.pgno[:n]
    return WalScan(
        magic=h.magic,
        version=h.version,
        page_size=h.page_size,
        checkpoint_seq=h.checkpoint_seq,
        salt1=h.salt1,
        salt2=h.salt2,
        checksum=(h.cksum1, h.cksum2),
        frames=list(zip(pgnos, r.commit[:n], range(ref.WAL_HDR, ref.WAL_HDR + n * frame, frame))),
        page_index=dict(zip(pgnos, range(n))),  # later frames overwrite earlier ones
        db_size=r.db_size,
        valid_frames=r.n_valid,
        last_checksum=r.cksum,
    )


# ---- writing ----------------------------------------------------------------------------


def _flatten(
    page_size: int, commits: Sequence[Commit], db_sizes: Sequence[int]
) -> Tuple[List[int], List[int], bytes]:
    if len(commits) != len(db_sizes):
        raise ValueError(f"{len(commits)} commits but {len(db_sizes)} db sizes")
    pgnos: List[int] = []
    marks: List[int] = []
    pages: List[bytes] = []
    for k, (commit, db_size) in enumerate(zip(commits, db_sizes)):
        if not commit:
            raise ValueError(f"commit {k} has no pages")
        if not 1 <= db_size <= 0xFFFFFFFF:
            raise ValueError(f"commit {k}: db size {db_size} is not in 1..2**32-1")
        for j, (pgno, image) in enumerate(commit):
            if not 1 <= pgno <= 0xFFFFFFFF:
                raise ValueError(f"commit {k}: page number {pgno} is not in 1..2**32-1")
            if len(image) != page_size:
                raise ValueError(f"commit {k}: page {pgno} has {len(image)} bytes, not {page_size}")
            pgnos.append(pgno)
            marks.append(db_size if j == len(commit) - 1 else 0)
            pages.append(bytes(image))
    return pgnos, marks, b"".join(pages)


def _frames(hdr: ref.WalHeader, pgnos: List[int], marks: List[int], pages: bytes) -> bytes:
    return write_frames(hdr, pgnos, marks, pages, (hdr.cksum1, hdr.cksum2))[0]


def write_frames(
    hdr: ref.WalHeader,
    pgnos: List[int],
    marks: List[int],
    pages: bytes,
    cksum: Tuple[int, int],
) -> Tuple[bytes, Tuple[int, int]]:
    """Frames for ``hdr``'s WAL continuing the running checksum ``cksum``; returns the
    frames and the checksum after the last one (to continue from)."""
    if lib is None:
        rc, out, after = ref.wal_write_frames(hdr, pgnos, marks, pages, cksum)
        return out, tuple(after)  # type: ignore[return-value]
    chdr = ffi.new("tdb_wal_header *", hdr._asdict())
    s = ffi.new("uint32_t[2]", list(cksum))
    out = bytearray(len(pgnos) * (ref.FRAME_HDR + hdr.page_size))
    rc = lib.tdb_wal_write_frames(
        ffi.from_buffer("uint8_t[]", out), len(out), chdr,
        ffi.new("uint32_t[]", pgnos), ffi.new("uint32_t[]", marks),
        ffi.from_buffer("uint8_t[]", pages), len(pgnos), s,
    )  # fmt: skip
    if rc != ref.WAL_OK:  # arguments were validated above, so this is a bug
        raise RuntimeError(f"tdb_wal_write_frames failed with code {rc}")
    return bytes(out), (s[0], s[1])


def wal_header(page_size: int, salts: Tuple[int, int], big_endian: bool = True,
               checkpoint_seq: int = 0) -> Tuple[bytes, ref.WalHeader]:
    """A WAL header (32 bytes, checksummed) and its fields, for ``write_frames``."""
    magic = ref.WAL_MAGIC | (1 if big_endian else 0)
    if lib is None:
        _, head, hdr = ref.wal_write_header(magic, page_size, checkpoint_seq, *salts)
        return head, hdr
    chdr = ffi.new("tdb_wal_header *", {"magic": magic, "page_size": page_size,
                                         "checkpoint_seq": checkpoint_seq,
                                         "salt1": salts[0], "salt2": salts[1]})  # fmt: skip
    raw = bytearray(ref.WAL_HDR)
    lib.tdb_wal_write_header(ffi.from_buffer("uint8_t[]", raw), len(raw), chdr)
    return bytes(raw), ref.WalHeader(*(getattr(chdr, f) for f in ref.WalHeader._fields))


def build_wal(
    page_size: int,
    commits: Sequence[Commit],
    db_sizes: Sequence[int],
    *,
    salts: Optional[Tuple[int, int]] = None,
    big_endian: bool = True,
    checkpoint_seq: int = 0,
) -> bytes:
    """A complete WAL: header, then each commit's frames, its last frame the commit frame.

    ``commits[k]`` lists (pgno, page image) pairs; ``db_sizes[k]`` is the database size in
    pages after commit k. Random salts unless given. SQLite writes checksums in its
    host's byte order (0x377f0682 on little-endian machines) and reads either order.
    """
    if not ref.page_size_ok(page_size):
        raise WalFormatError(_page_size_problem(page_size))
    if salts is None:
        salts = struct.unpack(">2I", os.urandom(8))
    if not all(0 <= v <= 0xFFFFFFFF for v in (*salts, checkpoint_seq)):
        raise ValueError("salts and checkpoint_seq must be unsigned 32-bit values")
    magic = ref.WAL_MAGIC | (1 if big_endian else 0)
    pgnos, marks, pages = _flatten(page_size, commits, db_sizes)
    if lib is None:
        _, head, hdr = ref.wal_write_header(magic, page_size, checkpoint_seq, *salts)
    else:
        chdr = ffi.new("tdb_wal_header *", {"magic": magic, "page_size": page_size,
                                             "checkpoint_seq": checkpoint_seq,
                                             "salt1": salts[0], "salt2": salts[1]})  # fmt: skip
        raw = bytearray(ref.WAL_HDR)
        lib.tdb_wal_write_header(ffi.from_buffer("uint8_t[]", raw), len(raw), chdr)
        head = bytes(raw)
        hdr = ref.WalHeader(*(getattr(chdr, f) for f in ref.WalHeader._fields))
    return head + _frames(hdr, pgnos, marks, pages)


def append_frames(scan: WalScan, commits: Sequence[Commit], db_sizes: Sequence[int]) -> bytes:
    """Frames continuing the scanned WAL: write them at ``scan.end_offset`` (then truncate)."""
    pgnos, marks, pages = _flatten(scan.page_size, commits, db_sizes)
    hdr = ref.WalHeader(
        scan.magic, scan.version, scan.page_size, scan.checkpoint_seq, scan.salt1, scan.salt2,
        *scan.last_checksum,
    )  # fmt: skip
    return _frames(hdr, pgnos, marks, pages)
