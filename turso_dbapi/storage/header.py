"""The bytes of the database header (page 1, offsets 0-99) this driver writes.

A replica runs in rollback-journal mode (DESIGN §2.5): bytes 18 (write version) and 19
(read version) are 1. A Turso server's page 1 says WAL (2/2); every page 1 that enters a
rollback-journal replica goes through ``rollback_journal``; a replica switched to WAL keeps
2/2 (``sync.wal_plan.page1_for_wal``).
"""

from __future__ import annotations

WRITE_VERSION = 18
READ_VERSION = 19
CHANGE_COUNTER = 24  # u32 big-endian; moved at every apply (sync.apply)
IN_HEADER_SIZE = 28  # u32 big-endian: the database size in pages
SCHEMA_COOKIE = 40  # u32 big-endian; moved at every apply, so connections re-read the schema
VERSION_VALID_FOR = 92  # u32 big-endian: the change counter the in-header size is valid for
ROLLBACK_JOURNAL = 1


def rollback_journal(page: bytes) -> bytes:
    """Page 1 with the file format bytes (18 write, 19 read) set to 1: rollback journal."""
    if page[WRITE_VERSION] == ROLLBACK_JOURNAL and page[READ_VERSION] == ROLLBACK_JOURNAL:
        return page
    b = bytearray(page)
    b[WRITE_VERSION] = b[READ_VERSION] = ROLLBACK_JOURNAL
    return bytes(b)
