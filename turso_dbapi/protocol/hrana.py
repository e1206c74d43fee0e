"""Hrana-over-HTTP values, statements and batch replies: the client side of spec §3.

Only what ``push()`` sends and reads: positional-argument statements in one ``batch`` per
``/v2/pipeline`` call (§3.1), tagged values (§3.2: integers as decimal strings, blobs as
unpadded base64), conditions (§3.3) and the batch reply (§3.4). A reply that does not have
the shape §3.4 requires raises ``ValueError`` naming what is wrong; the caller adds the URL.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

Json = Any


def encode_value(v: Any) -> Json:
    if v is None:
        return {"type": "null"}
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return {"type": "integer", "value": str(v)}
    if isinstance(v, float):
        if math.isinf(v):  # JSON has no infinity; SQLite reads 9e999 back as inf
            v = 9e999 if v > 0 else -9e999
        return {"type": "float", "value": v}
    if isinstance(v, str):
        return {"type": "text", "value": v}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"type": "blob", "base64": base64.b64encode(bytes(v)).decode("ascii").rstrip("=")}
    raise TypeError(f"cannot send a {type(v).__name__} value over Hrana")


def decode_value(v: Json) -> Any:
    if not isinstance(v, dict):
        raise ValueError(f"a value is not an object: {v!r:.80}")
    kind = v.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        raw = v.get("value")
        if not isinstance(raw, str):  # §3.2: a decimal string, never a JSON number
            raise ValueError(f"integer value is not a decimal string: {raw!r:.80}")
        return int(raw)
    if kind == "float":
        raw = v.get("value")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(f"float value is not a number: {raw!r:.80}")
        return float(raw)
    if kind == "text":
        raw = v.get("value")
        if not isinstance(raw, str):
            raise ValueError("text value is not a string")
        return raw
    if kind == "blob":
        raw = v.get("base64")
        if not isinstance(raw, str):
            raise ValueError("blob value has no base64 string")
        raw = raw.rstrip("=")
        try:
            return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("blob value is not valid base64") from None
    raise ValueError(f"unknown value type {kind!r:.40}")


def stmt(sql: str, args: Sequence[Any] = (), *, want_rows: bool = False) -> Json:
    """A statement exactly as the Rust client serialises it (§3.1: no key omitted)."""
    return {"sql": sql, "sql_id": None, "args": [encode_value(a) for a in args],
            "named_args": [], "want_rows": want_rows, "replication_index": None}


def step(statement: Json, condition: Optional[Json] = None) -> Json:
    return {"condition": condition, "stmt": statement}


def ok(index: int) -> Json:
    return {"type": "ok", "step": index}


def failed(index: int) -> Json:
    return {"type": "error", "step": index}


def not_(cond: Json) -> Json:
    return {"type": "not", "cond": cond}


def and_(*conds: Json) -> Json:
    return {"type": "and", "conds": list(conds)}


def or_(*conds: Json) -> Json:
    return {"type": "or", "conds": list(conds)}


IN_TRANSACTION = not_({"type": "is_autocommit"})


def batch_request(steps: List[Json]) -> Json:
    return {"baton": None, "requests": [{"type": "batch", "batch": {"steps": steps, "replication_index": None}}]}


class StepError:
    """A failed step: its index, the server's message and code."""

    def __init__(self, index: int, message: str, code: str):
        self.index, self.message, self.code = index, message, code


def batch_reply(body: Json, n_steps: int) -> Tuple[List[Optional[Json]], List[Optional[StepError]]]:
    """(step results, step errors) of a one-batch pipeline reply; ValueError if malformed.

    A request-level error (``results[0].type == "error"``) comes back as a StepError with
    index -1."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list) or len(body["results"]) != 1:
        raise ValueError("the reply has no results array with one entry")
    res = body["results"][0]
    if not isinstance(res, dict):
        raise ValueError("results[0] is not an object")
    if res.get("type") == "error":
        err = res.get("error")
        if not isinstance(err, dict):
            raise ValueError("an error result without an error object")
        return [], [StepError(-1, str(err.get("message")), str(err.get("code")))]
    if res.get("type") != "ok":
        raise ValueError(f"results[0] has type {res.get('type')!r:.40}")
    resp = res.get("response")
    if not isinstance(resp, dict) or resp.get("type") != "batch" or not isinstance(resp.get("result"), dict):
        raise ValueError("results[0] is not a batch response")
    result = resp["result"]
    results, errors = result.get("step_results"), result.get("step_errors")
    if not isinstance(results, list) or not isinstance(errors, list):
        raise ValueError("the batch result lacks step_results / step_errors")
    if len(results) != n_steps or len(errors) != n_steps:
        raise ValueError(f"the batch result has {len(results)} results and {len(errors)} errors "
                         f"for {n_steps} steps")
    out_err: List[Optional[StepError]] = []
    for i, e in enumerate(errors):
        if e is None:
            out_err.append(None)
        elif isinstance(e, dict) and isinstance(e.get("message"), str) and isinstance(e.get("code"), str):
            out_err.append(StepError(i, e["message"], e["code"]))
        else:
            raise ValueError(f"step error {i} is not an object with message and code strings")
    for i, r in enumerate(results):
        if r is not None and (not isinstance(r, dict) or not isinstance(r.get("rows"), list)
                              or not isinstance(r.get("cols"), list)):
            raise ValueError(f"step result {i} lacks cols / rows")
    return results, out_err


def rows_of(result: Json) -> List[List[Any]]:
    """The rows of a step result, values decoded."""
    return [[decode_value(v) for v in row] for row in result["rows"]]


def as_dict(body: Any) -> Dict[str, Any]:  # for mypy: a parsed JSON object
    return body if isinstance(body, dict) else {}
