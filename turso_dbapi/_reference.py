"""Pure-Python reference of every routine in the native core (checksum.c, wal.c).

Each function mirrors its C counterpart's contract — same arguments, same results, same
error codes — and is written for obviousness, not speed: it is the oracle the tests
hold the C code to, and the fallback when the extension is not built. The rule numbers
refer to the spec comments of checksum.h and wal.h.
"""

from __future__ import annotations

import struct
from typing import Dict, List, NamedTuple, Tuple

# ---- CRC32C (checksum.h) --------------------------------------------------------------

_CRC_POLY = 0x82F63B78  # Castagnoli, reflected


def _crc_table() -> List[int]:
    table = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ (_CRC_POLY if c & 1 else 0)
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(crc: int, data: bytes) -> int:
    """CRC32C of ``data`` continuing the finished CRC ``crc`` (0 to start) — rule (1)."""
    table = _CRC_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = (c >> 8) ^ table[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def crc32c_pages(buf: bytes, page_size: int, n_pages: int) -> List[int]:
    """CRC32C of each of the first ``n_pages`` pages of ``buf`` — rule (2)."""
    if page_size < 0 or n_pages < 0 or page_size * n_pages > len(buf):
        raise ValueError("buffer holds fewer than n_pages pages")
    view = memoryview(buf)
    return [crc32c(0, view[i * page_size : (i + 1) * page_size]) for i in range(n_pages)]


# ---- SQLite WAL (wal.h) ---------------------------------------------------------------

WAL_OK, WAL_ETRUNC, WAL_EMAGIC, WAL_EPAGESIZE, WAL_ECKSUM, WAL_EVERSION, WAL_ESPACE, WAL_EARG = (
    range(8)
)

WAL_MAGIC = 0x377F0682
WAL_VERSION = 3007000
WAL_HDR = 32
FRAME_HDR = 24
_M32 = 0xFFFFFFFF


class WalHeader(NamedTuple):
    magic: int
    version: int
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    cksum1: int
    cksum2: int


class WalResult(NamedTuple):
    """What tdb_wal_scan reports: its return code, the header, and per-frame arrays."""

    rc: int
    header: WalHeader
    pgno: List[int]  # every valid frame, committed or not (rule 5)
    commit: List[int]
    n_frames: int  # up to the last commit frame (rule 4)
    n_valid: int
    db_size: int
    cksum: Tuple[int, int]


_ZERO_HEADER = WalHeader(0, 0, 0, 0, 0, 0, 0, 0)


def wal_checksum(big_endian: bool, data: bytes, s: Tuple[int, int] = (0, 0)) -> Tuple[int, int]:
    """Rule (1): the Fletcher-like sum over u32 pairs; len(data) must be a multiple of 8."""
    if len(data) % 8:
        raise ValueError(f"WAL checksum needs a multiple of 8 bytes, got {len(data)}")
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    s0, s1 = s
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & _M32
        s1 = (s1 + words[i + 1] + s0) & _M32
    return s0, s1


def page_size_ok(page_size: int) -> bool:
    return 512 <= page_size <= 65536 and page_size & (page_size - 1) == 0


def wal_read_header(data: bytes) -> Tuple[int, WalHeader]:
    """Rule (2): (error code, fields). Fields are zero when the header is truncated."""
    if len(data) < WAL_HDR:
        return WAL_ETRUNC, _ZERO_HEADER
    hdr = WalHeader(*struct.unpack(">8I", data[:WAL_HDR]))
    if hdr.magic & ~1 != WAL_MAGIC:
        return WAL_EMAGIC, hdr
    if not page_size_ok(hdr.page_size):
        return WAL_EPAGESIZE, hdr
    if wal_checksum(bool(hdr.magic & 1), data[:24]) != (hdr.cksum1, hdr.cksum2):
        return WAL_ECKSUM, hdr
    if hdr.version != WAL_VERSION:
        return WAL_EVERSION, hdr
    return WAL_OK, hdr


def wal_max_frames(page_size: int, length: int) -> int:
    if not page_size_ok(page_size) or length < WAL_HDR:
        return 0
    return (length - WAL_HDR) // (FRAME_HDR + page_size)


def wal_scan(data: bytes, max_frames: int) -> WalResult:
    """Rules (3)-(5): walk the frames, as tdb_wal_scan does."""
    rc, hdr = wal_read_header(data)
    if rc != WAL_OK:
        return WalResult(rc, hdr, [], [], 0, 0, 0, (0, 0))
    big_endian = bool(hdr.magic & 1)
    ps = hdr.page_size
    frame = FRAME_HDR + ps
    s = (hdr.cksum1, hdr.cksum2)
    last = (0, 0, s)  # n_frames, db_size, cksum at the last commit
    pgnos: List[int] = []
    commits: List[int] = []
    off = WAL_HDR
    while len(data) - off >= frame:
        pgno, commit, salt1, salt2, c1, c2 = struct.unpack_from(">6I", data, off)
        if (salt1, salt2) != (hdr.salt1, hdr.salt2) or pgno == 0:
            break
        s = wal_checksum(big_endian, data[off : off + 8], s)
        s = wal_checksum(big_endian, data[off + FRAME_HDR : off + frame], s)
        if s != (c1, c2):
            break
        if len(pgnos) >= max_frames:
            return WalResult(WAL_ESPACE, hdr, [], [], 0, 0, 0, (0, 0))
        pgnos.append(pgno)
        commits.append(commit)
        if commit:
            last = (len(pgnos), commit, s)
        off += frame
    n_frames, db_size, cksum = last
    return WalResult(WAL_OK, hdr, pgnos, commits, n_frames, len(pgnos), db_size, cksum)


def wal_write_header(
    magic: int, page_size: int, checkpoint_seq: int, salt1: int, salt2: int
) -> Tuple[int, bytes, WalHeader]:
    """Rule (7): (rc, the 32 header bytes, the header with version and checksum filled)."""
    if magic & ~1 != WAL_MAGIC or not page_size_ok(page_size):
        return WAL_EARG, b"", _ZERO_HEADER
    head = struct.pack(">6I", magic, WAL_VERSION, page_size, checkpoint_seq, salt1, salt2)
    c1, c2 = wal_checksum(bool(magic & 1), head)
    hdr = WalHeader(magic, WAL_VERSION, page_size, checkpoint_seq, salt1, salt2, c1, c2)
    return WAL_OK, head + struct.pack(">2I", c1, c2), hdr


def wal_write_frames(
    hdr: WalHeader, pgnos: List[int], commits: List[int], pages: bytes, cksum: Tuple[int, int]
) -> Tuple[int, bytes, Tuple[int, int]]:
    """Rule (7): (rc, the frames, the running checksum after them)."""
    if hdr.magic & ~1 != WAL_MAGIC or not page_size_ok(hdr.page_size):
        return WAL_EARG, b"", cksum
    ps = hdr.page_size
    if any(p == 0 for p in pgnos) or len(pages) < len(pgnos) * ps:
        return WAL_EARG, b"", cksum
    big_endian = bool(hdr.magic & 1)
    out = []
    s = cksum
    for i, (pgno, commit) in enumerate(zip(pgnos, commits)):
        head8 = struct.pack(">2I", pgno, commit)
        page = bytes(pages[i * ps : (i + 1) * ps])
        s = wal_checksum(big_endian, page, wal_checksum(big_endian, head8, s))
        out.append(head8 + struct.pack(">4I", hdr.salt1, hdr.salt2, *s) + page)
    return WAL_OK, b"".join(out), s


def wal_follow(
    buf: bytes, hdr: WalHeader, s: Tuple[int, int], first_frame: int, index_len: int
) -> Tuple[WalResult, Dict[int, int]]:
    """Rule (8): frames of ``buf`` (a frame boundary onward) continuing checksum ``s``;
    (the result as tdb_wal_follow reports it, {pgno: frame number} of the committed ones)."""
    big_endian = bool(hdr.magic & 1)
    ps = hdr.page_size
    frame = FRAME_HDR + ps
    run = s
    last = (0, 0, s)
    off = i = 0
    while len(buf) - off >= frame:
        pgno, commit, salt1, salt2, c1, c2 = struct.unpack_from(">6I", buf, off)
        if (salt1, salt2) != (hdr.salt1, hdr.salt2) or pgno == 0:
            break
        run = wal_checksum(big_endian, bytes(buf[off : off + 8]), run)
        run = wal_checksum(big_endian, bytes(buf[off + FRAME_HDR : off + frame]), run)
        if run != (c1, c2):
            break
        if commit:
            last = (i + 1, commit, run)
        off += frame
        i += 1
    n_frames, db_size, cksum = last
    index: Dict[int, int] = {}
    for k in range(n_frames):
        pgno = struct.unpack_from(">I", buf, k * frame)[0]
        if pgno < index_len:
            index[pgno] = first_frame + k
    return WalResult(WAL_OK, hdr, [], [], n_frames, i, db_size, cksum), index
