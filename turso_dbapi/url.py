"""Remote targets and their options: one table, reachable from keywords and query strings.

Every option of ``connect()`` is also accepted in the URL query string with the same
meaning (no gating flags), so SQLAlchemy URLs and the shell reach all of them. Secrets
(``auth_token``, URL user-info, token-like query parameters) are redacted by ``redact``
before a URL is put into a message or a log line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sqlite3
from typing import Any, Callable, Dict, Iterable, Literal, Mapping, Optional, TypedDict, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ProgrammingError

REMOTE_SCHEMES = ("http", "https", "libsql", "turso", "s3")


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def _parse_size(value: Any) -> int:
    """Bytes, with an optional k/m/g suffix (binary units): '128k' == 131072."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes")
    if isinstance(value, int):
        n = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([kmgKMG]?)(?:i?[bB])?\s*", str(value))
        if not m:
            raise ValueError(f"expected a size in bytes such as 131072 or 128k, got {value!r}")
        n = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    if n < 0:
        raise ValueError(f"size must not be negative, got {value!r}")
    return n


def _parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    f = float(value)
    if not math.isfinite(f) or f <= 0:  # nan and inf would fail late, at the first request
        raise ValueError(f"expected a positive, finite number of seconds, got {value!r}")
    return f


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    n = int(value)
    if n < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return n


def _parse_str(value: Any) -> str:
    return str(value)


def _parse_token(value: Any) -> Union[str, Callable[[], Optional[str]]]:
    return value if callable(value) else str(value)


def _parse_verify(value: Any) -> Union[bool, str]:
    # True/False, or a path to a CA bundle (requests' own convention).
    if isinstance(value, bool):
        return value
    try:
        return _parse_bool(value)
    except ValueError:
        return str(value)


def _parse_follow(value: Any) -> Optional[int]:
    """Milliseconds between checks for changes; true means 1000, false/off none."""
    if isinstance(value, bool) or str(value).strip().lower() in ("true", "yes", "on", "false", "no", "off"):
        return FOLLOW_DEFAULT_MS if _parse_bool(value) else None
    return _parse_int(value)


FOLLOW_DEFAULT_MS = 1000


