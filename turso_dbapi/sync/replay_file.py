"""The replay file of a rebase, ``<replica>-tdbreplay``: the unpushed local changes, set
aside before the local layer is dropped (rebase.py step 1), replayed on the new revision
(step 4).

Format 3 is a SQLite database, opened with the stdlib's default VFS (a private file of
this replica, never a replica itself)::

    doc(json)    one row: {"format": 3, "gen", "before", "after", "tables"}; tables[i] is
                 [name, columns, pk, kind, rowid_name, without_rowid] and its rows are r<i>
    r<i>(m, present, k0.., c0..)   one row per changed key: m its newest log id, present 0
                 for a delete, the key's values, the row's columns (NULL for a delete).
                 The columns have no type: every value is kept exactly as it was.

Why SQLite and not JSON (format 2): rows go in with ``executemany`` fed by a cursor over
the replica and come out as a cursor fed to the replay's ``executemany``, so a row never
becomes a Python object per value (JSON with base64 blobs cost ~4 us per row each way;
10k changes: 60 ms of a 150 ms rebase). The file is written under a temporary name,
committed, fsynced, renamed and the directory fsynced: it exists whole or not at all.
Format 2 files (an apply a crash interrupted under an earlier version) are still read.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
from urllib.parse import quote
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from .._util.atomic import publish
from .capture import TableInfo
from .changes import Change

FORMAT = 3
_SQLITE_MAGIC = b"SQLite format 3\x00"


def is_sqlite(path: str) -> bool:
    """A format 3 replay file (not a format 2 JSON one, nor missing)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except FileNotFoundError:
        return False


def key_width(info: TableInfo) -> int:
    return len(info.pk) if info.kind == "pk" else 1


def _columns(info: TableInfo) -> List[str]:
    return ["m", "present"] + [f"k{j}" for j in range(key_width(info))] + [f"c{j}" for j in range(len(info.columns))]


class Writer:
    """Builds the file under a temporary name; ``finish`` publishes it.

    Standalone (``attach_to`` None) it writes through a connection of its own, in one
    transaction, the rows handed to ``table`` (or selected from ``source``). Attached, it
    is ``tdb_out`` of the replica's connection ``attach_to`` (attached here, outside any
    transaction): rows selected from the replica go in with INSERT ... SELECT, no Python
    per row; the caller runs the transaction around ``table`` and ``write_doc`` and calls
    ``detach`` after it committed."""

    def __init__(self, path: str, attach_to: Optional[sqlite3.Connection] = None):
        self.path = path
        self.tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
        self.tables: List[List[Any]] = []
        self.rows = 0
        self.attached = attach_to is not None
        if attach_to is not None:
            self.db, self.schema = attach_to, "tdb_out."
            attach_to.execute("ATTACH DATABASE ? AS tdb_out", (f"file:{quote(self.tmp)}",))
            prefix = "tdb_out."
        else:
            self.db, self.schema = sqlite3.connect(self.tmp, isolation_level=None), ""
            prefix = ""
        # No journal and no syncs of SQLite's own: the file is fsynced once, then renamed.
        self.db.execute(f"PRAGMA {prefix}journal_mode=OFF")
        self.db.execute(f"PRAGMA {prefix}synchronous=OFF")
        if attach_to is None:
            self.db.execute("BEGIN")

    def table(self, info: TableInfo, without_rowid: bool, rows: Iterable[Tuple[Any, ...]] = (),
              select: Optional[Tuple[sqlite3.Connection, str, Tuple[Any, ...]]] = None) -> None:
        """Table ``info``'s changes: tuples (m, present, key..., columns...), given as
        ``rows`` or as ``select`` = (connection, SQL, parameters) that yields them."""
        i = len(self.tables)
        cols = _columns(info)
        target = f"{self.schema}r{i}"
        self.db.execute(f"CREATE TABLE {target}({', '.join(cols)})")
        if select is not None and self.attached and select[0] is self.db:
            cur = self.db.execute(f"INSERT INTO {target} {select[1]}", select[2])
        else:
            source = select[0].execute(select[1], select[2]) if select is not None else rows
            cur = self.db.executemany(f"INSERT INTO {target} VALUES ({', '.join('?' * len(cols))})", source)
        self.rows += max(cur.rowcount, 0)
        self.tables.append([info.name, list(info.columns), list(info.pk), info.kind, info.rowid_name,
                            without_rowid])

    def write_doc(self, doc: Dict[str, Any]) -> None:
        doc = dict(doc, format=FORMAT, tables=self.tables)
        self.db.execute(f"CREATE TABLE {self.schema}doc(json TEXT)")
        self.db.execute(f"INSERT INTO {self.schema}doc VALUES (?)", (json.dumps(doc, separators=(",", ":")),))

    def detach(self, durable: bool = True) -> None:
        """Attached: after the caller's COMMIT, detach and make the file durable."""
        self.db.execute("DETACH DATABASE tdb_out")
        self.attached = False
        if durable:
            self._fsync()

    def keep(self, doc: Dict[str, Any]) -> str:
        """Standalone: commit with ``doc`` and leave the file at ``tmp``, neither fsynced nor
        published (a scratch file, read at once; ``discard`` removes it); its path."""
        self.write_doc(doc)
        self.db.execute("COMMIT")
        self.db.close()
        return self.tmp

    def _fsync(self) -> None:
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def finish(self, doc: Optional[Dict[str, Any]] = None) -> int:
        """Publish the file (standalone: with ``doc``, committed and fsynced here); the
        number of rows."""
        if doc is not None:
            self.write_doc(doc)
            self.db.execute("COMMIT")
            self.db.close()
            self._fsync()
        publish(self.tmp, self.path)
        return self.rows

    def discard(self) -> None:
        if self.attached:
            try:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                self.db.execute("DETACH DATABASE tdb_out")
            except sqlite3.Error:
                pass
            self.attached = False
        elif not self.schema:
            self.db.close()
        try:
            os.remove(self.tmp)
        except FileNotFoundError:
            pass


