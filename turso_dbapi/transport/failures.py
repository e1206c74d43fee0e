"""What a failed HTTP request means: ``classify`` turns a requests/urllib3 exception into
(reason, sent, retryable, advice), ``STATUS_ADVICE`` says what to do about a status. With
``http.py`` the only code that sees requests/urllib3 exceptions (its rule (1)); reasons
never hold a URL."""

from __future__ import annotations

import errno as _errno
import os
from typing import Optional, Tuple

import requests
import urllib3.exceptions


def os_reason(exc: BaseException) -> str:
    """A short cause without URLs: the innermost OS error's text, if there is one."""
    seen = set()
    cur: Optional[BaseException] = exc
    found: Optional[OSError] = None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno:
            found = cur
        nxt = getattr(cur, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = cur.__cause__ or cur.__context__
        if nxt is None and cur.args and isinstance(cur.args[0], BaseException):
            nxt = cur.args[0]
        cur = nxt
    if found is not None and found.errno in _errno.errorcode:
        return f"{_errno.errorcode[found.errno]}: {os.strerror(found.errno)}"
    return type(exc).__name__


def classify(exc: requests.RequestException, timeout: float) -> Tuple[str, bool, bool, str]:
    """(reason, sent, retryable, advice) for a requests exception (1)(2)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return (
            "TLS certificate verification failed",
            False,
            False,
            "check the server certificate, or pass verify=<CA bundle path> (verify=false disables checks)",
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return (f"connect timed out after {timeout:g}s", False, True, "check the host, or raise http_timeout")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return (f"no reply within {timeout:g}s", True, True, "the server is slow: raise http_timeout")
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return ("connection broke while reading the body (short body)", True, True, "retry later")
    if isinstance(exc, requests.exceptions.ConnectionError):
        inner = exc.args[0] if exc.args else None
        reason = getattr(inner, "reason", inner)
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return (f"could not connect ({os_reason(reason)})", False, True, "check the URL and that the server is up")
        if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
            return (f"no reply within {timeout:g}s", True, True, "the server is slow: raise http_timeout")
        return (f"connection failed ({os_reason(exc)})", True, True, "retry later")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)):
        return ("invalid URL", False, False, "use an http:// or https:// URL")
    return (type(exc).__name__, True, False, "retry later")


STATUS_ADVICE = {
    400: "the server rejected the request",
    401: "authentication failed: check auth_token or the URL credentials",
    403: "access denied: check auth_token, the URL credentials or the presigned URL's expiry",
    404: "no file at this URL: check the path",
    405: "this URL does not allow the request method",
    410: "the file is gone: check the URL",
    412: "a precondition failed",
    416: "the requested range is outside the file",
    429: "the server is rate-limiting: retry later",
}
