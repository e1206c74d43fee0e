"""The contract between the page store and a remote: ``PageSource``.

A source is pinned to one version of the remote database when it opens (an ETag or
Last-Modified for HTTP ranges, a revision for the Turso protocol). Every page it returns
afterwards belongs to that version; if the remote changed, the source raises
``RemoteChangedError`` instead of returning pages of another version.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict, Optional, Protocol, Sequence


@dataclasses.dataclass
class SourceStats:
    """Network counters of one source. Body bytes only (headers are not counted)."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    pages_fetched: int = 0
    retries: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, requests: int = 0, sent: int = 0, received: int = 0, pages: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_sent += sent
            self.bytes_received += received
            self.pages_fetched += pages
            self.retries += retries

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests,
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
                "pages_fetched": self.pages_fetched,
                "retries": self.retries,
            }


class PageSource(Protocol):
    """What the page store needs from a remote.

    After ``open()``:
      * ``page_size``  — the database page size in bytes;
      * ``size``       — the logical database size in bytes at the pinned version;
      * ``version``    — an opaque string identifying the pinned version (cache key);
      * ``display_url``— the URL with credentials redacted (for messages and logs).
    """

    page_size: int
    size: int
    version: str
    display_url: str
    stats: SourceStats

    def open(self) -> bytes:
        """Contact the remote once, pin its version, and return the first page's bytes
        (or as many leading bytes as that first request returned, at least 100)."""
        ...

    def fetch(self, pgnos: Sequence[int]) -> Dict[int, bytes]:
        """Fetch pages by 1-based page number, at the pinned version.

        Returns a dict pgno -> exactly ``page_size`` bytes. Pages that do not exist at
        the pinned version (beyond its size) are simply absent from the dict; any other
        failure raises a ``RemoteError`` subclass (never a partial or wrong page).
        """
        ...

    def close(self) -> None:
        ...


def version_key(source: PageSource) -> Optional[str]:
    return getattr(source, "version", None)
