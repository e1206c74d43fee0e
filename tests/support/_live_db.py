"""A WAL-mode database being written where nginx serves it (test helper, not a plugin).

``LiveDb(nginx, name)`` keeps a stdlib ``sqlite3`` writer connection open on
``<nginx root>/<name>`` (closing the last connection would checkpoint and delete the
WAL), with automatic checkpoints off so each test decides when the database file changes.
``settle()`` moves the file's mtime a minute back: nginx's validators then pin it "settled"
(sources/live.py W4), which makes request counts exact.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any


class LiveDb:
    def __init__(self, nginx: Any, name: str, rows: int = 1000, wal_rows: int = 500, payload: int = 50):
        self.nginx = nginx
        self.name = name
        self.path: Path = nginx.root / name
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(str(self.path) + suffix)
            except FileNotFoundError:
                pass
        self.payload = payload
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("pragma journal_mode=wal")
        self.conn.execute("pragma wal_autocheckpoint=0")
        self.conn.execute("create table t(id integer primary key, v text)")
        self.insert(rows)
        self.checkpoint("TRUNCATE")
        self.insert(wal_rows)

    @property
    def url(self) -> str:
        return self.nginx.url(self.name)

    @property
    def wal_path(self) -> str:
        return str(self.path) + "-wal"

    def insert(self, n: int, per_commit: int = 0) -> None:
        per_commit = per_commit or max(1, n)
        done = 0
        while done < n:
            k = min(per_commit, n - done)
            with self.conn:
                self.conn.execute("begin")
                self.conn.executemany("insert into t(v) values (?)", [("v" * self.payload,)] * k)
            done += k

    def checkpoint(self, mode: str = "PASSIVE") -> tuple:
        return self.conn.execute(f"pragma wal_checkpoint({mode})").fetchone()

    def count(self) -> int:
        return self.conn.execute("select count(*) from t").fetchone()[0]

    def wal_size(self) -> int:
        return os.path.getsize(self.wal_path) if os.path.exists(self.wal_path) else 0

    def settle(self) -> None:
        past = time.time() - 60
        os.utime(self.path, (past, past))

    def close(self) -> None:
        self.conn.close()
