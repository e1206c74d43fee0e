"""``LiveSource``: a database file AND its ``-wal`` over HTTP, read as SQLite would read them.

A WAL-mode database (header bytes 18/19 = 2) that an application is writing is two files:
the database file, changed only by checkpoints, and the WAL, where commits are appended.
The state SQLite sees is "the latest committed frame of each page in the WAL, else the
page of the database file". This source serves exactly that state as one logical image
(page 1 rewritten to rollback-journal mode, so the local replica is coherent the way
Turso replicas are: a change counter at offset 24 that moves when ``pull`` applies a
change), and follows it with ``observe()`` (the network half of ``pull``).

Why one module of more than 500 lines: most of it is the consistency proof below, and each
numbered rule is tagged in the code that keeps it; split apart, a reader could check neither
the proof against the code nor the code against the proof. (The WAL fetching itself is
already in ``wal_reader``.)

WHAT THE WRITER DOES (SQLite's WAL rules that the proof below uses):
  W1. A commit appends frames to the WAL; a frame is trusted only with the header's salts
      and a valid cumulative checksum, up to the last commit frame (storage/wal_index.py).
  W2. A checkpoint copies committed frames of the CURRENT generation into the database
      file ("backfill"): after frames 1..M are backfilled, each page of the file equals
      its latest image among frames 1..M (or its older content if not in 1..M).
  W3. A restart (the next writer after a complete checkpoint, or RESTART/TRUNCATE)
      rewrites the WAL from offset 0 with salt-1 + 1 and a new salt-2: a new generation.
      It happens only when the whole old generation is backfilled. Salts never repeat:
      the same header bytes mean the same generation, which only ever grows (W1).
  W4. The database file's validator (ETag, Last-Modified) changes when it is written,
      except that nginx-style validators (mtime in SECONDS) do not change for a second
      write within the same second: a pin is trusted ("settled") only when the reply
      that made it carries a Date later than its Last-Modified (no write can fall in
      that second any more), or has no Last-Modified (an opaque ETag: S3's MD5).

THE SNAPSHOT is (generation G with committed frames 1..N, database pin E). Requests, in
this order (each starts after the previous one ended):
  S1. the database open (leading bytes, pin E);                       [range.py]
  S2. the whole WAL, when S1's header says WAL mode: G, frames 1..N;
  S3. with a settled pin: the open's block of the database with If-Match E;
  S3'/S4. otherwise (or S3 answered 412): the leading bytes again (pin E'), then the WAL
      header and the bytes after frame N (one multi-range request): the snapshot becomes
      frames 1..N' (N' >= N) over the file as S3' read it.
PROOF (the image "frames 1..N over the file at E" is a state the writer committed):
  - S3 succeeds => the file did not change between S1 and S3 (settled, W4), so in
    particular not during S2. The file at S1 holds backfills (W2) of frames committed
    before S1: if their generation is G, they were in the WAL when S2 started, so they
    are among 1..N, and every page of the file equals its image at frame N unless 1..N
    has a newer image of it — which is what we serve. If the file's backfills belong to
    an older generation, G exists because that generation was wholly backfilled before
    the restart (W3), and that was before S1 (the file did not change after): the file
    is the old generation's final state, on which G's frames were written.
  - S3'/S4: S2 (before S3') and S4 (after it) show the same header, so no restart
    happened in between (W3) and the file at S3' holds backfills of G only (or the final
    state of the generation before G, as above), of frames committed before S3' — all in
    the WAL when S4 started, so among 1..N'. Same argument: frames 1..N' over the file
    at S3' is the state after frame N'. A different header at S4: S1-S4 are repeated.
  - A restart WHILE S2 (or S4) streams: the bytes after the header may be frames of G+1,
    which fail G's salts, so the scan would stop early at a prefix of G whose later
    frames are already in the file. The first untrusted frame then carries salt-1 = G + 1
    (wal_index rule (3)): the snapshot is repeated. (A G+1 frame torn exactly in its salt
    field cannot be told from a torn G frame; the window is one frame header.)
  - (N) A WAL that is absent (404/403: S3-style hosts) or empty/invalid: the file alone is
    the state, but NOT the file as S1 streamed it when the pin is not settled: a TRUNCATE
    checkpoint may be writing it in place during S1 (torn or older pages under a validator
    that does not move within the second, W4) and have emptied the WAL before S2. So:
    with a settled pin, S3 (an absent WAL: none, S3-style hosts); otherwise S3' (the
    leading bytes again, pin E') and S4 = the WAL read again, which must be missing
    exactly as at S2 (else S1-S4 are repeated). A checkpoint writing during S3' needs
    committed frames in the WAL, which had none at S2 and has none at S4: a whole
    generation would have to be written, checkpointed and truncated within S3' (the
    window left: one request, and a commit plus a TRUNCATE checkpoint inside it).
READS (misses) of pages not in frames 1..N:
  C. while a WAL is there: the pages are read without preconditions (as aligned blocks,
     ``unpinned_read``), then the WAL is read again (header + the bytes after frame N). If the header is still G and no committed
     frame after N wrote one of those pages, the pages equal their image at frame N (W2:
     the file holds backfills of G only, and none of frames > N touched them) — even if
     a checkpoint wrote the file WHILE the reply was streamed (a validator cannot tell
     that: the server took it before sending the bytes, and a checkpoint writes in place).
     The pages frames > N wrote are refused from then on (they may be newer in the file).
     Anything else raises ``RemoteChangedError``: never a mix of two states within a
     transaction. Cost: one more request per miss.
  F. without a WAL (rollback journal, absent or empty WAL): a ranged read with If-Match E
     (range.py (4)), as for any HTTP-range database. In WAL mode with a pin that is not
     settled, If-Match cannot see a checkpoint within E's second: the WAL is then read
     again after the pages and must still be missing as the snapshot saw it (N), else
     ``RemoteChangedError`` (a checkpoint needs frames in the WAL first).
PULL (``observe`` then the replica applies it under SQLite's EXCLUSIVE lock):
  P1. same generation: ONE request, ``Range: bytes=0-31,<end of frame N>-`` (two
      requests where multi-range is refused): the new frames N+1..N' are trusted as in
      S2 and their pages replace the cached ones; the pin stays (F or C still apply).
      Nothing else changed: the file can only have backfilled frames of G (W2), and
      pages of frames <= N' are served from the WAL.
  P2. another generation (or the WAL vanished / appeared): S1-S3 run again, and the
      cached pages the old frames cannot vouch for are dropped. After exactly one restart
      (checkpoint sequence and salt-1 one higher) with the new generation still shorter
      than our end offset, the old generation's frames we never saw are still in the WAL
      file after that offset and continue our checksum chain (``recovered_tail``): only
      their pages and the new generation's are dropped. Otherwise (two restarts, a
      truncated WAL, a longer new generation) every cached page is.
  P3. no WAL (rollback journal, or a 404): S1 again; a new validator means a new file:
      cached pages are dropped, the cache is kept for the new version.
After a 404 for the WAL, no WAL request is made again until ``pull()`` (P3 probes it).
"""

