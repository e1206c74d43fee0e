"""``generate_series(start, stop[, step])`` for SQLite builds that lack it.

The stdlib's SQLite (3.40 on Debian) does not ship the series extension, and a
table-valued function cannot be defined through the ``sqlite3`` module. So each call
in the SQL text is rewritten into an equivalent recursive-CTE subquery exposing the
``value`` column. Every argument appears exactly once and in its original order, so
positional ``?`` parameters keep their numbering.

Semantics follow SQLite's series.c for the common forms: ``stop`` defaults to
4294967295, ``step`` to 1, step 0 means 1, and a negative step yields the same values as
``abs(step)`` in descending order. The hidden ``start/stop/step`` columns are not
available as constraints.
"""

from __future__ import annotations

import sqlite3
from typing import List, Optional, Tuple

_NAME = "generate_series"


def has_native_series(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT value FROM generate_series(1, 1)").fetchall()
        return True
    except sqlite3.OperationalError:
        return False


def _skip_token(sql: str, i: int) -> int:
    """If a string/identifier literal or comment starts at ``i``, return its end, else ``i``."""
    c = sql[i]
    if c in "'\"`":
        j = i + 1
        while j < len(sql):
            if sql[j] == c:
                if j + 1 < len(sql) and sql[j + 1] == c:  # doubled quote escape
                    j += 2
                    continue
                return j + 1
            j += 1
        return len(sql)
    if c == "[":
        j = sql.find("]", i + 1)
        return len(sql) if j < 0 else j + 1
    if sql.startswith("--", i):
        j = sql.find("\n", i)
        return len(sql) if j < 0 else j + 1
    if sql.startswith("/*", i):
        j = sql.find("*/", i + 2)
        return len(sql) if j < 0 else j + 2
    return i


def _split_args(sql: str, open_paren: int) -> Optional[Tuple[List[str], int]]:
    """Arguments of the call whose ``(`` is at ``open_paren``; returns (args, index after ``)``)."""
    depth = 0
    args: List[str] = []
    start = open_paren + 1
    i = open_paren
    while i < len(sql):
        j = _skip_token(sql, i)
        if j != i:
            i = j
            continue
        c = sql[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i])
                return args, i + 1
        elif c == "," and depth == 1:
            args.append(sql[start:i])
            start = i + 1
        i += 1
    return None


def _subquery(args: List[str]) -> str:
    start = args[0].strip()
    stop = args[1].strip() if len(args) > 1 else "4294967295"
    step = args[2].strip() if len(args) > 2 else "1"
    return (
        "(WITH RECURSIVE __gs_args(a, b, c) AS (SELECT "
        f"({start}), ({stop}), coalesce(nullif(({step}), 0), 1)), "
        "__gs(value, b, s) AS (SELECT a, b, abs(c) FROM __gs_args WHERE a <= b "
        "UNION ALL SELECT value + s, b, s FROM __gs WHERE value + s <= b) "
        "SELECT value FROM __gs ORDER BY "
        "CASE WHEN (SELECT c FROM __gs_args) < 0 THEN -value ELSE value END)"
    )


def rewrite(sql: str) -> str:
    """Replace every ``generate_series(...)`` call outside literals and comments."""
    if _NAME not in sql.lower():
        return sql
    out: List[str] = []
    i = 0
    n = len(sql)
    low = sql.lower()
    while i < n:
        j = _skip_token(sql, i)
        if j != i:
            out.append(sql[i:j])
            i = j
            continue
        word_start = i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] in "_$")
        if word_start and low.startswith(_NAME, i):
            k = i + len(_NAME)
            if k < n and (sql[k].isalnum() or sql[k] in "_$"):
                out.append(sql[i:k])
                i = k
                continue
            while k < n and sql[k].isspace():
                k += 1
            if k < n and sql[k] == "(":
                parsed = _split_args(sql, k)
                if parsed is not None and 1 <= len(parsed[0]) <= 3 and parsed[0][0].strip():
                    args, end = parsed
                    out.append(_subquery([rewrite(a) for a in args]))
                    i = end
                    continue
        out.append(sql[i])
        i += 1
    return "".join(out)
