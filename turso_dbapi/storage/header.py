"""The bytes of the database header (page 1, offsets 0-99) this driver writes.

Bytes 18 (write version) and 19 (read version) say the journal mode: 1/1 rollback journal,
2/2 WAL. A Turso server's page 1 says WAL; every page 1 that enters a rollback-journal
replica (``journal_mode="delete"``, HTTP-range caches) goes through ``rollback_journal``; a
WAL replica (a new Turso replica's default) keeps 2/2 (``sync.wal_plan.page1_for_wal``).
"""

from __future__ import annotations

WRITE_VERSION = 18
READ_VERSION = 19
CHANGE_COUNTER = 24  # u32 big-endian; moved at every apply (sync.apply)
IN_HEADER_SIZE = 28  # u32 big-endian: the database size in pages
SCHEMA_COOKIE = 40  # u32 big-endian; moved at every apply, so connections re-read the schema
VERSION_VALID_FOR = 92  # u32 big-endian: the change counter the in-header size is valid for
ROLLBACK_JOURNAL = 1
WAL = 2


def wal(page: bytes) -> bytes:
    """Page 1 with the file format bytes (18 write, 19 read) set to 2: WAL."""
    b = bytearray(page)
    b[WRITE_VERSION] = b[READ_VERSION] = WAL
    return bytes(b)


def rollback_journal(page: bytes) -> bytes:
    """Page 1 with the file format bytes (18 write, 19 read) set to 1: rollback journal."""
    if page[WRITE_VERSION] == ROLLBACK_JOURNAL and page[READ_VERSION] == ROLLBACK_JOURNAL:
        return page
    b = bytearray(page)
    b[WRITE_VERSION] = b[READ_VERSION] = ROLLBACK_JOURNAL
    return bytes(b)
