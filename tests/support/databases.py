"""Generated SQLite databases for tests and benchmarks (pytest plugin + plain functions).

``make_database(path, page_size=4096, rows=2000, journal_mode="delete", seed=0)`` writes a
deterministic database (same arguments, same rows) with:

  items(id INTEGER PRIMARY KEY, name TEXT, category INT, price REAL, payload BLOB)
        + index items_category_price(category, price) and unique index items_name(name)
  docs(id INTEGER PRIMARY KEY, title TEXT, body TEXT)   bodies larger than a page:
        overflow chains; every 7th doc also has a blob several pages long in items.payload
  kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID               an index-organised table

``journal_mode="wal"`` leaves the file in WAL mode (header bytes 18/19 == 2) after a
``wal_checkpoint(TRUNCATE)``, so the main file alone holds every row.

``make_sized_database(path, min_bytes, page_size=4096)`` grows the same schema until the
file is at least ``min_bytes`` (benchmarks use >= 100 MB).

Fixtures:
  ``databases`` (session): {"p1024", "p4096", "p65536", "wal"} -> Path of a generated file.
  ``served_databases`` (session): the same names -> URL on the session ``nginx``
      (file name ``<name>.db`` in its root).
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path
from typing import Dict, Union

try:
    import pytest
except ImportError:  # usable from benchmarks without pytest
    pytest = None  # type: ignore[assignment]

PAGE_SIZES = (1024, 4096, 65536)

_SCHEMA = """
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, category INT, price REAL, payload BLOB);
CREATE INDEX items_category_price ON items(category, price);
CREATE UNIQUE INDEX items_name ON items(name);
CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT, body TEXT);
CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
"""

_WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
          "pi rho sigma tau upsilon phi chi psi omega").split()


def _fill(con: sqlite3.Connection, rng: random.Random, first_id: int, rows: int, page_size: int) -> None:
    doc_every = 3 if page_size <= 4096 else 10  # keeps the 64 KiB-page file small
    items = []
    docs = []
    kv = []
    for i in range(first_id, first_id + rows):
        payload = rng.randbytes(page_size * 2 + 17) if i % 7 == 0 else rng.randbytes(rng.randint(0, 64))
        items.append((i, f"item-{i:08d}", rng.randint(0, 49), round(rng.uniform(0, 1000), 2), payload))
        if i % doc_every == 0:
            n_words = page_size // 5 + rng.randint(0, 200)  # > one page: overflow pages
            docs.append((i, f"doc {i}", " ".join(rng.choice(_WORDS) for _ in range(n_words))))
        kv.append((f"key-{rng.getrandbits(48):012x}-{i}", rng.randint(-(10**12), 10**12)))
    con.executemany("INSERT INTO items VALUES (?,?,?,?,?)", items)
    con.executemany("INSERT INTO docs VALUES (?,?,?)", docs)
    con.executemany("INSERT INTO kv VALUES (?,?)", kv)


def make_database(path: Union[str, Path], *, page_size: int = 4096, rows: int = 2000,
                  journal_mode: str = "delete", seed: int = 0) -> Path:
    """Write a deterministic database (see the module docstring) and return its path."""
    path = Path(path)
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    rng = random.Random(seed)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute(f"PRAGMA page_size={int(page_size)}")
        con.execute(f"PRAGMA journal_mode={journal_mode}")
        con.execute("BEGIN")
        for statement in _SCHEMA.split(";"):  # not executescript: it would commit the BEGIN
            if statement.strip():
                con.execute(statement)
        _fill(con, rng, 1, rows, page_size)
        con.execute("COMMIT")
        if journal_mode.lower() == "wal":
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        actual = con.execute("PRAGMA page_size").fetchone()[0]
        if actual != page_size:
            raise RuntimeError(f"page size {page_size} not applied (got {actual})")
    finally:
        con.close()
    return path


def make_sized_database(path: Union[str, Path], min_bytes: int, *, page_size: int = 4096,
                        seed: int = 0, batch: int = 5000) -> Path:
    """The same schema grown in batches until the file has at least ``min_bytes``."""
    path = make_database(path, page_size=page_size, rows=batch, seed=seed)
    rng = random.Random(seed + 1)
    next_id = batch + 1
    while os.path.getsize(path) < min_bytes:
        con = sqlite3.connect(path)
        with con:
            _fill(con, rng, next_id, batch, page_size)
        con.close()
        next_id += batch
    return path


def standard_databases(directory: Union[str, Path]) -> Dict[str, Path]:
    """The four test databases: one per page size, and one left in WAL mode."""
    directory = Path(directory)
    out = {f"p{ps}": make_database(directory / f"p{ps}.db", page_size=ps, rows=1500 if ps < 65536 else 200)
           for ps in PAGE_SIZES}
    out["wal"] = make_database(directory / "wal.db", page_size=4096, rows=1500, journal_mode="wal", seed=1)
    return out


if pytest is not None:

    @pytest.fixture(scope="session")
    def databases(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
        """Generated databases by name: p1024, p4096, p65536, wal (see the module docstring)."""
        return standard_databases(tmp_path_factory.mktemp("databases"))

    @pytest.fixture(scope="session")
    def served_databases(nginx, databases: Dict[str, Path]) -> Dict[str, str]:
        """The generated databases placed in the session nginx; name -> URL."""
        urls = {}
        for name, path in databases.items():
            nginx.place(f"{name}.db", path)
            urls[name] = nginx.url(f"{name}.db")
        return urls
