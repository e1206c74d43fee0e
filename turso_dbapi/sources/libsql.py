"""``LibsqlSource``: a libSQL server's embedded-replica protocol through the WAL frame path.

``protocol=libsql`` (sqld, Turso, this project's reference server) — what the ``libsql``
crate's embedded replicas speak:

  GET /info                   {"current_generation": g}
  GET /export/{g}             the database file as of generation g's start
  GET /sync/{g}/{start}/{end} WAL frames start..end-1 (1-based) of generation g: 24-byte
                              SQLite frame headers (page number, commit size, salts,
                              cumulative checksum) + pages; HTTP 400 {"generation": c}
                              past the generation's last frame ("end of generation")

Rules:
  (1) open(): /info, then /export of that generation: the whole database (2 requests);
      the replica is complete, nothing is fetched lazily afterwards.
  (2) pull(): /sync/{g}/{next}/{next + BATCH} until a reply is short; a 400 names the
      current generation: the same one means "up to date" (that request costs one round
      trip and no frame), a later one means generation g is complete: the next frames
      are generation g + 1's from frame 1, applied over g's final state (what libSQL
      clients do); several generations are walked in one pull.
  (3) Frames are checked as WAL frames with the C parser (storage/wal_index.py): salts
      equal to the generation's first frame's, cumulative checksums chained from that
      frame on (the protocol never sends the generation's WAL header, so the first frame's
      own checksum is the chain's anchor), nonzero page numbers; only frames up to the
      last valid commit frame are applied, the rest are asked again by the next pull. A
      frame that breaks the chain inside a reply is a ``ProtocolError``: the server sent
      something that is not the generation's history.
  (4) Applying is replica/live.py's coherent switch ("grew": the frames' pages, size,
      page 1's change counter).
"""

from __future__ import annotations

import json
import struct
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .. import _reference as ref
from ..errors import ProtocolError
from ..storage.wal_index import WalIndex
from ..transport.http import HttpClient, Reply, TransientReplyError, client_from_options
from ..transport.stats import SourceStats
from .live import Observation, patch_page1
from .range import SQLITE_MAGIC, parse_page_size

BATCH = 1024  # frames asked per /sync request (the reference server's reply cap)
FRAME_HDR = ref.FRAME_HDR


class _Pages:
    """The newest image of each page among the frames installed last (``wal.page``)."""

    def __init__(self) -> None:
        self.images: Dict[int, bytes] = {}

    def page(self, pgno: int) -> Optional[bytes]:
        return self.images.get(pgno)


