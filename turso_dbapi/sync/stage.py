"""The staging file of a pull: ``<replica>-tdbpull``, written as the pages arrive.

Layout (big-endian): ``"TDBPULL2"``, then one record per page (``u32 pgno``, 4096 bytes),
then the trailer: revision bytes, ``u32 len(revision)``, ``u64 db_size`` (pages),
``u32 count``, ``u32 crc32`` of everything before it, ``"TDBPULL."``. The trailer goes last
because the page count is known only at the end of the stream; pages go straight to disk,
so a large pull never sits in memory. The file is written under a temporary name, fsynced
and renamed (then the directory fsynced): a stage either exists whole or not at all.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from .._util.atomic import publish
from ..protocol.sync_wire import PAGE_SIZE
from ..storage.files import STAGE

_HEAD = b"TDBPULL2"
_TAIL = b"TDBPULL."
_FIXED = struct.Struct(">IQII")  # len(revision), db_size, count, crc
_RECORD = 4 + PAGE_SIZE
_PGNO = struct.Struct(">I")
RUN_PAGES = 64  # pages per read of ``Staged.runs`` (256 KiB: bounded memory)


def stage_path(replica: str) -> str:
    return replica + STAGE


def remove_stage(replica: str) -> None:
    for path in (stage_path(replica), stage_path(replica) + ".tmp"):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


class StageWriter:
    """Appends pulled pages to ``<replica>-tdbpull.tmp``; ``finish`` publishes it."""

    def __init__(self, replica: str):
        self.path = stage_path(replica)
        self._tmp = self.path + ".tmp"
        self._fd = os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.pgnos: Set[int] = set()
        self.count = 0
        self._crc = 0
        self._write(_HEAD)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._crc = zlib.crc32(data, self._crc)

    def add(self, pgno: int, data: bytes) -> None:
        if len(data) != PAGE_SIZE:
            raise ValueError(f"page {pgno}: {len(data)} bytes, expected {PAGE_SIZE}")
        self._write(_PGNO.pack(pgno) + data)
        self.pgnos.add(pgno)
        self.count += 1

    def add_run(self, run: Any) -> None:
        """A run of pages (``sync_wire.PageRun``, 1-based page_ids): one write for all."""
        buf = memoryview(run.buf)
        parts: List[Any] = []
        for pgno, off in zip(run.page_ids, run.offsets):
            parts.append(_PGNO.pack(pgno))
            parts.append(buf[off:off + PAGE_SIZE])
        self._write(b"".join(parts))
        self.pgnos.update(run.page_ids)
        self.count += len(run.page_ids)

    def reset(self) -> None:
        """Start over (the HTTP layer retries the request)."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._crc = 0
        self.pgnos.clear()
        self.count = 0
        self._write(_HEAD)

    def finish(self, revision: str, db_size: int) -> Staged:
        """Publish the stage; the ``Staged`` it is (what ``Staged.open`` would read back:
        its writer knows it, so a pull does not read and check the file once more)."""
        rev = revision.encode()
        self._write(rev)
        body = _FIXED.pack(len(rev), db_size, self.count, 0)[:-4]
        self._write(body)
        tail = struct.pack(">I", self._crc) + _TAIL
        view = memoryview(tail)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        publish(self._tmp, self.path)
        max_pgno = max((p for p in self.pgnos if p <= db_size), default=0)
        return Staged(self.path, revision, db_size, self.count, 1 in self.pgnos, max_pgno, set(self.pgnos))

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            os.remove(self._tmp)
        except FileNotFoundError:
            pass


class Staged:
    """A complete, checked stage: ``revision``, ``db_size``, ``count``, ``has_page1``."""

    def __init__(self, path: str, revision: str, db_size: int, count: int, has_page1: bool,
                 max_pgno: int = 0, pgnos: Optional[Set[int]] = None):
        self.path, self.revision, self.db_size = path, revision, db_size
        self.count, self.has_page1 = count, has_page1
        self.max_pgno = max_pgno  # highest staged page within db_size (others are ignored)
        self.pgnos: Set[int] = pgnos if pgnos is not None else set()  # the pages the pull brought

    @classmethod
    def open(cls, replica: str) -> Optional[Staged]:
        """The stage, or None when it is missing or damaged (wrong size, CRC, magic)."""
        path = stage_path(replica)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < len(_HEAD) + _FIXED.size + len(_TAIL):
                    return None
                f.seek(size - _FIXED.size - len(_TAIL))
                tail = f.read()
                if tail[-len(_TAIL):] != _TAIL:
                    return None
                n, db_size, count, crc = _FIXED.unpack(tail[:_FIXED.size])
                if size != len(_HEAD) + count * _RECORD + n + _FIXED.size + len(_TAIL):
                    return None
                f.seek(0)
                if f.read(len(_HEAD)) != _HEAD:
                    return None
                running = zlib.crc32(_HEAD)
                pgnos: Set[int] = set()
                max_pgno = 0
                for _ in range(count):
                    rec = f.read(_RECORD)
                    pgno = struct.unpack(">I", rec[:4])[0]
                    pgnos.add(pgno)
                    if max_pgno < pgno <= db_size:
                        max_pgno = pgno
                    running = zlib.crc32(rec, running)
                has_page1 = 1 in pgnos
                rev = f.read(n)
                running = zlib.crc32(rev, running)
                running = zlib.crc32(_FIXED.pack(n, db_size, count, 0)[:-4], running)
                if running != crc:
                    return None
        except FileNotFoundError:
            return None
        return cls(path, rev.decode(), db_size, count, has_page1, max_pgno, pgnos)

    def pages(self) -> Iterator[Tuple[int, bytes]]:
        """(pgno, page) in the order received, read from disk as needed."""
        with open(self.path, "rb") as f:
            f.seek(len(_HEAD))
            for _ in range(self.count):
                rec = f.read(_RECORD)
                yield struct.unpack(">I", rec[:4])[0], rec[4:]

    def offsets(self) -> Dict[int, int]:
        """page -> offset of its bytes in the stage file (the last record of a page wins, as
        in ``pages``): a WAL apply reads pulled pages from the file when it needs them."""
        out: Dict[int, int] = {}
        with open(self.path, "rb") as f:
            for i in range(self.count):
                at = len(_HEAD) + i * _RECORD
                f.seek(at)
                out[_PGNO.unpack(f.read(4))[0]] = at + 4
        return out

    def runs(self) -> Iterator[Tuple[bytes, List[int], List[int]]]:
        """The pages in ``RUN_PAGES`` batches: ``(buf, pgnos, offsets)``, page ``pgnos[i]``
        at ``buf[offsets[i]:offsets[i] + PAGE_SIZE]`` (what ``PageStore.put_synced_many`` takes)."""
        with open(self.path, "rb") as f:
            f.seek(len(_HEAD))
            left = self.count
            while left:
                n = min(left, RUN_PAGES)
                buf = f.read(n * _RECORD)
                offsets = list(range(4, n * _RECORD, _RECORD))
                yield buf, [_PGNO.unpack_from(buf, o - 4)[0] for o in offsets], offsets
                left -= n


def write_stage(replica: str, revision: str, db_size: int, pages: dict) -> None:
    """A whole stage at once (tests, small pulls)."""
    w = StageWriter(replica)
    for pgno in sorted(pages):
        w.add(pgno, pages[pgno])
    w.finish(revision, db_size)
