"""``Connection``: the stdlib ``sqlite3.Connection`` plus the remote-replica methods.

A local database gets exactly the stdlib object behaviour (the class only adds methods),
so there is nothing to lose by using the subclass for every connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Dict, Optional, Protocol

from .errors import NotSupportedError


class Stats(Protocol):
    """What ``stats()`` returns for every kind of remote (HTTP-range/S3 caches and Turso
    replicas add their own fields): this connection's network counters and the page
    store's. Fields read as attributes or ``stats["name"]``."""

    url: str
    requests: int
    pages_fetched: int
    retries: int
    hits: int
    misses: int
    pages_read: int
    prefetched: int
    crc_failures: int
    local_writes: int
    last_error: Optional[str]

    def __getitem__(self, key: str) -> Any: ...

    def asdict(self) -> Dict[str, Any]: ...


def require_replica(conn: Any, what: str) -> Any:
    """The replica of ``conn`` (``conn._replica``), or NotSupportedError naming ``what``."""
    replica = getattr(conn, "_replica", None)
    if replica is None:
        raise NotSupportedError(
            f"{what}() needs a remote database: this connection is a plain local file; "
            "open it with turso_dbapi.connect(url, ...) to get a replica"
        )
    return replica


class StatsMethod:
    """``stats()``: of this class and of every remote connection class, whatever its
    ``factory=`` (``replica.base.remote_class``)."""

    _replica: Any = None

    def stats(self) -> Stats:
        """Counters of the remote replica (requests, bytes, pages fetched, hits, ...)."""
        return require_replica(self, "stats").stats()


class Connection(StatsMethod, sqlite3.Connection):
    """A ``sqlite3.Connection`` that may be backed by a remote database.

    For remote databases, the replica object (``_replica``) is attached after
    ``sqlite3.connect`` returns; it provides ``stats()``, ``pull()`` and ``push()``.
    """

    def pull(self, on_conflict: Any = None) -> bool:
        """Fetch and apply remote changes, replaying unpushed local ones on top; True when
        something changed. ``on_conflict(conflict)`` decides rows both sides changed."""
        replica = require_replica(self, "pull")
        return replica.pull(on_conflict=on_conflict) if on_conflict is not None else replica.pull()

    def push(self, transform: Any = None) -> Any:
        """Send local changes to the remote; ``transform(change)`` may map or drop each."""
        replica = require_replica(self, "push")
        return replica.push(transform=transform) if transform is not None else replica.push()

    def sync(self) -> bool:
        """push() then pull(); returns what pull() returned."""
        self.push()
        return self.pull()
