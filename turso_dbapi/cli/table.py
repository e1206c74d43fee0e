"""Render query results as an aligned text table (what the shell prints).

    +----+-------+
    | id | name  |
    +----+-------+
    |  1 | alice |
    |  2 | NULL  |
    +----+-------+

The layout of the ``sqlite3`` CLI's ``.mode table``: numbers right-aligned, text left,
NULL spelled out (an empty string and NULL must not look alike), blobs as ``x'..'``.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Iterable, List, Sequence

BLOB_SHOWN = 32  # bytes of a blob shown before "..."


def cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        text = data[:BLOB_SHOWN].hex()
        return f"x'{text}'" + ("..." if len(data) > BLOB_SHOWN else "")
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    # Keep one row on one line: control characters would break the grid.
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def render(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The table as one string (no trailing newline)."""
    rows = list(rows)
    shown: List[List[str]] = [[cell(v) for v in row] for row in rows]
    numeric = [
        all(
            isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
            for r in rows
            if r[i] is not None
        )
        and any(r[i] is not None for r in rows)
        for i in range(len(headers))
    ]
    widths = [width(h) for h in headers]
    for row in shown:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], width(text))

    def line(texts: Sequence[str], right: Sequence[bool]) -> str:
        parts = []
        for text, w, r in zip(texts, widths, right):
            pad = " " * (w - width(text))
            parts.append(pad + text if r else text + pad)
        return "| " + " | ".join(parts) + " |"

    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [rule, line(headers, [False] * len(headers)), rule]
    out.extend(line(row, numeric) for row in shown)
    out.append(rule)
    return "\n".join(out)
