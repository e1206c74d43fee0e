"""Hrana-over-HTTP batches, the client side of spec §3: what ``push()`` sends and reads.

Positional-argument statements in one ``batch`` per ``/v2/pipeline`` call (§3.1, no key
omitted, as the Rust client serialises them), conditions (§3.3) and the batch reply (§3.4).
Values use the codecs of ``hrana`` (blobs go out without padding, as the Rust client sends
them). A reply that does not have the shape §3.4 requires raises ``ValueError`` naming what
is wrong; the caller adds the URL.
"""

from __future__ import annotations

import functools
import json
import secrets
from typing import Any, List, Optional, Sequence, Tuple

from . import hrana

Json = Any


def encode_value(v: Any) -> Json:
    if isinstance(v, bool):
        v = int(v)
    out = hrana.encode_value(v)
    if out["type"] == "blob":
        out["base64"] = out["base64"].rstrip("=")
    return out


def decode_value(v: Json) -> Any:
    if isinstance(v, dict) and v.get("type") == "integer" and not isinstance(v.get("value"), str):
        raise ValueError(f"integer value is not a decimal string: {v.get('value')!r:.80}")  # §3.2
    try:
        return hrana.decode_value(v)
    except hrana.StmtError as exc:
        raise ValueError(exc.message) from None


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


# -- steps encoded once per SQL text (a push sends thousands of one shape) ----------------

_SEP = (",", ":")
_text = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str (C)


class Encoded(str):
    """One step as JSON text (``Template.step``); ``batch_body`` writes it as it is."""


def encode_arg(v: Any) -> str:
    """``json.dumps(encode_value(v))``, written directly for the common types."""
    t = type(v)
    if t is int:
        return f'{{"type":"integer","value":"{v}"}}'
    if t is str:
        return '{"type":"text","value":' + _text(v) + "}"
    if v is None:
        return '{"type":"null"}'
    return json.dumps(encode_value(v), separators=_SEP)


class Template:
    """Steps running ``sql`` under ``and(IN_TRANSACTION, ok(previous step))``: the JSON of
    the step is cut once around the step number and the arguments, so each step costs a
    format of its arguments instead of building and dumping its dicts."""

    def __init__(self, sql: str):
        token = secrets.token_hex(8)
        marker_step, marker_args = int(token, 16), f"args-{token}"
        statement = stmt(sql)
        statement["args"] = marker_args
        text = json.dumps(step(statement, and_(IN_TRANSACTION, ok(marker_step))), separators=_SEP)
        # Markers outside the SQL string: inside it every quote is escaped, so no match there.
        self._pre, rest = text.split(f'"step":{marker_step}}}', 1)
        self._pre += '"step":'
        self._mid, self._post = rest.split(f'"args":"{marker_args}"', 1)
        self._mid = "}" + self._mid + '"args":['
        self._post = "]" + self._post

    def step(self, previous: int, args: Sequence[Any]) -> Encoded:
        return Encoded(f"{self._pre}{previous}{self._mid}{','.join(map(encode_arg, args))}{self._post}")


@functools.lru_cache(maxsize=256)
def template(sql: str) -> Template:
    return Template(sql)


def batch_body(steps: List[Any]) -> bytes:
    """``json.dumps(batch_request(steps))`` (compact), with ``Encoded`` steps as they are."""
    parts = [s if isinstance(s, Encoded) else json.dumps(s, separators=_SEP) for s in steps]
    return ('{"baton":null,"requests":[{"type":"batch","batch":{"steps":['
            + ",".join(parts) + '],"replication_index":null}}]}').encode()


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

