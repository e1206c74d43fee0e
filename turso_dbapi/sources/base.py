"""The contract between the page store and a remote: ``PageSource``.

A source is pinned to one version of the remote database when it opens (an ETag or
Last-Modified for HTTP ranges, a revision for the Turso protocol). Every page it returns
afterwards belongs to that version; if the remote changed, the source raises
``RemoteChangedError`` instead of returning pages of another version.

Everything a source needs from its replica is a constructor parameter, never an attribute
set afterwards: ``TursoSyncSource(pinned_revision=, pin=, page_observer=, client=)`` (``pin``
reads the synced revision from the replica's metadata before each fetch, so a pull by any
process moves it; ``page_observer`` feeds the replica's B-tree map), ``HttpRangeSource`` pins
its version itself at ``open()``.
"""

from __future__ import annotations

from typing import Dict, Protocol, Sequence

from ..transport.stats import SourceStats


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
