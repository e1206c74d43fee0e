"""One error table (errors.py): the codes and names every error carries, the same numbers
as the C core returns to SQLite, and which code a remote failure carries where."""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path

import pytest

import turso_dbapi
from turso_dbapi import _native, errors


def test_the_table_matches_the_c_core_and_sqlite():
    header = (Path(_native.__file__).parent / "pagestore.h").read_text()
    defined = {}
    for name, extended in re.findall(r"#define TDB_(SQLITE_IOERR_\w+) \(10 \| \((\d+) << 8\)\)", header):
        defined[name] = 10 | (int(extended) << 8)
    assert defined
    for name, code in defined.items():
        assert getattr(errors, name) == code and errors.error_name(code) == name
        if hasattr(sqlite3, name):  # 3.11+
            assert getattr(sqlite3, name) == code
    assert errors.error_name(errors.SQLITE_IOERR) == "SQLITE_IOERR"


@pytest.mark.parametrize("cls", [errors.RemoteError, errors.RemoteChangedError,
                                 errors.ProtocolError, errors.RangeNotSupportedError])
def test_remote_errors_default_to_a_failed_page_read_and_can_say_otherwise(cls):
    err = cls("x", url="https://h/db")
    assert isinstance(err, sqlite3.OperationalError)
    assert (err.sqlite_errorcode, err.sqlite_errorname) == (266, "SQLITE_IOERR_READ")
    assert err.outside_a_read() is err
    assert (err.sqlite_errorcode, err.sqlite_errorname) == (10, "SQLITE_IOERR")
    assert cls("x", code=errors.SQLITE_IOERR).sqlite_errorname == "SQLITE_IOERR"


def test_a_failed_connect_is_not_a_page_read():
    with pytest.raises(turso_dbapi.RemoteError) as info:
        turso_dbapi.connect("http://127.0.0.1:9/x.db", retries=0, timeout=2)
    assert (info.value.sqlite_errorcode, info.value.sqlite_errorname) == (10, "SQLITE_IOERR")


def test_io_errors_are_told_by_code_from_3_11_and_by_message_before():
    io = sqlite3.OperationalError("disk I/O error")
    other = sqlite3.OperationalError("no such table: x")
    assert errors.is_io_error_by_message(io) and not errors.is_io_error_by_message(other)
    io.sqlite_errorcode = errors.SQLITE_IOERR_SHORT_READ
    assert errors.is_io_error_by_code(io) and not errors.is_io_error_by_code(other)
    expected = errors.is_io_error_by_code if sys.version_info >= (3, 11) else errors.is_io_error_by_message
    assert errors.is_io_error is expected
