"""``generate_series`` rewriting (server/sql_series.py): same rows as SQLite's series.c for
the forms it documents, arguments kept in order, literals and comments untouched."""

from __future__ import annotations

import sqlite3

import pytest

from turso_dbapi.server.sql_series import has_native_series, rewrite


def rows(sql: str, params=()):
    return sqlite3.connect(":memory:").execute(rewrite(sql), params).fetchall()


@pytest.mark.parametrize("sql, expected", [
    ("SELECT value FROM generate_series(1, 5)", [1, 2, 3, 4, 5]),
    ("SELECT value FROM generate_series(1, 10, 3)", [1, 4, 7, 10]),
    ("SELECT value FROM generate_series(5, 1)", []),
    ("SELECT value FROM generate_series(1, 3, 0)", [1, 2, 3]),  # step 0 means 1
    ("SELECT value FROM generate_series(1, 10, -3)", [10, 7, 4, 1]),  # descending, same values
    ("SELECT value FROM GENERATE_SERIES(2, 4)", [2, 3, 4]),
])
def test_values_follow_sqlite_series(sql, expected):
    assert [r[0] for r in rows(sql)] == expected


def test_stop_defaults_to_4294967295():
    assert rows("SELECT max(value) FROM (SELECT value FROM generate_series(4294967290))") == [(4294967295,)]


def test_positional_parameters_keep_their_numbering():
    got = rows("SELECT ?, value FROM generate_series(?, ?) WHERE value > ?", ("x", 1, 4, 2))
    assert got == [("x", 3), ("x", 4)]


def test_literals_comments_and_other_names_are_untouched():
    for sql in ("SELECT 'generate_series(1, 2)'", "SELECT 1 -- generate_series(1, 2)",
                "SELECT my_generate_series(1)", "SELECT generate_series_x(1)"):
        assert rewrite(sql) == sql


def test_nested_calls_are_rewritten_too():
    got = rows("SELECT value FROM generate_series((SELECT max(value) FROM generate_series(1, 3)), 5)")
    assert [r[0] for r in got] == [3, 4, 5]


def test_sql_without_the_name_is_returned_as_is():
    sql = "SELECT 1"
    assert rewrite(sql) is sql


def test_has_native_series_tells_whether_the_build_has_it():
    con = sqlite3.connect(":memory:")
    assert isinstance(has_native_series(con), bool)
