"""Exceptions: the stdlib ``sqlite3`` classes themselves, plus a few subclasses.

``except sqlite3.Error`` keeps catching everything this driver raises, because every new
error derives from the stdlib class of the matching kind.
"""

from __future__ import annotations

import sqlite3

Warning = sqlite3.Warning
Error = sqlite3.Error
InterfaceError = sqlite3.InterfaceError
DatabaseError = sqlite3.DatabaseError
DataError = sqlite3.DataError
OperationalError = sqlite3.OperationalError
IntegrityError = sqlite3.IntegrityError
InternalError = sqlite3.InternalError
ProgrammingError = sqlite3.ProgrammingError
NotSupportedError = sqlite3.NotSupportedError


SQLITE_IOERR_READ = 10 | (1 << 8)  # 266; sqlite3 names it only from 3.11 on


class RemoteError(sqlite3.OperationalError):
    """A remote database could not be read: network failure, bad status, bad reply."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url  # always redacted by the raiser
        self.status = status
        # Same attributes as the errors sqlite3 raises (3.11+), so handlers can rely on them.
        # The extended code of the failure SQLite saw: the VFS returns SQLITE_IOERR_READ.
        self.sqlite_errorcode = SQLITE_IOERR_READ
        self.sqlite_errorname = "SQLITE_IOERR_READ"


class RemoteChangedError(RemoteError):
    """The remote file was replaced mid-session: its version no longer matches the pinned one.

    Never mixed: pages of the new version are refused; reopen to read the new version.
    """


class ProtocolError(RemoteError):
    """The server answered with something the protocol does not allow."""


class RangeNotSupportedError(RemoteError):
    """The server ignores HTTP ``Range`` (answers 200 with the whole file) or compresses the
    reply, so pages cannot be read lazily from it."""


class PushRejectedError(sqlite3.OperationalError):
    """The server refused a statement of a push batch; the batch was rolled back whole.

    ``table`` and ``statement`` name the step, ``code`` is the server's error code."""

    def __init__(self, message: str, *, table: str = "", statement: str = "", code: str = ""):
        super().__init__(message)
        self.table, self.statement, self.code = table, statement, code


class PushConstraintError(PushRejectedError, sqlite3.IntegrityError):
    """A push batch violated a constraint on the server (UNIQUE, NOT NULL, CHECK, ...)."""
