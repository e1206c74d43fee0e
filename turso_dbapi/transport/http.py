"""HTTP for every remote: one keep-alive ``requests.Session`` per remote, timeouts, a retry
policy that is a value, auth, and the one place where requests/urllib3 errors become ours.

Rules (numbered; the code tags them):

(1) Only this module (and ``failures``, which classifies them) sees ``requests``/``urllib3``
    exceptions. Each becomes a ``RemoteError``
    whose message names the method, the *redacted* URL, the status if any and what to do.
    The original exception is not chained (``from None``): its text may hold the raw URL
    with credentials or presigned-URL signatures.
(2) Retries: a failure before the server saw the request (connect error, connect timeout)
    is retried for every method; a failure after it may have (read timeout, reset, short
    body, 5xx, 429) only for idempotent requests. Backoff is exponential with jitter and a
    cap; ``Retry-After`` is honoured but bounded.
(3) Auth is applied per request attempt (a callable token is evaluated each time) by an
    ``AuthBase`` hook, so ``.netrc`` never overrides it and requests strips it on a
    redirect to another host. User-info in the URL moves into a Basic header and out of
    the URL. A ``sign`` hook (e.g. S3 SigV4) runs there too, per attempt, on the final
    method, URL and headers, and returns the headers to add: a retry is signed afresh.
    Tokens and signatures never appear in logs, reprs or messages.
(4) One DEBUG log line per request: method, redacted URL, Range, status, body bytes, ms.
(5) Counters (requests sent, body bytes, retries) go into the caller's ``SourceStats``.
(6) An ``explain`` hook turns an error reply into advice (e.g. S3's XML ``<Code>``); for it
    the client reads small error bodies (at most 64 KiB) the caller did not ask for.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import logging
import random
import threading
import time
from typing import Any, Callable, FrozenSet, Mapping, Optional, Tuple, TypeVar, Union
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import requests.adapters
import requests.auth

from ..errors import ProtocolError, RemoteError
from . import redaction
from .deadline import Watchdog
from .environ import EnvironSettings
from .failures import STATUS_ADVICE, classify
from .stats import SourceStats
from ..url import redact, redact_text

log = logging.getLogger("turso_dbapi.http")
redaction.install()  # urllib3's DEBUG lines carry request URLs (with presigned secrets)

T = TypeVar("T")
Token = Union[str, Callable[[], Optional[str]], None]
# (3) sign(method, url, headers) -> headers to add to this attempt
Signer = Callable[[str, str, Mapping[str, str]], Mapping[str, str]]

DEFAULT_TIMEOUT = 30.0  # seconds, connect and read (option http_timeout)
DEFAULT_RETRIES = 3  # retries after the first attempt (option retries)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
STREAM_CHUNK = 64 * 1024  # body chunk handed to a request's sink


@dataclasses.dataclass(frozen=True)
class RetryEvent:
    """One failed attempt: why (short text, no URL) and the status if a response came."""

    reason: str
    status: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Retry:
    """Retry policy as an immutable value; ``new()`` returns the policy after one more failure.

    ``total`` is the number of retries after the first attempt (0 = never retry).
    Backoff before retry n (1-based) is drawn from [cap/2, cap] with
    cap = min(backoff_max, backoff_factor * 2**(n-1)) — jitter keeps many clients from
    retrying in lockstep. A ``Retry-After`` longer than ``retry_after_max`` is cut to it.
    """

    total: int = DEFAULT_RETRIES
    backoff_factor: float = 0.1
    backoff_max: float = 5.0
    retry_after_max: float = 30.0
    statuses: FrozenSet[int] = frozenset({429, 500, 502, 503, 504})
    history: Tuple[RetryEvent, ...] = ()

    def new(self, event: RetryEvent) -> Retry:
        return dataclasses.replace(self, history=self.history + (event,))

    @property
    def retries_used(self) -> int:
        return len(self.history)

    def exhausted(self) -> bool:
        """True when no retry is left after the failures recorded so far."""
        return len(self.history) > self.total

    def allows(self, *, sent: bool, idempotent: bool) -> bool:
        # (2) a request the server never saw is always safe to send again.
        return (not sent) or idempotent

    def should_retry(self, *, retryable: bool, sent: bool, idempotent: bool) -> bool:
        """After ``new()``: send again? (a retryable failure, safe to resend, retries left)"""
        return retryable and self.allows(sent=sent, idempotent=idempotent) and not self.exhausted()

    def backoff(self, rng: Optional[random.Random] = None) -> float:
        n = len(self.history)
        if n == 0:
            return 0.0
        cap = min(self.backoff_max, self.backoff_factor * (2 ** (n - 1)))
        return (rng or random).uniform(cap / 2, cap)

    def parse_retry_after(self, value: Optional[str], now: Optional[float] = None) -> Optional[float]:
        """Seconds to wait from a Retry-After header (seconds or HTTP date), bounded."""
        if not value:
            return None
        value = value.strip()
        seconds: Optional[float]
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when is None:
                return None
            seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, min(seconds, self.retry_after_max))


class TransientReplyError(Exception):
    """Raised by a reply check for a bad reply worth retrying (short body, wrong range).

    When retries run out it becomes a ``ProtocolError`` with the same message.
    """


@dataclasses.dataclass
class Reply:
    """A response as the caller sees it: no requests objects leak out of this module."""

    method: str
    url: str  # redacted
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: Optional[bytes] = None  # None when the caller chose not to read it
    elapsed_ms: float = 0.0
    range: Optional[str] = None

    def where(self) -> str:
        rng = f" (Range {self.range})" if self.range else ""
        return f"{self.method} {self.url}{rng}"


class _Auth(requests.auth.AuthBase):
    """Sets Authorization per attempt (3). Its repr never shows the secret."""

    def __init__(self, token: Token, basic: Optional[Tuple[str, str]], sign: Optional[Signer] = None):
        self._token = token
        self._basic = basic
        self._sign = sign
        self._last: Optional[str] = None  # the token a callable gave last (for redaction)

    def secrets(self) -> Tuple[str, ...]:
        """Every secret this auth may have sent, to blank out of text a server echoes."""
        out = [self._token if isinstance(self._token, str) else self._last or ""]
        if self._basic is not None:
            raw = f"{self._basic[0]}:{self._basic[1]}"
            out += [self._basic[1], base64.b64encode(raw.encode()).decode("ascii")]
        return tuple(s for s in out if s)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self._token() if callable(self._token) else self._token
        self._last = token if callable(self._token) else None
        if token:
            r.headers["Authorization"] = f"Bearer {token}"
        elif self._basic is not None:
            raw = f"{self._basic[0]}:{self._basic[1]}".encode()
            r.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        if self._sign is not None:
            r.headers.update(self._sign(r.method or "GET", r.url or "", r.headers))
        return r

    def __repr__(self) -> str:
        kind = "signed" if self._sign else "bearer" if self._token else ("basic" if self._basic else "none")
        return f"<auth {kind} ***>"


def split_credentials(url: str) -> Tuple[str, Optional[Tuple[str, str]]]:
    """The URL without user-info, and the (user, password) it carried, if any."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