# Values of format 2 (JSON): int, float, str and None as they are; a blob as {"b": base64}.
def decode_values(values: Any) -> Tuple[Any, ...]:
    return tuple(base64.b64decode(v["b"]) if isinstance(v, dict) else v for v in values)


class Reader:
    """An open replay file: ``doc`` (gen, before, after), ``tables`` ((TableInfo,
    without_rowid) in file order) and their rows. ``close`` when done."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
        self.db: Optional[sqlite3.Connection] = None
        self._legacy_rows: List[Any] = []
        if head == _SQLITE_MAGIC:
            self.db = sqlite3.connect(path, isolation_level=None)
            self.doc = json.loads(self.db.execute("SELECT json FROM doc").fetchone()[0])
            tables = self.doc["tables"]
        else:  # format 2: one JSON document
            with open(path, encoding="utf-8") as f:
                self.doc = json.load(f)
            tables = [[name] + t for name, t in self.doc.get("tables", {}).items()]
            self._legacy_rows = self.doc.get("rows", [])
        self.tables: List[Tuple[TableInfo, bool]] = [
            (TableInfo(t[0], tuple(t[1]), tuple(t[2]), t[3], t[4]), bool(t[5])) for t in tables]

    @property
    def legacy(self) -> bool:
        return self.db is None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def count(self, i: int, floor: int) -> int:
        assert self.db is not None
        return int(self.db.execute(f"SELECT count(*) FROM r{i} WHERE m > ?", (floor,)).fetchone()[0])

    def select(self, i: int, what: List[str], floor: int, where: str = "1") -> sqlite3.Cursor:
        """Columns ``what`` (names of ``r<i>``) of the rows above ``floor`` matching
        ``where``, oldest change first."""
        assert self.db is not None
        return self.db.execute(f"SELECT {', '.join(what)} FROM r{i} WHERE m > ? AND ({where}) ORDER BY m",
                               (floor,))

    def keys_with(self, table: str, m: int) -> Set[Tuple[Any, ...]]:
        """The keys of ``table``'s rows whose change id is ``m`` (a tail's: the largest)."""
        for i, (info, _) in enumerate(self.tables):
            if info.name == table:
                cols = [f"k{j}" for j in range(key_width(info))]
                return {tuple(r) for r in self.select(i, cols, m - 1)}
        return set()

    def changes(self, i: int, floor: int) -> Iterator[Change]:
        """Table i's rows above ``floor`` as ``Change`` objects (the per-row paths)."""
        info, _ = self.tables[i]
        nk = key_width(info)
        for r in self.select(i, ["*"], floor):
            row = dict(zip(info.columns, r[2 + nk:])) if r[1] else None
            yield Change(info.name, tuple(r[2:2 + nk]), row, r[0])

    def all_changes(self, floor: int) -> List[Tuple[TableInfo, bool, Change]]:
        """Every change above ``floor``, of every table, oldest first."""
        out: List[Tuple[TableInfo, bool, Change]] = []
        if self.db is None:
            by_name = {info.name: (info, wr) for info, wr in self.tables}
            for table, key, values, change_id in self._legacy_rows:
                if change_id > floor:
                    info, wr = by_name[table]
                    row = None if values is None else dict(zip(info.columns, decode_values(values)))
                    out.append((info, wr, Change(table, decode_values(key), row, change_id)))
            return out
        for i, (info, wr) in enumerate(self.tables):
            out.extend((info, wr, ch) for ch in self.changes(i, floor))
        out.sort(key=lambda x: x[2].change_id)
        return out
