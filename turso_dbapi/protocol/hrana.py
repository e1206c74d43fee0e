"""Hrana-over-HTTP value and statement-error codecs (spec §3): what travels in JSON.

Wire rules kept exactly: integers travel as decimal strings, floats as JSON numbers,
blobs as standard base64 (accepted with or without padding), errors as
``{"message", "code"}`` with string codes (sqld's: ``ARGS_INVALID`` for a bad value).
Floats stay valid JSON: ``dumps`` writes SQLite's infinities as ``1e999``/``-1e999``
(numbers JavaScript and Python read back as infinities; sqld's serde_json writes ``null``
there, which the clients reject), never the non-JSON ``Infinity``. The server's stream
executor (``server.pipeline``) uses them; a client of ``/v2/pipeline`` would too.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
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
        raise StmtError(f"invalid value: {v!r}", "ARGS_INVALID")
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
            raise StmtError(f"invalid integer value: {raw!r}", "ARGS_INVALID")
        if not -(2**63) <= out < 2**63:
            raise StmtError(f"integer out of range: {raw!r}", "ARGS_INVALID")
        return out
    if kind == "float":
        raw = v.get("value")
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            # JSON.stringify(Infinity) is null: say so instead of storing NULL.
            raise StmtError(f"invalid float value: {raw!r} (floats must be finite numbers)",
                            "ARGS_INVALID")
        try:
            return float(raw)
        except ValueError:
            raise StmtError(f"invalid float value: {raw!r}", "ARGS_INVALID")
    if kind == "text":
        raw = v.get("value")
        if not isinstance(raw, str):
            raise StmtError("text value must be a string", "ARGS_INVALID")
        return raw
    if kind == "blob":
        raw = v.get("base64")
        if not isinstance(raw, str):
            raise StmtError("blob value needs a base64 string", "ARGS_INVALID")
        raw = raw.rstrip("=")
        try:
            return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise StmtError("invalid base64 in blob value", "ARGS_INVALID")
    raise StmtError(f"unknown value type: {kind!r}", "ARGS_INVALID")


def encode_value(v: Any) -> Json:
    if v is None:
        return {"type": "null"}
    if isinstance(v, int):
        return {"type": "integer", "value": str(v)}
    if isinstance(v, float):
        return {"type": "float", "value": v}  # dumps() writes infinities as 1e999
    if isinstance(v, str):
        return {"type": "text", "value": v}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"type": "blob", "base64": base64.b64encode(bytes(v)).decode("ascii")}
    raise TypeError(f"cannot encode {type(v).__name__}")


def dumps(obj: Any) -> bytes:
    """JSON with infinities as ``±1e999`` (SQLite has no NaN: it stores NULL instead)."""
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:
        pass
    token = "inf-" + secrets.token_hex(16)  # a string no client can have guessed

    def swap(o: Any) -> Any:
        if isinstance(o, float) and math.isinf(o):
            return token + ("+" if o > 0 else "-")
        if isinstance(o, dict):
            return {k: swap(v) for k, v in o.items()}
        if isinstance(o, list):
            return [swap(v) for v in o]
        return o

    text = json.dumps(swap(obj), separators=(",", ":"))
    text = text.replace(f'"{token}+"', "1e999").replace(f'"{token}-"', "-1e999")
    return text.encode()

