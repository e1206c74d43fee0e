"""The driver's own connections to a replica (push, capture install, rebase).

They go through the VFS with the opening connection's id, so their misses are fetched by
that connection's source; ``isolation_level=None`` so every transaction is explicit.
"""

from __future__ import annotations

import sqlite3

from ..storage.vfs import replica_uri

LOCK_TIMEOUT = 5.0  # seconds a transaction waits for another connection's lock


def connect(replica: str, conn_id: int, timeout: float = LOCK_TIMEOUT) -> sqlite3.Connection:
    conn = sqlite3.connect(replica_uri(replica, conn_id), uri=True,
                           timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA recursive_triggers = ON")  # as every replica connection (replica.py)
    return conn
