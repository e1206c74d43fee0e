"""A Turso sync source without a server, for unit tests of the sync room: it serves the
pages of local SQLite files as revisions "1", "2", ... (4096-byte pages)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from turso_dbapi.protocol.sync_wire import PAGE_SIZE, PullUpdatesResponseHeader
from turso_dbapi.sources.turso import PullReply
from turso_dbapi.storage.header import rollback_journal
from turso_dbapi.transport.stats import SourceStats


def file_pages(path: Path) -> Dict[int, bytes]:
    data = Path(path).read_bytes()
    assert len(data) % PAGE_SIZE == 0
    return {i // PAGE_SIZE + 1: data[i:i + PAGE_SIZE] for i in range(0, len(data), PAGE_SIZE)}


class FakeSyncSource:
    """``bootstrap``/``fetch_at``/``fetch`` of ``TursoSyncSource`` over in-memory revisions."""

    def __init__(self, *files: Path, url: str = "https://user:secret@sync.example"):
        self.url = url
        self.display_url = "https://***@sync.example"
        self.revisions: List[Dict[int, bytes]] = [file_pages(f) for f in files]
        self.stats = SourceStats()
        self.requests: List[str] = []

    def revision(self, n: Optional[int] = None) -> str:
        return str(len(self.revisions) if n is None else n)

    def pages_at(self, revision: str) -> Dict[int, bytes]:
        pages = dict(self.revisions[int(revision) - 1])
        pages[1] = rollback_journal(pages[1])  # as TursoSyncSource patches every page 1
        return pages

    def _header(self, revision: str) -> PullUpdatesResponseHeader:
        return PullUpdatesResponseHeader(server_revision=revision, db_size=len(self.pages_at(revision)))

    def bootstrap(self, *, prefix_pages: Optional[int] = None, query: Optional[str] = None,
                  sink=None) -> PullReply:
        self.requests.append(f"bootstrap prefix={prefix_pages} query={query}")
        rev = self.revision()
        header = self._header(rev)
        sink.on_header(header)
        for p, data in sorted(self.pages_at(rev).items()):
            if query is not None and p == 1:
                continue  # a query bootstrap may leave the header page out
            if prefix_pages is None or p <= prefix_pages:
                sink.on_page(p, data)
        return PullReply(header, {})

    def fetch_at(self, pgnos: Sequence[int], revision: str) -> PullReply:
        self.requests.append(f"fetch {list(pgnos)} @{revision}")
        pages = self.pages_at(revision)
        return PullReply(self._header(revision), {p: pages[p] for p in pgnos if p in pages})

    def fetch(self, pgnos: Sequence[int]) -> Dict[int, bytes]:
        return self.fetch_at(pgnos, self.revision()).pages

    def close(self) -> None:
        pass
