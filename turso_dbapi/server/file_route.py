"""Plain ranged GETs of the served database file (``GET /<file name>``).

Served from the page log, not the file: always exactly one revision's bytes, even while a
checkpoint is pending or a write is in progress. ``Range`` gives 206 + ``Content-Range``
(416 past the end), the ``ETag`` changes with every revision, ``If-Range``/``If-Match``
compare against it. Several ranges (``bytes=a-b,c-d``) get one ``multipart/byteranges``
reply (RFC 9110 §14.6), as nginx and most CDNs answer, so clients can ask for pages that
are far apart in one round trip.
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
    spans = _parse_ranges(range_header, size) if range_header and "," in range_header else None
    if spans:
        _send_multipart(handler, db, rev, size, etag, spans, head_only)
        return
    span = _parse_range(range_header, size) if range_header and "," not in range_header else None
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


_BOUNDARY = "tdb-byteranges-3f1c9a"


def _parse_ranges(header: str, size: int):
    """The satisfiable ``(start, end_exclusive)`` of a multi-range header (None: ignore it)."""
    if not header.strip().startswith("bytes="):
        return None
    out = []
    for spec in header.strip()[6:].split(","):
        span = _parse_range("bytes=" + spec.strip(), size)
        if span is None:
            return None  # malformed: answer with the whole file, as for one bad range
        if span != "unsatisfiable":
            out.append(span)
    return out or None


def _send_multipart(handler: Any, db: Any, rev: int, size: int, etag: str, spans: Any, head_only: bool) -> None:
    parts = []
    for start, end in spans:
        head = (f"--{_BOUNDARY}\r\nContent-Type: application/vnd.sqlite3\r\n"
                f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n").encode()
        parts.append(head + read_bytes(db.log, rev, start, end) + b"\r\n")
    body = b"".join(parts) + f"--{_BOUNDARY}--\r\n".encode()
    headers = [("ETag", etag), ("Accept-Ranges", "bytes")]
    ctype = f"multipart/byteranges; boundary={_BOUNDARY}"
    if head_only:
        handler.send_response(206)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            handler.send_header(k, v)
        handler.end_headers()
        return
    handler._send(206, body, ctype, headers)


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
