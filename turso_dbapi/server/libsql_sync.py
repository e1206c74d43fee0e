"""The libSQL embedded-replica sync protocol (the ``libsql`` crate's ``sync.rs``), served
from the page log.

* ``GET /info`` → ``{"current_generation": g}``;
* ``GET /export/{g}`` → the database file as of generation ``g``'s base revision;
* ``GET /sync/{g}/{start}/{end}`` → WAL frames ``start .. end-1`` (1-based) of generation
  ``g``: each a 24-byte frame header and a 4096-byte page, the last frame of every commit
  carrying the database size. Past the generation's last frame: HTTP 400
  ``{"generation": current}``, which the client reads as "end of generation" (it then
  checkpoints and continues with the next generation from frame 1, or stops).

A generation is a run of revisions ``(base, next base]``; revision r becomes one commit:
the pages it wrote in page order (a revision that only changed the size re-sends page 1).
So the frames of a generation replayed over its export are exactly the served history.
The frames form a real WAL: salts fixed per generation, checksums chained from the
generation's header (``header(g)``) by the native WAL writer, so header + frames is a WAL
that plain SQLite recovers. ``/info`` is what a replica asks before it bootstraps, so when
anything was written since the current generation began it starts a new one at the latest
revision: a new replica's export is the current database, with no frames to replay.
Replicas on older generations finish theirs and move on, generation by generation.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Dict, List, Optional, Tuple

from .page_log import PAGE_SIZE, PageLog, read_bytes
from .wal import wal_header, write_frames

FRAME_SIZE = 24 + PAGE_SIZE
MAX_FRAMES_PER_REPLY = 1024


class EndOfGeneration(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(current)
        self.current = current


class SyncRequestError(ValueError):
    """A request that names no generation or frame range this server has."""


class LibsqlSync:
    def __init__(self, log: PageLog) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._bases: List[int] = log.generations()
        self._cum: List[int] = [0]  # frames of revisions 1..i, over the whole history
        # running checksum after revision r's commit frame, per generation: (g, r) -> cksum
        self._cksums: Dict[Tuple[int, int], Tuple[int, int]] = {}

    # ---------------------------------------------------------------- numbering

    def _extend(self) -> int:
        latest = self.log.latest
        known = len(self._cum) - 1
        if latest > known:
            for _, n in self.log.pages_per_revision(known, latest):
                self._cum.append(self._cum[-1] + max(1, n))
        return latest

    def header(self, gen: int) -> Tuple[bytes, object]:
        salt = int(self.log.instance[:8], 16) ^ gen, int(self.log.instance[8:16], 16)
        return wal_header(PAGE_SIZE, salt, big_endian=True, checkpoint_seq=gen - 1)

    def _span(self, gen: int, latest: int) -> Tuple[int, int]:
        """Revisions ``(lo, hi]`` of generation ``gen``."""
        if not 1 <= gen <= len(self._bases):
            raise SyncRequestError(
                f"generation {gen} does not exist (current generation is {len(self._bases)})"
            )
        lo = self._bases[gen - 1]
        hi = self._bases[gen] if gen < len(self._bases) else latest
        return lo, hi

    # ---------------------------------------------------------------- routes

    def info(self) -> Dict[str, int]:
        with self._lock:
            latest = self._extend()
            if latest > self._bases[-1]:
                self.log.add_generation(latest)
                self._bases.append(latest)
            return {"current_generation": len(self._bases)}

    def export(self, gen: int) -> bytes:
        with self._lock:
            lo, _ = self._span(gen, self._extend())
        return read_bytes(self.log, lo, 0, self.log.db_size_at(lo) * PAGE_SIZE)

    def frames(self, gen: int, start: int, end: int) -> bytes:
        with self._lock:
            latest = self._extend()
            lo, hi = self._span(gen, latest)
            if start < 1 or end <= start:
                raise SyncRequestError(f"invalid frame range [{start}, {end}): frames count from 1")
            total = self._cum[hi] - self._cum[lo]
            if start > total:
                raise EndOfGeneration(len(self._bases))
            end = min(end, total + 1, start + MAX_FRAMES_PER_REPLY)
            first = self._cum[lo] + start  # global frame numbers first..last
            last = self._cum[lo] + end - 1
            rev = bisect_left(self._cum, first)  # the revision holding frame `first`
            cksum = self._cksum_before(gen, lo, rev)
            _, hdr = self.header(gen)
            out: List[bytes] = []
            while rev <= hi and self._cum[rev - 1] < last:
                frames, cksum = self._revision_frames(hdr, rev, cksum)
                self._cksums[(gen, rev)] = cksum
                a = max(first - self._cum[rev - 1] - 1, 0)
                b = min(last - self._cum[rev - 1], len(frames) // FRAME_SIZE)
                out.append(frames[a * FRAME_SIZE : b * FRAME_SIZE])
                rev += 1
            return b"".join(out)

    # ---------------------------------------------------------------- frames

    def _cksum_before(self, gen: int, lo: int, rev: int) -> Tuple[int, int]:
        """The running checksum after revision ``rev - 1`` in generation ``gen``."""
        _, hdr = self.header(gen)
        r = rev - 1
        while r > lo and (gen, r) not in self._cksums:
            r -= 1
        cksum = self._cksums.get((gen, r), (hdr.cksum1, hdr.cksum2))  # type: ignore[attr-defined]
        for k in range(r + 1, rev):  # walk forward, caching each commit's checksum
            _, cksum = self._revision_frames(hdr, k, cksum)
            self._cksums[(gen, k)] = cksum
        return cksum

    def _revision_frames(
        self, hdr: object, rev: int, cksum: Tuple[int, int]
    ) -> Tuple[bytes, Tuple[int, int]]:
        pages = self.log.revision_pages(rev)
        if not pages:  # only the size changed: a commit needs a frame, so resend page 1
            vid: Optional[int] = self.log.version_at(1, rev)
            pages = [(1, vid)] if vid is not None else []
        images = self.log.read_versions([v for _, v in pages if v is not None])
        pgnos = [p for p, _ in pages]
        marks = [0] * len(pgnos)
        marks[-1] = self.log.db_size_at(rev)
        data = b"".join(images[v] for _, v in pages)
        return write_frames(hdr, pgnos, marks, data, cksum)  # type: ignore[arg-type]
