"""Hrana-over-HTTP value and statement-error codecs (spec §3): what travels in JSON.

Wire rules kept exactly: integers travel as decimal strings, floats as JSON numbers
(infinity as +-9e999, as SQLite prints it), blobs as standard base64 (accepted with or
without padding), errors as ``{"message", "code"}`` with string codes. The server's
pipeline executor (``server.pipeline``) uses them; a client of ``/v2/pipeline`` would too.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Dict

Json = Dict[str, Any]


class StmtError(Exception):
    """A statement failed; carries the Hrana error code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def to_json(self) -> Json:
        return {"message": self.message, "code": self.code}


# ------------------------------------------------------------------------- values


def decode_value(v: Any) -> Any:
    if not isinstance(v, dict):
        raise StmtError(f"invalid value: {v!r}", "BIND_ERROR")
    kind = v.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        raw = v.get("value")
        try:
            if isinstance(raw, bool) or not isinstance(raw, (str, int)):
                raise ValueError
            out = int(raw)
        except ValueError:
            raise StmtError(f"invalid integer value: {raw!r}", "BIND_ERROR")
        if not -(2**63) <= out < 2**63:
            raise StmtError(f"integer out of range: {raw!r}", "BIND_ERROR")
        return out
    if kind == "float":
        raw = v.get("value")
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise StmtError(f"invalid float value: {raw!r}", "BIND_ERROR")
        try:
            return float(raw)
        except ValueError:
            raise StmtError(f"invalid float value: {raw!r}", "BIND_ERROR")
    if kind == "text":
        raw = v.get("value")
        if not isinstance(raw, str):
            raise StmtError("text value must be a string", "BIND_ERROR")
        return raw
    if kind == "blob":
        raw = v.get("base64")
        if not isinstance(raw, str):
            raise StmtError("blob value needs a base64 string", "BIND_ERROR")
        raw = raw.rstrip("=")
        try:
            return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise StmtError("invalid base64 in blob value", "BIND_ERROR")
    raise StmtError(f"unknown value type: {kind!r}", "BIND_ERROR")


def encode_value(v: Any) -> Json:
    if v is None:
        return {"type": "null"}
    if isinstance(v, int):
        return {"type": "integer", "value": str(v)}
    if isinstance(v, float):
        if math.isinf(v):  # JSON has no infinity; SQLite prints it as 9e999
            v = 9e999 if v > 0 else -9e999
        return {"type": "float", "value": v}
    if isinstance(v, str):
        return {"type": "text", "value": v}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"type": "blob", "base64": base64.b64encode(bytes(v)).decode("ascii")}
    raise TypeError(f"cannot encode {type(v).__name__}")
