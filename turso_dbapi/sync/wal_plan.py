"""The plan of a WAL replica's pull (step 3 of ``sync.wal_apply``): the new revision as the
side replay starts from it. The pulled pages stay in the stage file (``sync.stage``), read by
page offset when the replay or the append needs them, so a large pull never sits in memory;
only page 1 and the local pages reverted to their synced version are kept as bytes.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from typing import Dict, Set

from ..errors import OperationalError
from ..storage import header, wal_writer
from ..storage.pagestore import PG_LOCAL, PageStore
from .stage import Staged

# SQLite < 3.32 sends no checkpoint brackets (SQLITE_FCNTL_CKPT_START/_DONE): a checkpoint
# then writes pulled frames into the local layer too (vfs.c rule (18)), and the synced layer
# keeps an OLDER version of those pages: a local page's synced version must be fetched.
CKPT_SIGNALS = sqlite3.sqlite_version_info >= (3, 32, 0)


def page1_for_wal(base: bytes, visible_cookie: int, db_size: int) -> bytes:
    """The new revision's page 1 for a WAL replica: WAL format bytes, its size (valid: the
    change counter equals version-valid-for; no counter bump, WAL readers never look at it),
    a schema cookie past the visible one (every connection re-reads the schema)."""
    b = bytearray(header.wal(base))
    counter = struct.unpack_from(">I", b, header.CHANGE_COUNTER)[0]
    struct.pack_into(">I", b, header.VERSION_VALID_FOR, counter)
    struct.pack_into(">I", b, header.IN_HEADER_SIZE, db_size)
    cookie = (max(visible_cookie, struct.unpack_from(">I", b, header.SCHEMA_COOKIE)[0]) + 1) & 0xFFFFFFFF
    struct.pack_into(">I", b, header.SCHEMA_COOKIE, cookie)
    return bytes(b)


def local_layer(store: PageStore) -> set:
    out = set()
    p = store.first_local(1)
    while p:
        out.add(p)
        p = store.first_local(p + 1)
    return out


class Plan:
    """The new revision as the side replay starts from it (step 3 of the module docstring):
    ``pages``: every pulled page and every page the replica changed locally (local frames
    of the WAL, the local layer) reverted to its synced version, page 1 patched; every
    other page reads as its synced version (``page_of``). ``synced_pages``: the size of
    the revision the replica is at."""

    def __init__(self, store: PageStore, replica: str, conn_id: int, staged: Staged,
                 state: wal_writer.WalState, visible_cookie: int, synced_pages: int):
        self.store, self.replica, self.conn_id = store, replica, conn_id
        self.synced_pages = synced_pages
        db_size = self.db_size = staged.db_size
        local_frames, self.synced_frames = wal_writer.wal_pages(replica, state, store.page_size)
        # the pulled pages stay in the stage file (a large pull never sits in memory): their
        # offsets there; ``pages`` holds page 1 and the reverted local pages only
        self.pulled: Dict[int, int] = {p: at for p, at in staged.offsets().items() if p <= db_size}
        self.fd = os.open(staged.path, os.O_RDONLY)
        try:
            self.pages = self._plan(staged, local_frames, visible_cookie)
        except BaseException:
            self.close()
            raise

    def _plan(self, staged: Staged, local_frames: Set[int], visible_cookie: int) -> Dict[int, bytes]:
        store, replica, conn_id, db_size = self.store, self.replica, self.conn_id, self.db_size
        pulled = self.pulled
        for p in sorted(pulled):  # old_versions_needed, made sure of: the old pin serves them
            if p <= store.remote_pages and p not in self.synced_frames and not store.is_present(p):
                store.on_miss(conn_id, p, 1)
                if not store.is_present(p):
                    raise OperationalError(f"pull: page {p} of {replica} could not be fetched at the "
                                           "replica's revision; nothing was changed: pull again")
        pages: Dict[int, bytes] = {}
        for p in sorted(local_frames | local_layer(store)):
            if p <= db_size and p not in pulled:
                pages[p] = self.synced_version(p)
        base1 = self.staged_page(1) if 1 in pulled else pages.get(1) or self.synced_version(1)
        pages[1] = page1_for_wal(base1, visible_cookie, db_size)
        return pages

    def staged_page(self, p: int) -> bytes:
        data = os.pread(self.fd, self.store.page_size, self.pulled[p])
        if len(data) != self.store.page_size:
            raise OperationalError(f"pull: the staged page {p} of {self.replica} is cut short; "
                                   "nothing was changed: pull again")
        return data

    def planned(self) -> Set[int]:
        """The pages the plan sets (pulled, reverted, page 1)."""
        return set(self.pulled) | set(self.pages)

    def frame(self, frames: wal_writer.FileFrames, p: int) -> None:
        """Page ``p`` of the plan into ``frames``: its bytes, or its offset in the stage."""
        if p in self.pages:
            frames.add(p, self.pages[p])
        else:
            frames.add(p, offset=self.pulled[p])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def synced_version(self, p: int) -> bytes:
        """The page in the synced revision (unchanged by the pull): the latest synced frame,
        else the synced layer, else fetched (the old pin serves it)."""
        if p in self.synced_frames:
            return self.synced_frames[p]
        store = self.store
        if not CKPT_SIGNALS and store.state(p) & PG_LOCAL:  # the synced layer may be older
            raise OperationalError(f"pull: page {p} of {self.replica} became local while the pull was "
                                   "planned (a checkpoint, without SQLite's checkpoint signals); "
                                   "nothing was changed: pull again")
        data = store.read_synced(p)
        if data is None:
            if p <= self.synced_pages:  # a page of the synced revision no checkpoint brought yet
                store.raise_remote_size(self.synced_pages * store.page_size)
            store.on_miss(self.conn_id, p, 1)
            data = store.read_synced(p)
        if data is None:
            raise OperationalError(f"pull: the synced version of page {p} of {self.replica} could not "
                                   "be fetched; nothing was changed: pull again")
        return data

    def page_of(self, p: int) -> bytes:
        """Page ``p`` of the new revision before the replay (what the side view reads)."""
        data = self.pages.get(p)
        if data is not None:
            return data
        return self.staged_page(p) if p in self.pulled else self.synced_version(p)