def _parse_protocol(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("auto", "range", "turso", "libsql"):
        raise ValueError("expected auto, range, turso or libsql")
    return text


def _parse_journal_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("wal", "delete"):
        raise ValueError("expected wal or delete")
    return text


def _parse_callable(value: Any) -> Any:
    if callable(value):
        return value
    raise ValueError("expected a callable: pass it to connect() as a keyword argument "
                     "(a URL's query string can only carry text, never a function)")


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    secret: bool = False
    maximum: Optional[float] = None  # checked at parsing: huge values would hang or fail late


GIB = 1 << 30
# The largest SQLite database of 4096-byte pages (4294967294 pages): a bootstrap prefix
# beyond it selects nothing more and would only cost time building the page set.
MAX_PREFIX = 0xFFFFFFFE * 4096


OPTIONS: Dict[str, Option] = {
    o.name: o
    for o in [
        Option("url", _parse_str, None, "remote database URL (when the first argument is a local path)"),
        Option("partial", _parse_bool, False, "read lazily: fetch pages on first use instead of up front"),
        Option("local_path", _parse_str, None, "where the local replica/cache lives (default: user cache dir)"),
        Option("segment_size", _parse_size, 128 * 1024,
               "readahead unit in bytes (runs of unknown pages; background look-ahead from two)",
               maximum=GIB),
        Option("readahead_max", _parse_size, 4 * 1024 * 1024, "cap of the adaptive sequential readahead window, bytes",
               maximum=GIB),
        Option("prefetch", _parse_bool, False, "on a miss of a B-tree interior page, also fetch its children"),
        Option("bootstrap_prefix", _parse_size, None, "Turso partial bootstrap: fetch the first N bytes up front",
               maximum=MAX_PREFIX),
        Option("bootstrap_query", _parse_str, None, "Turso partial bootstrap: pages a query touches"),
        Option("auth_token", _parse_token, None, "bearer token (string or callable), never logged", secret=True),
        Option("client_name", _parse_str, "turso-dbapi", "User-Agent and client id prefix"),
        Option("http_timeout", _parse_float, 30.0, "seconds to wait for a server (connect and read)",
               maximum=86400),
        Option("http_deadline", _parse_float, None,
               "seconds one HTTP request may take in total, body included (a server dripping "
               "bytes keeps each read under http_timeout); past it the request fails like a "
               "timeout. Unset: no total limit (a full bootstrap of a large database is one request)",
               maximum=7 * 86400),
        Option("retries", _parse_int, 3, "retries of a failed fetch (connection errors, 5xx, short bodies)",
               maximum=100),
        Option("verify", _parse_verify, True, "TLS verification: true, false, or a CA bundle path"),
        Option("long_poll_timeout_ms", _parse_int, 0, "Turso pull: let the server wait this long for changes",
               maximum=0xFFFFFFFF),
        Option("endpoint_url", _parse_str, None,
               "S3: endpoint of an S3-compatible store (R2, MinIO, ...); default: the AWS chain "
               "(AWS_ENDPOINT_URL, config files)"),
        Option("region", _parse_str, None, "S3: the bucket's region (default: the AWS chain, AWS_REGION)"),
        Option("profile", _parse_str, None, "S3: the AWS profile whose credentials sign requests"),
        Option("follow", _parse_follow, None,
               "HTTP ranges: pull at the start of a read transaction when the last check is older "
               "than this many ms (true = 1000); off by default", maximum=7 * 86400 * 1000),
        Option("push_operations_threshold", _parse_int, None,
               "Turso push: seal a batch (one server transaction) after this many row changes"),
        Option("journal_mode", _parse_journal_mode, None,
               "Turso replica: the journal mode a NEW replica starts in, wal (default, as Turso's "
               "and pyturso's local files) or delete (rollback journal); an existing replica keeps "
               "its file's mode (PRAGMA journal_mode=WAL switches one)"),
        # Callables: keyword arguments of connect() only; in a URL they are refused.
        Option("on_conflict", _parse_callable, None,
               "Turso pull: default conflict hook of pull() (a callable; keyword only, not in a URL)"),
        Option("transform", _parse_callable, None,
               "Turso push: default transform of push() (a callable; keyword only, not in a URL)"),
        Option("readonly", _parse_bool, False,
               "open an existing replica read-only: writes fail as on a read-only database, "
               "nothing is ever written to the replica's files (pages it has not cached cannot "
               "be read); mode=ro in a file: URI of a replica means the same"),
        Option("protocol", _parse_protocol, "auto",
               "auto | range | turso | libsql: how to read an http(s) URL (libsql: a libSQL server's "
               "embedded-replica protocol, /export + /sync frames; auto: Turso sync for libsql://, "
               "turso:// and http(s) URLs with an empty path, HTTP ranges otherwise)"),
    ]
}

class ConnectOptions(TypedDict, total=False):
    """``OPTIONS`` as keyword types (for type checkers; strings are accepted too, as in a
    query string). A test keeps the two in step."""

    url: str
    partial: bool
    local_path: Union[str, os.PathLike[str]]
    segment_size: Union[int, str]
    readahead_max: Union[int, str]
    prefetch: bool
    bootstrap_prefix: Union[int, str]
    bootstrap_query: str
    auth_token: Union[str, Callable[[], Optional[str]]]
    client_name: str
    http_timeout: float
    http_deadline: float
    retries: int
    verify: Union[bool, str]
    long_poll_timeout_ms: int
    endpoint_url: str
    region: str
    profile: str
    follow: Union[bool, int]
    push_operations_threshold: int
    journal_mode: Literal["wal", "delete"]
    on_conflict: Callable[[Any], Any]
    transform: Callable[[Any], Any]
    readonly: bool
    protocol: Literal["auto", "range", "turso"]


class ConnectArgs(ConnectOptions, total=False):
    """Everything ``turso_dbapi.connect`` takes by keyword: ``sqlite3.connect``'s own
    parameters and ``ConnectOptions``."""

    timeout: float
    detect_types: int
    isolation_level: Optional[str]
    check_same_thread: bool
    factory: type[sqlite3.Connection]
    cached_statements: int
    uri: bool
    autocommit: bool


# Query parameters that may carry credentials; their values are redacted.
_SECRET_QUERY_KEYS = re.compile(r"(token|auth|key|secret|password|signature|credential|sig)", re.I)
# The same inside free text (a log line, a server's error body): ``name=value`` pairs of a
# query string, HTTP auth schemes with their credentials, an Authorization header line.
_SECRET_IN_TEXT = [
    (re.compile(r"([?&;][^=&\s\"']*(?:token|auth|key|secret|password|signature|credential|sig)"
                r"[^=&\s\"']*=)[^&\s\"']*", re.I), r"\1***"),
    (re.compile(r"\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=:-]+", re.I), r"\1\2***"),
    (re.compile(r"(authorization\s*[:=]\s*)[^\r\n,}\]]+", re.I), r"\1***"),
    (re.compile(r"(//)[^/@\s]+@"), r"\1***@"),  # user-info of a URL
]
# libSQL clients take the token as ``?authToken=`` (libsql://host?authToken=...).
LIBSQL_TOKEN_PARAM = "authToken"


def parse_options(raw: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate and convert user-supplied options; unknown names are a clear error."""
    out: Dict[str, Any] = {}
    for name, value in raw.items():
        opt = OPTIONS.get(name)
        if opt is None:
            known = ", ".join(sorted(OPTIONS))
            raise ProgrammingError(f"unknown option {name!r}; known options: {known}")
        if value is None:
            continue
        shown = "<redacted>" if opt.secret else repr(value)
        try:
            parsed = opt.parse(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProgrammingError(f"bad value {shown} for option {name!r}: {exc}") from None
        if opt.maximum is not None and parsed is not None and parsed > opt.maximum:
            raise ProgrammingError(f"bad value {shown} for option {name!r}: at most {opt.maximum}")
        out[name] = parsed
    return out


def with_defaults(opts: Mapping[str, Any]) -> Dict[str, Any]:
    full = {name: o.default for name, o in OPTIONS.items()}
    full.update(opts)
    return full


def split_url_options(url: str) -> tuple:
    """Split our options out of a URL's query string; others stay in the URL.

    Returns (url_without_our_options, options_dict). S3 presigned URLs keep their
    parameters because they are not our option names.
    """
    parts = parse_url(url)
    ours: Dict[str, str] = {}
    theirs = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == LIBSQL_TOKEN_PARAM:  # libSQL's spelling: the token leaves the URL
            ours["auth_token"] = value
        elif key in OPTIONS and key != "url":
            ours[key] = value
        else:
            theirs.append((key, value))
    rebuilt = urlunsplit(parts._replace(query=urlencode(theirs)))
    return rebuilt, ours


def parse_url(url: str) -> Any:
    """``urlsplit(url)``; a malformed URL (``http://[::1``) is a ProgrammingError that shows
    the URL without its user-info and query string (either may hold a secret)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError as exc:
        shown = re.sub(r"//[^/?#]*@", "//***@", url.split("?", 1)[0].split("#", 1)[0])
        raise ProgrammingError(f"invalid URL {shown!r}: {exc}") from None
    return parts


def normalize_remote_url(url: str) -> str:
    """libsql:// and turso:// mean https:// (Turso's own convention)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("libsql", "turso"):
        return "https://" + rest
    return url


def is_remote(target: Any) -> bool:
    if not isinstance(target, str):
        return False
    scheme, sep, _ = target.partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def wants_turso(url: Optional[str], options: Mapping[str, Any]) -> bool:
    """Does this URL (with the ``protocol`` option) name a Turso sync server? (Routing: here,
    so an HTTP-range connect never imports the sync package.)"""
    protocol = options.get("protocol") or "auto"
    if protocol != "auto":
        return protocol == "turso"
    if not url:
        return False
    scheme = url.partition("://")[0].lower()
    if scheme in ("libsql", "turso"):
        return True
    if scheme in ("http", "https"):
        return urlsplit(url).path in ("", "/")
    return False


def redact(url: str) -> str:
    """The URL with user-info and secret-looking query values replaced by '***'."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if _SECRET_QUERY_KEYS.search(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secrets and anything that looks like a credential replaced by
    '***' (for server error bodies and third-party log lines we do not control)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern, repl in _SECRET_IN_TEXT:
        text = pattern.sub(repl, text)
    return text