class LibsqlSource:
    """A ``PageSource`` + the ``observe``/``install`` pair ``replica.live`` applies."""

    pinned_pages = False

    def __init__(self, url: str, options: Mapping[str, Any], stats: Optional[SourceStats] = None):
        self.stats = stats if stats is not None else SourceStats()
        self._http: HttpClient = client_from_options(url.rstrip("/"), options, stats=self.stats)
        self.base = self._http.url
        self.display_url = self._http.display_url
        self.generation = 0
        self.next_frame = 1  # the next frame of the generation to ask for
        self.chain: Optional[WalIndex] = None  # validates the generation's frames (3)
        self.page_size = 4096
        self.size = 0
        self.version = ""
        self.counter = 0
        self.stale = False
        self.refused: set = set()
        self.wal = _Pages()
        self._lock = threading.Lock()

    @property
    def n_pages(self) -> int:
        return -(-self.size // self.page_size) if self.page_size else 0

    def __repr__(self) -> str:
        return f"<LibsqlSource {self.display_url} generation={self.generation}>"

    # -- PageSource -------------------------------------------------------------------------

    def open(self) -> bytes:
        """(1): the current generation's export; returns the whole database."""
        info = self._json(self._get("/info", "cannot read the libSQL server's /info"))
        gen = info.get("current_generation") if isinstance(info, dict) else None
        if not isinstance(gen, int) or gen < 1:
            raise ProtocolError(f"{self.display_url}/info: no current_generation in {info!r}",
                                url=self.display_url)
        data = self._get(f"/export/{gen}", f"cannot export generation {gen}").body or b""
        if data:
            if len(data) < 100 or data[:16] != SQLITE_MAGIC:
                raise ProtocolError(f"{self.display_url}/export/{gen} is not a SQLite database",
                                    url=self.display_url)
            self.page_size = parse_page_size(data)
            if len(data) % self.page_size:
                raise ProtocolError(f"{self.display_url}/export/{gen}: {len(data)} bytes is not a "
                                    f"whole number of {self.page_size}-byte pages", url=self.display_url)
        self.generation, self.next_frame, self.chain = gen, 1, None
        self.size = len(data)
        self.counter = (struct.unpack_from(">I", data, 24)[0] if data else 0) + 1
        self.version = f"libsql-generation={gen};frame=0"
        return patch_page1(data[: self.page_size], self.counter, self.n_pages) + data[self.page_size:] if data else b""

    def fetch(self, pgnos: Sequence[int]) -> Dict[int, bytes]:
        return {}  # (1) the replica holds every page: nothing is ever missing

    def close(self) -> None:
        self._http.close()

    def patch_page1(self, page: bytes) -> bytes:
        return patch_page1(page, self.counter, self.n_pages)

    # -- pull -------------------------------------------------------------------------------

    def observe(self) -> Observation:
        """(2)/(3): the committed frames after ``next_frame``, across generations."""
        gen, nxt, chain = self.generation, self.next_frame, self.chain
        images: Dict[int, bytes] = {}
        db_size = self.n_pages
        frame = FRAME_HDR + self.page_size
        pending = b""  # valid frames of a commit not complete yet (a batch ended inside it)
        while True:
            body = self._frames(gen, nxt + len(pending) // frame)
            if isinstance(body, int):  # end of generation: the server's current one
                pending = b""  # (a generation ends with a commit frame)
                if body <= gen:
                    break
                gen, nxt, chain = gen + 1, 1, None
                continue
            if len(body) % frame:
                raise ProtocolError(f"{self.display_url}/sync/{gen}: {len(body)} bytes is not a whole "
                                    f"number of {frame}-byte frames", url=self.display_url)
            buf = pending + body
            chain, committed, size = self._check(chain, buf, gen, nxt)
            view = memoryview(buf)
            for k in range(committed):
                pgno = struct.unpack_from(">I", view, k * frame)[0]
                images[pgno] = bytes(view[k * frame + FRAME_HDR:(k + 1) * frame])
            if committed:
                db_size = size
            nxt += committed
            pending = bytes(view[committed * frame:])
            if len(body) // frame < BATCH:
                break  # a short reply: the server has nothing more now
        obs = Observation("grew" if (images or gen != self.generation) else "same")
        obs.libsql = (gen, nxt, chain, images, db_size)  # type: ignore[attr-defined]
        return obs

    def install(self, obs: Observation) -> List[int]:
        gen, nxt, chain, images, db_size = obs.libsql  # type: ignore[attr-defined]
        with self._lock:
            self.generation, self.next_frame, self.chain = gen, nxt, chain
            self.wal.images = images
            self.size = db_size * self.page_size
            self.counter += 1
            self.version = f"libsql-generation={gen};frame={nxt - 1}"
            return sorted(images)

    def _check(self, chain: Optional[WalIndex], body: bytes, gen: int, start: int):
        """(3): (the chain after the committed frames, how many, the last commit's size)."""
        frame = FRAME_HDR + self.page_size
        view = memoryview(body)
        first = 0
        if chain is None:  # the generation's first frames: frame 1 anchors the chain
            pgno, commit, salt1, salt2, c1, c2 = struct.unpack_from(">6I", view, 0)
            if pgno == 0:
                raise ProtocolError(f"{self.display_url}/sync/{gen}/{start}: frame with page 0",
                                    url=self.display_url)
            chain = _anchor(view, self.page_size)
            first = 1
            if commit:
                chain.db_size = commit
        before = chain.frames
        chain.extend(view[first * frame:], pages=False)
        valid = first + chain.last_stop
        if valid < len(body) // frame:
            raise ProtocolError(f"{self.display_url}/sync/{gen}: frame {start + valid} breaks the "
                                "checksum chain or the salts of its generation", url=self.display_url)
        committed = first + (chain.frames - before)
        if first and chain.frames == before and not chain.db_size:
            return None, 0, 0  # frame 1 alone, not a commit: asked again (and anchored) next time
        chain.data = bytearray()  # only the chain's state is needed, not the frames
        return chain, committed, chain.db_size

    # -- requests ---------------------------------------------------------------------------

    def _get(self, path: str, what: str) -> Reply:
        def check(reply: Reply) -> Reply:
            if reply.status != 200:
                raise self._http.error(reply, what)
            return reply

        return self._http.request("GET", self.base + path, check=check, what=what)

    def _frames(self, gen: int, start: int) -> Any:
        """The frames' bytes, or the current generation (an int) at the end of ``gen``."""
        what = f"cannot read frames {start}.. of generation {gen}"

        def check(reply: Reply) -> Any:
            if reply.status == 400:
                doc = self._json(reply)
                current = doc.get("generation") if isinstance(doc, dict) else None
                if isinstance(current, int):
                    return current
            if reply.status != 200:
                raise self._http.error(reply, what)
            return reply.body or b""

        return self._http.request("GET", f"{self.base}/sync/{gen}/{start}/{start + BATCH}", check=check,
                                  what=what)

    def _json(self, reply: Reply) -> Any:
        try:
            return json.loads(reply.body or b"null")
        except ValueError:
            raise TransientReplyError(f"{reply.where()}: not JSON") from None


def _anchor(view: memoryview, page_size: int) -> WalIndex:
    """A chain whose state is "just after frame 1" (salts, checksum and byte order of frame
    1; the byte order is the one that validates frame 2, big-endian when there is none)."""
    pgno, commit, salt1, salt2, c1, c2 = struct.unpack_from(">6I", view, 0)
    frame = FRAME_HDR + page_size
    for magic in (ref.WAL_MAGIC | 1, ref.WAL_MAGIC):
        hdr = ref.WalHeader(magic, ref.WAL_VERSION, page_size, 0, salt1, salt2, c1, c2)
        chain = WalIndex(hdr, b"")
        chain.frames = 1
        if len(view) < 2 * frame:
            return chain
        probe = WalIndex(hdr, b"")
        probe.extend(view[frame:2 * frame], pages=False)
        if probe.last_stop:
            return chain
    return chain  # frame 2 fails both orders: _check reports where the chain broke

