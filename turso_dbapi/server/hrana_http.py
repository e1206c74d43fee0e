"""Hrana over HTTP, JSON encoding, as sqld serves it (spec §3; libsql's HRANA_3_SPEC).

* ``POST /v2/pipeline``, ``/v3/pipeline`` — ``{"baton", "requests"}`` → ``{"baton",
  "base_url", "results"}`` on a stream (``streams``);
* ``POST /v3/cursor`` — ``{"baton", "batch"}`` → newline-delimited JSON: the
  ``{"baton", "base_url"}`` head, then ``step_begin``/``row``/``step_end``/``step_error``
  entries as the rows are read;
* ``POST /v1/execute`` ``{"stmt"}`` → ``{"result"}`` and ``/v1/batch`` ``{"batch"}`` →
  ``{"result"}``: Hrana 1 over HTTP, each request on a fresh connection; a failed
  statement is an HTTP error (400, or 500 for SQLite's own errors, as sqld).

Protocol errors (bad JSON, a forged, reused or expired baton, an unknown request type) are
HTTP 400 with ``{"message", "code"}``: the stream they arrived on is closed, as in sqld.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Tuple

from ..protocol.hrana import StmtError, dumps
from .pipeline import PipelineRequestError
from .streams import StreamError, StreamRegistry

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # one pipeline/cursor/v1 request body


class HranaHttpError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def body(self) -> bytes:
        return dumps({"message": self.message, "code": self.code})


def _decode(body: bytes, what: str) -> dict:
    try:
        req = json.loads(body or b"null")
    except ValueError as exc:
        raise HranaHttpError(400, f"invalid JSON in {what} request: {exc}", "JSON_DESERIALIZE")
    except RecursionError:  # the decoder recurses per nesting level
        raise HranaHttpError(400, f"invalid JSON in {what} request: nested too deeply",
                             "JSON_DESERIALIZE")
    if not isinstance(req, dict):
        raise HranaHttpError(400, f"{what} request body must be a JSON object", "JSON_DESERIALIZE")
    return req


def _acquire(registry: StreamRegistry, baton: Any):
    if baton is not None and not isinstance(baton, str):
        raise HranaHttpError(400, "The baton must be a string or null", "BATON_INVALID")
    try:
        return registry.acquire(baton)
    except StreamError as exc:
        raise HranaHttpError(exc.status, exc.message, exc.code)


def pipeline(registry: StreamRegistry, body: bytes) -> bytes:
    req = _decode(body, "pipeline")
    requests = req.get("requests")
    if not isinstance(requests, list):
        raise HranaHttpError(400, 'pipeline request needs a "requests" array', "JSON_DESERIALIZE")
    stream = _acquire(registry, req.get("baton"))
    try:
        results = [stream.executor.handle(r) for r in requests]
    except PipelineRequestError as exc:
        registry.discard(stream)
        raise HranaHttpError(400, str(exc), "PROTOCOL_ERROR")
    except RecursionError:  # a value nested just below the decoder's limit
        registry.discard(stream)
        raise HranaHttpError(400, "invalid pipeline request: nested too deeply", "PROTOCOL_ERROR")
    except BaseException:
        registry.discard(stream)
        raise
    baton = registry.release(stream)
    return dumps({"baton": baton, "base_url": None, "results": results})


def cursor(registry: StreamRegistry, body: bytes) -> Iterator[bytes]:
    """The cursor response, one JSON line at a time (the first before any SQL runs)."""
    req = _decode(body, "cursor")
    batch = req.get("batch")
    if not isinstance(batch, dict) or not isinstance(batch.get("steps"), list):
        raise HranaHttpError(400, 'cursor request needs "batch": {"steps": [...]}', "JSON_DESERIALIZE")
    stream = _acquire(registry, req.get("baton"))
    entries = stream.executor.cursor(batch)
    try:
        first = next(entries, None)  # a protocol error surfaces before any byte is sent
    except PipelineRequestError as exc:
        registry.discard(stream)
        raise HranaHttpError(400, str(exc), "PROTOCOL_ERROR")
    except RecursionError:
        registry.discard(stream)
        raise HranaHttpError(400, "invalid cursor request: nested too deeply", "PROTOCOL_ERROR")
    except BaseException:
        registry.discard(stream)
        raise

    def lines() -> Iterator[bytes]:
        # sqld hands out the next baton with the head, before the steps run; the stream
        # stays in use until the last entry is written.
        head = {"baton": registry.encode_baton(stream), "base_url": None}
        released = False
        try:
            yield dumps(head) + b"\n"
            if first is not None:
                yield dumps(first) + b"\n"
            try:
                for entry in entries:
                    yield dumps(entry) + b"\n"
            except PipelineRequestError as exc:
                yield dumps({"type": "error", "error": {"message": str(exc),
                                                        "code": "PROTOCOL_ERROR"}}) + b"\n"
            registry.release(stream)
            released = True
        finally:
            if not released:
                registry.discard(stream)  # the client went away mid-stream

    return lines()


def v1_execute(registry: StreamRegistry, body: bytes) -> bytes:
    req = _decode(body, "execute")
    return _v1(registry, lambda ex: {"result": ex.execute(req.get("stmt"))})


def v1_batch(registry: StreamRegistry, body: bytes) -> bytes:
    req = _decode(body, "batch")
    return _v1(registry, lambda ex: {"result": ex.batch(req.get("batch"))})


def _v1(registry: StreamRegistry, run) -> bytes:
    stream = _acquire(registry, None)
    try:
        out = run(stream.executor)
    except StmtError as exc:
        status = 500 if exc.code.startswith("SQLITE_") else 400
        raise HranaHttpError(status, exc.message, exc.code)
    except PipelineRequestError as exc:
        raise HranaHttpError(400, str(exc), "PROTOCOL_ERROR")
    except RecursionError:
        raise HranaHttpError(400, "invalid request: nested too deeply", "PROTOCOL_ERROR")
    finally:
        stream.executor.closed = True
        registry.release(stream)
    return dumps(out)


INDEX_TEXT = {
    "/v1": "This is sqld HTTP API v1",
    "/v2": "Hello, this is HTTP API v2 (Hrana over HTTP)",
    "/v3": "Hello, this is HTTP API v3 (Hrana over HTTP)",
}


def index(path: str) -> Tuple[int, bytes]:
    return 200, INDEX_TEXT[path].encode()