from __future__ import annotations

import email.utils
import struct
import threading
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from .. import _reference as ref
from ..errors import RemoteChangedError
from ..storage.wal_index import WalIndex
from ..transport.http import Reply
from .range import HttpRangeSource
from .unpinned_read import read_pages
from .wal_reader import ABSENT as _ABSENT, WalReader, wal_url

MAX_SNAPSHOT_ATTEMPTS = 4  # a writer restarting the WAL under every attempt is an error


def patch_page1(page: bytes, counter: int, n_pages: int) -> bytes:
    """Page 1 for the replica: rollback-journal mode (18/19 = 1), the change counter (24)
    readers compare at each transaction start, the size in pages (28) valid for it (92)."""
    b = bytearray(page)
    b[18] = b[19] = 1
    struct.pack_into(">I", b, 24, counter & 0xFFFFFFFF)
    struct.pack_into(">I", b, 28, n_pages)
    struct.pack_into(">I", b, 92, counter & 0xFFFFFFFF)
    return bytes(b)


def recovered_tail(old: WalIndex, new: WalIndex, body: bytes) -> Optional[Set[int]]:
    """P2 with what the old frames prove: after exactly ONE restart (checkpoint sequence and
    salt-1 one higher, W3) the file is the old generation's final state. Its frames after
    ours are still in the WAL file when the new generation (committed, valid, and one more
    frame being written) ends before our end offset: they continue our checksum chain from
    there. Then the pages that changed are exactly those frames' pages and the new
    generation's; every other cached page still holds. None: they cannot be told (drop all)."""
    m = 0xFFFFFFFF
    h_old, h_new = old.header, new.header
    if h_new.checkpoint_seq != (h_old.checkpoint_seq + 1) & m or h_new.salt1 != (h_old.salt1 + 1) & m:
        return None
    if h_new.page_size != h_old.page_size:
        return None
    start = old.end_offset
    if ref.WAL_HDR + (new.last_stop + 1) * new.frame_size > start or len(body) < start:
        return None  # the new generation may have overwritten frames we never saw
    probe = WalIndex(old.header, old.raw_header)
    probe.cksum, probe.frames, probe.index = old.cksum, old.frames, _tiny_index()
    tail = memoryview(body)[start:]
    pages = set(probe.extend(tail))
    if probe.newer_generation_at(tail, probe.last_stop):
        return None  # the new generation reached our end after all
    return pages | set(new.pages())