class HttpClient:
    """One remote's HTTP: a keep-alive session, auth, timeouts, retries, counters.

    ``url`` is the remote's base URL (user-info, if any, becomes Basic auth and leaves the
    URL). ``request()`` is the only call; callers never see requests objects or errors.
    """

    def __init__(
        self,
        url: str,
        *,
        auth_token: Token = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: Union[Retry, int, None] = None,
        verify: Union[bool, str] = True,
        client_name: str = "turso-dbapi",
        stats: Optional[SourceStats] = None,
        pool_size: int = 8,
        deadline: Optional[float] = None,
        sign: Optional[Signer] = None,
        explain: Optional[Callable[[Reply], Optional[str]]] = None,
    ):
        self.url, basic = split_credentials(url)
        self._explain = explain  # (6)
        self.display_url = redact(self.url)
        self.timeout = float(timeout)
        self.deadline = deadline  # total seconds per attempt, body included (deadline.py)
        if retry is None:
            retry = Retry()
        elif isinstance(retry, int):
            retry = Retry(total=retry)
        self.retry = retry
        self.stats = stats if stats is not None else SourceStats()
        self._rng = random.Random()
        self._lock = threading.Lock()
        s = requests.Session()
        self.verify = verify  # True unless the caller opts out; passed per request because a
        s.verify = verify  # session-level value loses to REQUESTS_CA_BUNDLE in requests
        s.auth = _Auth(auth_token, basic, sign)
        s.headers["User-Agent"] = f"{client_name} python-requests/{requests.__version__}"
        for k, v in (headers or {}).items():
            s.headers[k] = v
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        self._session = s
        self._env = EnvironSettings(verify)  # proxies, CA bundle: read once per host

    def __repr__(self) -> str:
        return f"<HttpClient {self.display_url}>"

    def redact(self, text: str) -> str:
        """Server-sent text (an error body) without our credentials: a hostile server may
        echo the request headers back (issue 14, item 9)."""
        return redact_text(text, self._session.auth.secrets())  # type: ignore[union-attr]

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def error(self, reply: Reply, what: str, *, cls: type = RemoteError) -> RemoteError:
        """A RemoteError for an unexpected status, with what to do."""
        advice = self._explain(reply) if self._explain is not None else None
        advice = advice or STATUS_ADVICE.get(reply.status)
        if advice is None:
            advice = "the server failed: retry later" if reply.status >= 500 else "unexpected reply"
        return cls(f"{what}: {reply.where()} -> HTTP {reply.status}; {advice}", url=reply.url, status=reply.status)

    def request(
        self,
        method: str,
        url: Optional[str] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        data: Optional[bytes] = None,
        idempotent: Optional[bool] = None,
        read_body: Optional[Callable[[Reply], bool]] = None,
        check: Optional[Callable[[Reply], T]] = None,
        what: str = "request failed",
        sink: Optional[Callable[[Optional[bytes]], None]] = None,
    ) -> Any:
        """Send with retries; return ``check(reply)`` (or the reply when ``check`` is None).

        ``read_body(reply)`` sees status and headers first and may decline the body (e.g. a
        200 carrying a whole file when a range was asked). ``check`` may raise a
        ``RemoteError`` (final) or ``TransientReplyError`` (retried). Statuses in the retry
        policy are retried before ``check`` sees them; without ``check``, non-2xx raises.
        ``sink``, if given, receives the body in chunks as they arrive instead of
        ``reply.body`` (which stays empty), and ``None`` before a retry (start over); for
        bodies too large to hold twice in memory (a full bootstrap).
        """
        method = method.upper()
        target = url or self.url
        shown = redact(target)
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        hdrs = dict(headers or {})
        rng_hdr = hdrs.get("Range")
        retry = self.retry
        while True:
            wait_hint: Optional[float] = None
            t0 = time.monotonic()
            dog = Watchdog(self.deadline, t0)
            try:
                per_read = dog.remaining(self.timeout)
                resp = self._env.send(self._session, method, target, hdrs, data, (per_read, per_read))
            except requests.RequestException as exc:
                reason, sent, retryable, advice = classify(exc, self.timeout)
                self.stats.add(requests=1, sent=len(data or b""))
                self._log(method, shown, rng_hdr, None, 0, t0, reason)
                retry, again = self._step(retry, RetryEvent(reason), retryable=retryable, sent=sent,
                                          idempotent=idempotent)
                if again:
                    continue
                raise self._final(method, shown, rng_hdr, retry, None, reason, advice) from None  # (1)

            reply = Reply(method, shown, resp.status_code, resp.headers, None, 0.0, rng_hdr)
            self.stats.add(requests=1, sent=len(data or b""))
            dog.watch(resp)
            try:
                if resp.status_code in retry.statuses:
                    wait_hint = retry.parse_retry_after(resp.headers.get("Retry-After"))
                    self._drain(resp)
                    reason = f"HTTP {resp.status_code}"
                    self._log(method, shown, rng_hdr, resp.status_code, 0, t0, reason)
                    retry, again = self._step(retry, RetryEvent(reason, resp.status_code),
                                              idempotent=idempotent, wait=wait_hint)
                    if again:
                        continue
                    raise self._final(method, shown, rng_hdr, retry, resp.status_code, reason,
                                      STATUS_ADVICE.get(resp.status_code, "the server failed: retry later")) from None
                received = 0  # body bytes, for the log line (streamed ones included)
                if read_body is None or read_body(reply):
                    streamed = 0
                    try:
                        if sink is None:
                            reply.body = resp.content
                        else:
                            for chunk in resp.iter_content(STREAM_CHUNK):
                                streamed += len(chunk)
                                sink(chunk)
                            reply.body = b""
                    except requests.RequestException as exc:
                        self.stats.add(received=streamed)
                        reason, _, retryable, advice = classify(exc, self.timeout)
                        if dog.expired:
                            reason, retryable, advice = self._past_deadline()
                        self._log(method, shown, rng_hdr, resp.status_code, 0, t0, reason)
                        retry, again = self._step(retry, RetryEvent(reason, resp.status_code),
                                                  retryable=retryable, idempotent=idempotent, sink=sink)
                        if again:
                            continue
                        raise self._final(method, shown, rng_hdr, retry, resp.status_code, reason, advice) from None
                    self.stats.add(received=len(reply.body) + streamed)
                    received = len(reply.body) + streamed
                elif self._explain is not None and reply.status >= 400:
                    reply.body = self._small_body(resp)  # (6)
                    self.stats.add(received=len(reply.body))
                    received = len(reply.body)
            finally:
                dog.cancel()
                resp.close()
            if dog.expired:  # the cut body ended without an error: a failure all the same
                reason, _, advice = self._past_deadline()
                self._log(method, shown, rng_hdr, reply.status, received, t0, reason)
                retry, again = self._step(retry, RetryEvent(reason, reply.status),
                                          idempotent=idempotent, sink=sink)
                if again:
                    continue
                raise self._final(method, shown, rng_hdr, retry, reply.status, reason, advice) from None
            reply.elapsed_ms = (time.monotonic() - t0) * 1000
            self._log(method, shown, rng_hdr, reply.status, received, t0, None)
            if check is None:
                if not 200 <= reply.status < 300:
                    raise self.error(reply, what)
                return reply
            try:
                return check(reply)
            except TransientReplyError as exc:
                retry, again = self._step(retry, RetryEvent(str(exc), reply.status),
                                          idempotent=idempotent, sink=sink)
                if again:
                    continue
                raise ProtocolError(
                    f"{what}: {reply.where()}: {exc}{self._attempts(retry)}; the server or a proxy "
                    "on the way sent a malformed reply",
                    url=shown, status=reply.status,
                ) from None

    # -- helpers -------------------------------------------------------------------------

    def _past_deadline(self) -> Tuple[str, bool, str]:
        """(reason, retryable, advice) of a request cut by ``http_deadline``: a timeout."""
        return (f"no complete reply within http_deadline {self.deadline:g}s", True,
                "the server is slow (it sends the body too slowly): raise http_deadline")

    def _step(self, retry: Retry, event: RetryEvent, *, idempotent: bool, retryable: bool = True,
              sent: bool = True, wait: Optional[float] = None,
              sink: Optional[Callable[[Optional[bytes]], None]] = None) -> Tuple[Retry, bool]:
        """The one retry step of ``request``: record the failure; when the policy allows
        another attempt, tell ``sink`` to start over, back off and answer True."""
        retry = retry.new(event)
        if not retry.should_retry(retryable=retryable, sent=sent, idempotent=idempotent):
            return retry, False
        if sink is not None:
            sink(None)
        self._sleep(retry, wait)
        return retry, True

    def _sleep(self, retry: Retry, retry_after: Optional[float]) -> None:
        self.stats.add(retries=1)
        with self._lock:  # random.Random is not safe to share across threads
            wait = retry.backoff(self._rng)
        if retry_after is not None:
            wait = max(wait, retry_after)
        log.debug("retry %d/%d in %.3fs after %s", retry.retries_used, retry.total, wait, retry.history[-1].reason)
        if wait > 0:
            time.sleep(wait)

    @staticmethod
    def _small_body(resp: requests.Response) -> bytes:
        try:
            length = int(resp.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if not 0 <= length <= 65536:
            return b""
        try:
            return resp.content
        except requests.RequestException:
            return b""

    @staticmethod
    def _drain(resp: requests.Response) -> None:
        # Read a small error body so the connection returns to the pool; drop big ones.
        try:
            length = int(resp.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if 0 <= length <= 65536:
            try:
                resp.content  # noqa: B018
            except requests.RequestException:
                pass

    @staticmethod
    def _attempts(retry: Retry) -> str:
        n = len(retry.history)
        return f" (after {n} attempts)" if n > 1 else ""

    def _final(self, method: str, shown: str, rng: Optional[str], retry: Retry,
               status: Optional[int], reason: str, advice: str) -> RemoteError:
        where = f"{method} {shown}" + (f" (Range {rng})" if rng else "")
        st = f" -> HTTP {status}" if status is not None and not reason.startswith("HTTP") else ""
        return RemoteError(f"request failed: {where}{st}: {reason}{self._attempts(retry)}; {advice}",
                           url=shown, status=status)

    @staticmethod
    def _log(method: str, shown: str, rng: Optional[str], status: Optional[int], nbytes: int,
             t0: float, failure: Optional[str]) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        ms = (time.monotonic() - t0) * 1000
        log.debug("%s %s range=%s -> %s %d B %.1f ms%s", method, shown, rng or "-",
                  status if status is not None else "no response", nbytes, ms,
                  f" ({failure})" if failure else "")


def client_from_options(url: str, options: Mapping[str, Any], *, stats: Optional[SourceStats] = None,
                        headers: Optional[Mapping[str, str]] = None,
                        retry_statuses: Optional[FrozenSet[int]] = None) -> HttpClient:
    """An HttpClient configured from a parsed option dict (``url.OPTIONS`` names);
    ``retry_statuses`` replaces the statuses its retry policy retries by itself."""
    retry = Retry(total=options.get("retries", DEFAULT_RETRIES))
    if retry_statuses is not None:
        retry = dataclasses.replace(retry, statuses=retry_statuses)
    return HttpClient(
        url,
        auth_token=options.get("auth_token"),
        headers=headers,
        timeout=options.get("http_timeout") or DEFAULT_TIMEOUT,
        retry=retry,
        verify=options.get("verify", True),
        client_name=options.get("client_name") or "turso-dbapi",
        stats=stats,
        deadline=options.get("http_deadline"),
    )


__all__ = ["HttpClient", "Reply", "Retry", "RetryEvent", "Signer", "TransientReplyError", "client_from_options",
           "split_credentials"]
