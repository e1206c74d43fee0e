"""Exceptions: the stdlib ``sqlite3`` classes themselves, plus a few subclasses.

``except sqlite3.Error`` keeps catching everything this driver raises, because every new
error derives from the stdlib class of the matching kind.
"""

from __future__ import annotations

import sqlite3
import sys

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


# -- the code table (STYLE §1: one table) ------------------------------------------------
#
# The extended result codes this driver's errors carry or its C core returns to SQLite
# (``_native/pagestore.h`` defines the same numbers; tests/test_errors.py checks them).
# sqlite3 exposes these names only from 3.11 on, so they are spelled out here.

SQLITE_IOERR = 10
SQLITE_IOERR_READ = SQLITE_IOERR | (1 << 8)  # 266: a remote page could not be read
SQLITE_IOERR_SHORT_READ = SQLITE_IOERR | (2 << 8)
SQLITE_IOERR_WRITE = SQLITE_IOERR | (3 << 8)
SQLITE_IOERR_FSYNC = SQLITE_IOERR | (4 << 8)
SQLITE_IOERR_TRUNCATE = SQLITE_IOERR | (6 << 8)
SQLITE_IOERR_NOMEM = SQLITE_IOERR | (12 << 8)
SQLITE_IOERR_DATA = SQLITE_IOERR | (32 << 8)

CODE_NAMES = {
    SQLITE_IOERR: "SQLITE_IOERR",
    SQLITE_IOERR_READ: "SQLITE_IOERR_READ",
    SQLITE_IOERR_SHORT_READ: "SQLITE_IOERR_SHORT_READ",
    SQLITE_IOERR_WRITE: "SQLITE_IOERR_WRITE",
    SQLITE_IOERR_FSYNC: "SQLITE_IOERR_FSYNC",
    SQLITE_IOERR_TRUNCATE: "SQLITE_IOERR_TRUNCATE",
    SQLITE_IOERR_NOMEM: "SQLITE_IOERR_NOMEM",
    SQLITE_IOERR_DATA: "SQLITE_IOERR_DATA",
}


def error_name(code: int) -> str:
    """The name of an extended result code of the table above."""
    return CODE_NAMES[code]


def is_io_error_by_code(exc: BaseException) -> bool:
    """An SQLITE_IOERR_* by its ``sqlite_errorcode`` (3.11+ errors carry it)."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_IOERR


def is_io_error_by_message(exc: BaseException) -> bool:
    """An SQLITE_IOERR_* by SQLite's message for every one of them. 3.9/3.10 exceptions
    carry no code, and the message is the only signal Python gets there."""
    return "disk I/O error" in str(exc)


is_io_error = is_io_error_by_code if sys.version_info >= (3, 11) else is_io_error_by_message


# -- the driver's own errors ----------------------------------------------------------------


class RemoteError(sqlite3.OperationalError):
    """A remote database could not be read: network failure, bad status, bad reply.

    Like the errors sqlite3 raises (3.11+), it carries ``sqlite_errorcode`` and
    ``sqlite_errorname``: SQLITE_IOERR_READ when a page read failed (what SQLite saw: the
    VFS returned it; the default, since most remote failures surface through a read), and
    SQLITE_IOERR when the failure was outside any page read: ``connect()`` (open,
    bootstrap, a full download) and ``pull()`` stamp the errors they raise with it
    (``outside_a_read``).
    """

    code = SQLITE_IOERR_READ

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None,
                 code: int | None = None):
        super().__init__(message)
        self.url = url  # always redacted by the raiser
        self.status = status
        self._set_code(self.code if code is None else code)

    def _set_code(self, code: int) -> None:
        self.sqlite_errorcode = code
        self.sqlite_errorname = error_name(code)

    def outside_a_read(self) -> RemoteError:
        """Mark this error as raised outside any page read (SQLITE_IOERR); returns it."""
        self._set_code(SQLITE_IOERR)
        return self


class RemoteChangedError(RemoteError):
    """The remote file was replaced mid-session: its version no longer matches the pinned one.

    Never mixed: pages of the new version are refused; reopen to read the new version.
    """


class HistoryResetError(RemoteChangedError):
    """A Turso server no longer has the history a replica is based on (its page log was
    reset, so its revision numbers started again): the replica's revision can no longer be
    read there, and pulling would mix two histories. Nothing is mixed or changed; bootstrap
    a fresh replica (another local_path, or move the replica files away)."""


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
