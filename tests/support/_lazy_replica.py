"""A lazily read replica of a local SQLite file (a ``FileSource``, no network), and the
queries the storage and replica tests compare with plain sqlite3."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from turso_dbapi.fetch.miss import MissHandler
from turso_dbapi.sources.file import FileSource
from turso_dbapi.storage import pagestore
from turso_dbapi.storage.vfs import ensure_registered, replica_uri

QUERIES = [
    "SELECT count(*) FROM items",
    "SELECT * FROM items WHERE id = 777",
    "SELECT id, name, price FROM items WHERE category = 7 ORDER BY price",
    "SELECT category, count(*), round(sum(price), 2) FROM items GROUP BY category",
    "SELECT id FROM items WHERE name BETWEEN 'item-00000100' AND 'item-00000150'",
    "SELECT id, length(payload), hex(substr(payload, 1, 8)) FROM items WHERE id % 7 = 0",
    "SELECT id, length(body), substr(body, -20) FROM docs",
    "SELECT * FROM kv ORDER BY k",
    "SELECT * FROM kv WHERE k > 'key-8' LIMIT 20",
    "SELECT count(*) FROM items i JOIN docs d ON d.id = i.id",
    "SELECT id, name FROM items ORDER BY id DESC LIMIT 30",
    "PRAGMA integrity_check",
]


class Lazy:
    """A replica of ``src`` in ``directory`` with its source and miss handler."""

    def __init__(self, src: Path, directory: Path, **handler_opts):
        ensure_registered()
        self.source = FileSource(src)
        leading = self.source.open()
        ident = pagestore.identity_of(str(src), self.source.version, self.source.page_size, self.source.size)
        self.store = pagestore.open_store(str(directory / "replica" / "db"), page_size=self.source.page_size,
                                          size=self.source.size, identity=ident)
        del leading  # FileSource's leading bytes are not stored: page 1 goes through a miss
        self.handler = MissHandler(self.store, self.source, **handler_opts)
        self.conn_id = self.store.attach(self.handler)

    def connect(self, **kw) -> sqlite3.Connection:
        return sqlite3.connect(replica_uri(self.store.path, self.conn_id), uri=True, **kw)

    @property
    def requests(self) -> int:
        return self.source.stats.snapshot()["requests"]
