"""Committing pages into a WAL replica, and which of its frames are synced.

A pull on a replica in WAL mode is committed the way SQLite's own writer commits (C:
``_native/wal_index.c``): the caller's internal connection holds the WAL write lock (its
``BEGIN IMMEDIATE``) and prepares ``PRAGMA tdb_wal_job=<token>``; the VFS runs the job with
that database's shm methods (vfs.c rule (17)): frames appended to ``<replica>-wal``, fsync,
wal-index hash entries, then the header. Nothing else about the job goes through SQL.

``<replica>-tdbwalsync`` (``SyncedFrames``) lists, for one WAL generation (its salts), the
frames pulls appended: frame number, page, CRC32C. It is Turso's
``revert_since_wal_watermark`` (spec §5.4) made exact: every other frame is local. The list is
written (atomically, fsynced) BEFORE the frames, so a crash between the two can only list
frames that are not there; a frame counts as synced only when its page and CRC match (rule
(8) of wal_index.c for checkpoints, ``wal_pages`` here), so a local frame written later at a
listed position is never taken for a synced one.

One commit may hold a page twice (``append`` takes frames in order): its synced version,
listed, then the replayed local one. Readers, checkpoints and SQLite's recovery take the
later frame (walformat.html: the hash lookup keeps the largest frame); the synced one stays
known to ``wal_pages`` and to a checkpoint (wal_index.c rule (9)).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import struct
import time
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from .._native import ffi, lib
from .._util.atomic import write_atomic
from ..errors import OperationalError
from . import files
from .checksum import crc32c
from .wal_index import WalIndex

SYNCED_FRAMES = files.WAL_SYNCED
_MAGIC = b"TDBWSYN\x01"
_HDR = struct.Struct("=8sIIII")  # magic, salt-1, salt-2, count, reserved
_ENTRY = struct.Struct("=III")  # frame, page, CRC tag (0 stored as 1, as the sidecar does)
WAL_HDR = 32
FRAME_HDR = 24

_ERRORS = {
    1: "the WAL moved under the write lock",
    2: "the -wal file could not be written",
    3: "bad arguments",
    4: "the wal-index is damaged",
    5: "the job was not found",
    6: "the database is not in WAL mode",
}


class WalMoved(OperationalError):
    """The WAL is not at the state an append was planned on (a commit or a restart since)."""


Frames = Sequence[Tuple[int, bytes]]  # (page number, page image) in frame order


class FileFrames:
    """Frames in order whose pages are in memory or in a file (a pull's stage, read by page
    offset): a large pull's pages are never all in memory; ``append`` has C read them a
    chunk at a time. Iterating reads each page when its turn comes (the list's CRCs)."""

    def __init__(self, fd: int = -1, page_size: int = 4096):
        self.fd, self.page_size = fd, page_size
        self.pgnos: List[int] = []
        self.offsets: List[int] = []  # in ``fd``, or -1: the page is in ``mem``
        self.mem: Dict[int, bytes] = {}  # frame index -> page image

    def add(self, pgno: int, data: Optional[bytes] = None, offset: int = -1) -> None:
        if data is not None:
            self.mem[len(self.pgnos)] = data
            offset = -1
        elif offset < 0:
            raise ValueError(f"page {pgno}: neither its bytes nor its offset")
        self.pgnos.append(pgno)
        self.offsets.append(offset)

    def extend(self, frames: Iterable[Tuple[int, bytes]]) -> None:
        for p, data in frames:
            self.add(p, data)

    def data(self, i: int) -> bytes:
        got = self.mem.get(i)
        if got is not None:
            return got
        out = os.pread(self.fd, self.page_size, self.offsets[i])
        if len(out) != self.page_size:
            raise OperationalError(f"page {self.pgnos[i]}: its staged copy is cut short")
        return out

    def __len__(self) -> int:
        return len(self.pgnos)

    def __iter__(self) -> Iterator[Tuple[int, bytes]]:
        return ((self.pgnos[i], self.data(i)) for i in range(len(self.pgnos)))

    def __getitem__(self, which: slice) -> FileFrames:
        out = FileFrames(self.fd, self.page_size)
        for i in range(len(self.pgnos))[which]:
            out.pgnos.append(self.pgnos[i])
            out.offsets.append(self.offsets[i])
            if i in self.mem:
                out.mem[len(out.pgnos) - 1] = self.mem[i]
        return out


@dataclasses.dataclass(frozen=True)
class WalState:
    mx_frame: int
    n_page: int
    n_backfill: int
    salts: Tuple[int, int]
    page_size: int


def _state(job: ffi.CData) -> WalState:
    s = job.state
    return WalState(int(s.mx_frame), int(s.n_page), int(s.n_backfill), (int(s.salt1), int(s.salt2)),
                    int(s.page_size))


def _submit(conn: sqlite3.Connection, job: ffi.CData) -> None:
    """Run ``job`` in the VFS through ``conn``'s private pragma; ``job.rc`` stays -1 if the
    pragma never reached our VFS."""
    job.rc = -1
    token = lib.tdb_wi_submit(job)
    if not token:
        raise MemoryError("tdb_wi_submit")
    try:
        conn.execute(f"PRAGMA tdb_wal_job={token}")
    finally:
        lib.tdb_wi_withdraw(token)  # a job that did not run is forgotten


def _run(conn: sqlite3.Connection, job: ffi.CData, what: str) -> None:
    _submit(conn, job)
    if job.rc == -1:  # the pragma never reached our VFS
        raise OperationalError(f"{what}: the database is not a replica of this driver")
    if job.rc != 0:
        reason = _ERRORS.get(job.rc, f"code {job.rc}")
        if job.rc == 2 and job.sys_errno:
            reason += f" ({os.strerror(job.sys_errno)})"
        raise (WalMoved if job.rc == 1 else OperationalError)(f"{what}: {reason}")


def read_state(conn: sqlite3.Connection) -> WalState:
    """The wal-index header (under the write lock: as it stays; else as it is now). Without
    the lock a commit may be writing it: its two copies then differ for a moment (rule (5)
    of wal_index.c), and the read is tried again, as SQLite's readers do."""
    for attempt in range(200):
        job = ffi.new("tdb_wi_job *")
        job.op = lib.TDB_WI_READ
        _submit(conn, job)
        if job.rc != 4:
            break
        time.sleep(0.001 if attempt > 3 else 0)
    if job.rc == -1:
        raise OperationalError("reading the wal-index: the database is not a replica of this driver")
    if job.rc != 0:
        raise OperationalError(f"reading the wal-index: {_ERRORS.get(job.rc, f'code {job.rc}')}")
    return _state(job)


def append(conn: sqlite3.Connection, replica: str, state: WalState, salts: Tuple[int, int],
           frames: Union[Frames, FileFrames], db_size: int, page_size: int) -> Tuple[WalState, int]:
    """Append ``frames`` (a page may come twice: the later frame wins) as one commit (the
    database then has ``db_size`` pages); returns the new state and the first frame's
    number. ``state`` is what the plan used (else ``WalMoved``), ``salts`` what
    ``salts_for`` chose. ``FileFrames`` pages stay in their file: C reads them a chunk at
    a time."""
    ps = page_size
    if not isinstance(frames, FileFrames):
        listed = FileFrames(-1, ps)
        listed.extend(frames)
        frames = listed
    if any(len(data) != ps for data in frames.mem.values()):
        raise ValueError("every page must have the WAL's page size")
    job = ffi.new("tdb_wi_job *")
    wal_path = ffi.new("char[]", os.fsencode(replica + "-wal"))
    pg = ffi.new("uint32_t[]", frames.pgnos)
    data = ffi.from_buffer(b"".join(frames.mem[i] for i in sorted(frames.mem)) or b"\0")
    offs = ffi.new("int64_t[]", frames.offsets) if frames.mem.keys() != set(range(len(frames))) else ffi.NULL
    job.src_off = offs
    job.src_fd = frames.fd
    job.op = lib.TDB_WI_APPEND
    job.wal_path = wal_path
    job.expect_mx = state.mx_frame
    job.expect_salt1, job.expect_salt2 = state.salts
    job.new_salt2 = salts[1]
    job.pgno = pg
    job.pages = ffi.cast("uint8_t *", data)
    job.n = len(frames)
    job.db_size = db_size
    job.page_size = ps
    _run(conn, job, f"appending {len(frames)} pages to {replica}-wal")
    return _state(job), int(job.first_frame)


def salts_for(state: WalState) -> Tuple[int, int]:
    """The salts of the frames the next append writes: the WAL's, or for an empty WAL a
    fresh header's (salt-1 + 1, a random salt-2: wal_index.c rule (3))."""
    if state.mx_frame:
        return state.salts
    return (state.salts[0] + 1) & 0xFFFFFFFF, struct.unpack("=I", os.urandom(4))[0]


def crc_tag(page: bytes) -> int:
    c = crc32c(page)
    return c if c else 1


class SyncedFrames:
    """``<replica>-tdbwalsync``: the pulled frames of one WAL generation."""

    def __init__(self, salts: Tuple[int, int], entries: Iterable[Tuple[int, int, int]] = ()):
        self.salts = salts
        self.entries: List[Tuple[int, int, int]] = sorted(entries)

    @classmethod
    def load(cls, replica: str) -> Optional[SyncedFrames]:
        try:
            with open(replica + SYNCED_FRAMES, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        if len(raw) < _HDR.size:
            return None
        magic, s1, s2, count, _ = _HDR.unpack_from(raw)
        if magic != _MAGIC or len(raw) < _HDR.size + count * _ENTRY.size:
            return None
        return cls((s1, s2), (_ENTRY.unpack_from(raw, _HDR.size + i * _ENTRY.size) for i in range(count)))

    def save(self, replica: str) -> None:
        body = b"".join(_ENTRY.pack(*e) for e in self.entries)
        write_atomic(replica + SYNCED_FRAMES,
                     _HDR.pack(_MAGIC, self.salts[0], self.salts[1], len(self.entries), 0) + body)


def peek_state(replica: str) -> Optional[WalState]:
    """The committed frames of ``<replica>-wal`` as SQLite's recovery would see them, read
    without any lock (a hint for prefetching: the WAL may move at once); None when there is
    no usable WAL. Never from ``-shm``: closing any descriptor of that file would drop every
    POSIX lock this process's connections hold on it (their read marks)."""
    try:
        with open(replica + "-wal", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    wal = WalIndex.from_bytes(raw)
    if wal is None or not wal.frames:
        return None
    return WalState(wal.frames, wal.db_size, 0, wal.salts, wal.page_size)


def read_frames(replica: str, page_size: int, state: WalState) -> bytes:
    """Frames 1..mx_frame of ``<replica>-wal`` (headers and pages, end to end), of the
    generation ``state`` was read in. ``WalMoved`` when the file no longer holds them: a
    reader whose snapshot ignores the WAL (every frame checkpointed: SQLite's read lock 0)
    does not keep a RESTART or TRUNCATE checkpoint from restarting it."""
    if state.mx_frame == 0:
        return b""
    fsz = FRAME_HDR + page_size
    n = state.mx_frame * fsz
    with open(replica + "-wal", "rb") as f:
        f.seek(WAL_HDR)
        buf = f.read(n)
    if len(buf) != n:
        raise WalMoved(f"{replica}-wal is shorter than its {state.mx_frame} committed frames: restarted since")
    salts = struct.pack(">II", *state.salts)
    if any(buf[off + 8:off + 16] != salts for off in range(0, n, fsz)):  # frame header bytes 8-15
        raise WalMoved(f"{replica}-wal holds frames of another generation: restarted since")
    return buf


def pages_since(replica: str, before: WalState, now: WalState, page_size: int) -> Set[int]:
    """Pages of the frames committed between two states of the wal-index (all of ``now``'s
    when the WAL was restarted in between); the caller holds the write lock."""
    first = before.mx_frame + 1 if now.salts == before.salts and now.mx_frame >= before.mx_frame else 1
    if first > now.mx_frame:
        return set()
    fsz = FRAME_HDR + page_size
    out: Set[int] = set()
    with open(replica + "-wal", "rb") as f:
        for i in range(first, now.mx_frame + 1):
            f.seek(WAL_HDR + (i - 1) * fsz)
            head = f.read(4)
            if len(head) != 4:
                raise OperationalError(f"{replica}-wal is shorter than its {now.mx_frame} committed frames")
            out.add(struct.unpack(">I", head)[0])
    return out


def wal_pages(replica: str, state: WalState, page_size: int) -> Tuple[Set[int], Dict[int, bytes]]:
    """(pages whose last frame is local, page -> its last synced frame's bytes) over the
    committed frames of the WAL; the caller holds the write lock, so they cannot change.
    A page's synced version stays known when a local frame follows it (a pull's replay
    rewrote the page): the next pull reverts the page to it."""
    buf = read_frames(replica, page_size, state)
    listed = SyncedFrames.load(replica)
    entries = {e[0]: (e[1], e[2]) for e in listed.entries} if listed and listed.salts == state.salts else {}
    fsz = FRAME_HDR + page_size
    local: Set[int] = set()
    synced: Dict[int, bytes] = {}
    for i in range(state.mx_frame):
        off = i * fsz
        pgno = struct.unpack_from(">I", buf, off)[0]
        page = buf[off + FRAME_HDR:off + fsz]
        e = entries.get(i + 1)
        if e is not None and e[0] == pgno and e[1] == crc_tag(page):
            synced[pgno] = page  # the latest synced version, even under a later local frame
            local.discard(pgno)  # a later synced frame supersedes the local one
        else:
            local.add(pgno)
    return local, synced


def record(replica: str, state: WalState, first_frame_salts: Tuple[int, int], synced: Frames) -> SyncedFrames:
    """The list as it is after appending a commit whose first frames are ``synced`` at
    ``state.mx_frame + 1`` in the generation ``first_frame_salts``; saved (durably) before
    the append."""
    listed = SyncedFrames.load(replica)
    keep: List[Tuple[int, int, int]] = []
    if listed is not None and listed.salts == first_frame_salts and state.mx_frame:
        keep = [e for e in listed.entries if e[0] <= state.mx_frame]
    frame = state.mx_frame
    for p, data in synced:
        frame += 1
        keep.append((frame, p, crc_tag(data)))
    out = SyncedFrames(first_frame_salts, keep)
    out.save(replica)
    return out
