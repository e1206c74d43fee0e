"""Plain ranged GETs of the served database file (``GET /<file name>``).

Served from the page log, not the file: always exactly one revision's bytes, even while a
checkpoint is pending or a write is in progress. ``Range`` gives 206 + ``Content-Range``
(416 past the end), the ``ETag`` changes with every revision, ``If-Range``/``If-Match``
compare against it.
"""

from __future__ import annotations

import re
from typing import Any

from ..protocol import sync_wire as wire
from .page_log import read_bytes

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class PreconditionFailed(Exception):
    """If-Match named another revision."""


def serve_file(handler: Any, head_only: bool) -> None:
    """Answer a GET/HEAD of the database file (the handler's ``_send``, ``headers``)."""
    # Served from the page log, not the file: always exactly one revision's bytes, even
    # while a checkpoint is pending or a write is in progress.
    db = handler.server.db
    db.refresh()
    rev = db.revision
    size = db.log.db_size_at(rev) * wire.PAGE_SIZE
    etag = f'"{db.log.instance}-{rev}"'
    range_header = handler.headers.get("Range")
    if_range = handler.headers.get("If-Range")
    if if_range is not None and if_range != etag:
        range_header = None  # the client's copy is stale: send the whole file
    if_match = handler.headers.get("If-Match")
    if if_match not in (None, "*") and etag not in [t.strip() for t in if_match.split(",")]:
        raise PreconditionFailed("Precondition Failed: the database changed")
    span = _parse_range(range_header, size) if range_header else None
    if span == "unsatisfiable":
        handler._send(
            416,
            b"Range Not Satisfiable",
            headers=[("Content-Range", f"bytes */{size}")],
            head_only=head_only,
        )
        return
    start, end = span if isinstance(span, tuple) else (0, size)
    headers = [("ETag", etag), ("Accept-Ranges", "bytes")]
    status = 200
    if isinstance(span, tuple):
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        status = 206
    if head_only:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/vnd.sqlite3")
        handler.send_header("Content-Length", str(end - start))
        for k, v in headers:
            handler.send_header(k, v)
        handler.end_headers()
        return
    data = read_bytes(db.log, rev, start, end)
    handler._send(status, data, "application/vnd.sqlite3", headers)


def _parse_range(header: str, size: int):
    """``(start, end_exclusive)``, ``"unsatisfiable"``, or None to ignore (multi-range)."""
    m = _RANGE_RE.match(header.strip())
    if not m:
        return None
    first, last = m.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - n), size)
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or (last != "" and int(last) < start):
        return "unsatisfiable"
    return (start, end)