def is_wal_mode(header: bytes) -> bool:
    """SQLite reads a WAL only when the header's format bytes 18/19 say so (2)."""
    return len(header) >= 20 and (header[18] == 2 or header[19] == 2)


def _http_time(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def settled(pinned: Any) -> bool:
    """W4: can a write after this pin still leave its validators unchanged?"""
    if pinned is None:
        return False
    lm = _http_time(pinned.last_modified)
    if lm is None:
        return bool(pinned.etag and not pinned.weak)  # an opaque strong ETag (content hash)
    date = _http_time(pinned.date)
    return date is not None and date > lm


class Observation:
    """What ``observe()`` found; ``LiveSource.commit`` installs it (under the replica's lock)."""

    def __init__(self, kind: str):
        self.kind = kind  # "same" | "grew" | "new" (P2/P3: drop the cache)
        self.new_frames: bytes = b""  # P1: committed frames appended after frame N
        self.wal: Optional[WalIndex] = None  # P2: the new generation (None: no WAL)
        self.leading: bytes = b""  # P2/P3: the database's leading bytes, usable when trusted
        self.trusted_leading = False
        self.db_state: Any = None  # P2/P3: the database source's new pin
        self.wal_absent = False
        self.wal_body: bytes = b""  # S2's bytes (P2 looks for the old generation's tail there)
        self.stale_pages: Optional[Set[int]] = None  # P2: only these changed (None: all may have)
        self.no_wal: Optional[Tuple[bool, bytes]] = None  # (N): the missing WAL as S2/S4 saw it

    @property
    def changed(self) -> bool:
        return self.kind != "same"


class LiveSource:
    """The logical image of db + WAL as a ``PageSource`` (see the module docstring)."""

    pinned_pages = False  # pages change at pull(): no background read-ahead holds them

    def __init__(self, db: HttpRangeSource):
        self.db = db
        self.stats = db.stats
        self.display_url = db.display_url
        self.wal_reader = WalReader(db._http, wal_url(db._http.url), wal_url(db.display_url))
        self.wal: Optional[WalIndex] = None
        self.wal_absent = False  # (after a 404) no WAL requests until pull()
        self.wal_mode = False
        self.refused: Set[int] = set()  # pages frames after N wrote (C): may be newer in the file
        self.no_wal: Optional[Tuple[bool, bytes]] = None  # (N): F reads re-check the missing WAL
        self.counter = 0  # change counter of the page 1 served (moves at every applied change)
        self.stale = False  # a change was seen mid-transaction: pull at the next one
        self._lock = threading.Lock()
        self.page_size = 0
        self.size = 0
        self.version = ""

    def __repr__(self) -> str:
        return f"<LiveSource {self.display_url} version={self.version or '-'}>"

    # -- PageSource ----------------------------------------------------------------------

    @property
    def n_pages(self) -> int:
        return -(-self.size // self.page_size) if self.page_size else 0

    def open(self, leading: Optional[bytes] = None) -> bytes:
        """S1-S3; returns the trusted leading bytes (page 1 patched), maybe just page 1.
        ``leading``: S1 already done (``self.db.open()`` returned these bytes)."""
        before = self.db._pinned
        if leading is not None and before is None:
            raise RuntimeError("LiveSource.open(leading) needs the database source opened")
        obs = self._snapshot(leading)
        self._install(obs)
        self.counter = max(self.counter, self._raw_counter(obs)) + 1
        return self._leading(obs)

    def adopt_pin(self, page1: Optional[bytes]) -> None:
        """Follow a database source opened elsewhere: its pin is the snapshot (P3's state)."""
        obs = Observation("new")
        obs.db_state = self._db_state()
        obs.leading = page1 or b""
        obs.trusted_leading = True
        self._install(obs)
        self.counter = self._raw_counter(obs)

    def fetch(self, pgnos: Sequence[int]) -> Dict[int, bytes]:
        out: Dict[int, bytes] = {}
        wal = self.wal
        n_pages = self.n_pages
        from_db: List[int] = []
        for p in pgnos:
            if not 1 <= p <= n_pages:
                continue
            image = wal.page(p) if wal is not None else None
            if image is not None:
                out[p] = image
            else:
                from_db.append(p)
        if from_db:
            out.update(self._fetch_db(from_db))
        if 1 in out:
            out[1] = self.patch_page1(out[1])
        return out

    def close(self) -> None:
        self.db.close()

    # -- page 1 ----------------------------------------------------------------------------

    def patch_page1(self, page: bytes) -> bytes:
        return patch_page1(page, self.counter, self.n_pages)

    def _raw_counter(self, obs: Observation) -> int:
        page1 = obs.wal.page(1) if obs.wal is not None else None
        if page1 is None:
            page1 = obs.leading[:100]
        return struct.unpack_from(">I", page1, 24)[0] if len(page1) >= 28 else 0

    def _leading(self, obs: Observation) -> bytes:
        """Whole leading pages the snapshot trusts (page 1 from the WAL when it is there)."""
        ps = self.page_size
        lead = obs.leading if obs.trusted_leading else b""
        pages = [lead[i:i + ps] for i in range(0, len(lead) - len(lead) % ps, ps)][: self.n_pages]
        if self.wal is not None:
            pages = [self.wal.page(i + 1) or pg for i, pg in enumerate(pages)]
            if not pages and self.wal.page(1) is not None:
                pages = [self.wal.page(1)]
        if pages:
            pages[0] = self.patch_page1(pages[0])
        return b"".join(pages)

    # -- S1-S3 and pull's observation -------------------------------------------------------

    def _db_state(self) -> Tuple[Any, int, int, str]:
        db = self.db
        return db._pinned, db.size, db.page_size, db.version

    def _set_db_state(self, state: Tuple[Any, int, int, str]) -> None:
        db = self.db
        db._pinned, db.size, db.page_size, db.version = state

    def _snapshot(self, leading: Optional[bytes] = None) -> Observation:
        """S1-S3 on the database source, which is left pinned as it was (``install``
        switches it): a failed apply changes nothing."""
        before = self._db_state()
        try:
            return self._snapshot_attempts(leading)
        finally:
            self._set_db_state(before)

    def _snapshot_attempts(self, leading: Optional[bytes]) -> Observation:
        for _ in range(MAX_SNAPSHOT_ATTEMPTS):
            obs = Observation("new")
            obs.leading = leading if leading is not None else self.db.open()  # S1
            leading = None
            obs.db_state = self._db_state()
            if not obs.leading or not is_wal_mode(obs.leading):
                obs.trusted_leading = True  # the file alone is the state (P3)
                return obs
            status, body = self.wal_reader.whole()  # S2
            if status in _ABSENT:
                if not self._no_wal_confirmed(obs, status, body):  # S3 / S3'-S4 (N)
                    continue
                obs.wal_absent = obs.trusted_leading = True
                return obs
            wal = WalIndex.from_bytes(body)
            obs.wal_body = body
            if wal is not None and wal.newer_generation_at(memoryview(body)[ref.WAL_HDR:], wal.last_stop):
                continue  # restarted while we read it
            if wal is not None and wal.page_size != self.db.page_size:
                wal = None  # SQLite ignores a WAL of another page size
            obs.wal = wal
            if wal is None:  # an empty or unusable WAL: the file alone, confirmed (N)
                if not self._no_wal_confirmed(obs, status, body):
                    continue
                obs.trusted_leading = True
                return obs
            # S3
            if not (settled(self.db._pinned) and self._db_unchanged()):
                # S3'/S4: the leading bytes again, then the WAL after them (C, at open)
                obs.leading = self.db.open()
                got = self.wal_reader.tail(wal)
                if got is None or not wal.same_generation(got[0]):
                    continue
                wal.extend(got[1])
                if wal.newer_generation_at(got[1], wal.last_stop):
                    continue
            obs.trusted_leading = True
            obs.db_state = self._db_state()
            return obs
        raise RemoteChangedError(
            f"{self.display_url} kept restarting its WAL while it was being read "
            f"({MAX_SNAPSHOT_ATTEMPTS} attempts); try again", url=self.display_url)

    def observe(self) -> Observation:
        """The network half of pull(): what changed since the installed snapshot (P1-P3)."""
        wal = self.wal
        if wal is not None:
            got = self.wal_reader.tail(wal)  # P1
            if got is not None:
                header, tail = got
                if wal.same_generation(header):
                    probe = WalIndex(wal.header, wal.raw_header)  # validate on a scratch chain
                    probe.cksum, probe.frames = wal.cksum, wal.frames
                    probe.index = _tiny_index()
                    pgnos = probe.extend(tail)
                    obs = Observation("grew" if pgnos else "same")
                    obs.new_frames = bytes(memoryview(tail)[: len(pgnos) * wal.frame_size])
                    return obs
        obs = self._snapshot()  # P2 / P3
        if wal is None and obs.wal is None and obs.db_state[3] == self.db.version:
            obs.kind = "same"
        elif wal is not None and obs.wal is not None:
            obs.stale_pages = recovered_tail(wal, obs.wal, obs.wal_body)
        return obs

    def install(self, obs: Observation) -> List[int]:
        """Switch to the observed state (the replica holds SQLite's EXCLUSIVE lock); returns
        the pages whose cached images changed ("grew": the new frames' pages)."""
        with self._lock:
            self.stale = False
            if obs.kind == "grew":
                assert self.wal is not None
                pgnos = self.wal.extend(obs.new_frames)
                self.size = self.wal.db_size * self.page_size
                self.refused.clear()  # those frames are ours now: served from the WAL
                self.counter += 1
                return sorted(set(pgnos))
            if obs.kind == "new":
                self._install(obs)
                self.counter += 1
            elif self.wal is None and obs.wal is None and obs.no_wal is not None:
                self.no_wal = obs.no_wal  # (N) F reads compare with the WAL as now missing
            return []

    def leading_pages(self, obs: Observation) -> bytes:
        return self._leading(obs)

    def _install(self, obs: Observation) -> None:
        with_lock = not self._lock.locked()
        if with_lock:
            self._lock.acquire()
        try:
            self._set_db_state(obs.db_state)
            self.wal = obs.wal
            self.wal_absent = obs.wal_absent
            self.page_size = self.db.page_size
            self.wal_mode = is_wal_mode(obs.leading)
            self.size = obs.wal.db_size * self.page_size if obs.wal is not None and obs.wal.db_size else self.db.size
            self.refused = set()
            self.no_wal = obs.no_wal if obs.wal is None else None
            self.version = self._version()
        finally:
            if with_lock:
                self._lock.release()

    def _version(self) -> str:
        v = self.db.version
        if self.wal is not None:
            v += f";wal={self.wal.salts[0]:08x}{self.wal.salts[1]:08x}@{self.wal.frames}"
        return v

    # -- database reads: F and C ------------------------------------------------------------

    def _fetch_db(self, pgnos: List[int]) -> Dict[int, bytes]:
        refused = [p for p in pgnos if p in self.refused]
        if refused:
            raise self._changed(f"page {refused[0]} was rewritten by a commit after this snapshot")
        if self.wal is None:  # F: the file alone, pinned as range.py pins it
            return self._pinned_fetch(pgnos)
        return self._confirmed_fetch(pgnos)  # C

    def _pinned_fetch(self, pgnos: List[int]) -> Dict[int, bytes]:
        """F: If-Match the pin; with a pin that is not settled (W4) in WAL mode, the WAL is
        then read again and must still be missing as the snapshot saw it (N)."""
        try:
            out = self.db.fetch(pgnos)
        except RemoteChangedError:
            self.stale = True
            raise
        evidence = self.no_wal
        if evidence is not None and not settled(self.db._pinned):
            status, body = self.wal_reader.whole()
            if (status in _ABSENT, body) != evidence:
                self.stale = True
                raise self._changed("a WAL was written (a checkpoint may have changed the file)")
        return out

    def _no_wal_confirmed(self, obs: Observation, status: int, body: bytes) -> bool:
        """(N) S1 found a WAL-mode file and S2 no usable WAL: is the file at S1 a state?
        A settled pin unchanged at S3 says so. Otherwise the leading bytes are read again
        (S3', pin E') and then the WAL (S4), which must be missing exactly as at S2."""
        evidence = (status in _ABSENT, body)
        if settled(self.db._pinned) and (status in _ABSENT or self._db_unchanged()):
            # (an absent WAL with a settled pin costs no request: S3-style hosts; a
            # checkpoint writing during S1 would need the writer to delete its WAL before S2)
            obs.no_wal = evidence
            return True
        obs.leading = self.db.open()  # S3'
        if not obs.leading or not is_wal_mode(obs.leading):
            return False  # the journal mode changed: S1 again
        status2, body2 = self.wal_reader.whole()  # S4
        if (status2 in _ABSENT, body2) != evidence:
            return False
        obs.no_wal = evidence
        obs.db_state = self._db_state()
        return True

    def _confirmed_fetch(self, pgnos: List[int]) -> Dict[int, bytes]:
        wal = self.wal
        if wal is None:  # no generation to confirm against: F
            return self._pinned_fetch(pgnos)
        out = read_pages(self.db, pgnos)  # aligned blocks, multi-range (unpinned_read U1-U3)
        got = self.wal_reader.tail(wal)
        if got is None or not wal.same_generation(got[0]):
            self.stale = True
            raise self._changed("the WAL was restarted (a checkpoint completed)")
        probe = WalIndex(wal.header, wal.raw_header)
        probe.cksum, probe.frames = wal.cksum, wal.frames
        probe.index = _tiny_index()
        newer = set(probe.extend(got[1]))
        if probe.newer_generation_at(got[1], probe.last_stop):
            self.stale = True
            raise self._changed("the WAL was restarted while it was read")
        hit = sorted(newer.intersection(out))
        if hit:
            self.stale = True
            raise self._changed(f"page {hit[0]} was rewritten by a commit after this snapshot")
        with self._lock:
            self.refused |= newer
        self.stats.add(pages=len(out))
        return out

    def _db_unchanged(self) -> bool:
        """S3: the open's leading block of the database with If-Match (a 412 means it
        changed): the same range as every open, so a cache holds it (range.py (9))."""
        pinned = self.db._pinned
        last = max(0, min(self.db.open_bytes, self.db.size) - 1)

        def check(reply: Reply) -> bool:
            if reply.status in (412, 416) or pinned.differs(reply.headers):
                return False
            if reply.status != 206:
                raise self.db._http.error(reply, "cannot check the remote database")
            return True

        headers = {"Range": f"bytes=0-{last}"}
        headers.update(pinned.preconditions())
        return self.db._http.request("GET", headers=headers, check=check,
                                     what="cannot check the remote database")

    def _changed(self, why: str) -> RemoteChangedError:
        return RemoteChangedError(
            f"remote database changed during this read transaction: {why}; the next transaction "
            f"after pull() sees the new state ({self.display_url})", url=self.display_url)


def _tiny_index() -> Any:
    from array import array

    return array("I", bytes(4))  # validation only: the scratch chain records no pages

