"""Hrana streams over HTTP: a baton names a server-side connection between requests.

As in sqld: a request without a baton opens a new stream (its own SQLite connection); the
reply carries a fresh baton, and only that baton continues the stream — each baton is
single-use (a sequence number inside it advances with every request). A stream left idle
longer than ``idle_timeout`` expires: its transaction is rolled back, its connection is
closed, and its baton is then answered with ``STREAM_EXPIRED`` (HTTP 400). A baton the
server never issued, one already used, or one for a stream in use by another request is
refused with a protocol error (HTTP 400) that says which.

Batons are ``base64(stream_id ‖ seq ‖ HMAC-SHA256(key, stream_id ‖ seq))``, unpadded, with
a random key per server process, so they cannot be forged or guessed.

At most ``max_streams`` streams exist at once. When a new stream would exceed that, the
least recently used idle stream *without an open transaction* is closed first (it holds
nothing a client could lose but stored SQL texts; its baton then reports it expired);
if every stream holds a transaction the request is refused with HTTP 503.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import threading
import time
from collections import OrderedDict
from typing import Callable, Optional

from .pipeline import Executor

DEFAULT_IDLE_TIMEOUT = 10.0  # seconds, as sqld
DEFAULT_MAX_STREAMS = 128
CURSOR_WAIT = 30.0  # seconds a request waits for its stream's cursor to finish
_EXPIRED_MEMORY = 10_000  # how many expired stream ids keep answering STREAM_EXPIRED


class StreamError(Exception):
    """A baton or stream problem; ``status`` and ``code`` go on the wire."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class Stream:
    def __init__(self, stream_id: int, executor: Executor) -> None:
        self.id = stream_id
        self.executor = executor
        self.seq = secrets.randbits(64)
        self.last_used = time.monotonic()
        self.acquired = False


class StreamRegistry:
    def __init__(
        self,
        make_executor: Callable[[], Executor],
        on_release: Callable[[], None] = lambda: None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self._make = make_executor
        self._on_release = on_release  # e.g. log a commit; called after a stream ends a turn
        self.idle_timeout = idle_timeout
        self.max_streams = max_streams
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._streams: OrderedDict[int, Stream] = OrderedDict()  # least recently used first
        self._expired: OrderedDict[int, None] = OrderedDict()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="hrana-reaper", daemon=True)
        self._reaper.start()

    # ---------------------------------------------------------------- batons

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def encode_baton(self, stream: Stream) -> str:
        payload = struct.pack(">QQ", stream.id, stream.seq)
        return base64.b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def _decode_baton(self, baton: str) -> tuple:
        if not isinstance(baton, str):
            raise StreamError(400, "The baton must be a string", "BATON_INVALID")
        try:
            raw = base64.b64decode(baton + "=" * (-len(baton) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise StreamError(400, "Invalid baton: not base64", "BATON_INVALID")
        if len(raw) != 48 or not hmac.compare_digest(raw[16:], self._mac(raw[:16])):
            raise StreamError(400, "Invalid baton: this server did not issue it", "BATON_INVALID")
        return struct.unpack(">QQ", raw[:16])

    # ---------------------------------------------------------------- acquire / release

    def acquire(self, baton: Optional[str]) -> Stream:
        """The stream a request runs on, marked in use; ``release`` it when done."""
        self.expire_idle()
        if baton is None:
            return self._open()
        stream_id, seq = self._decode_baton(baton)
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is None:
                if stream_id in self._expired:
                    raise StreamError(
                        400, "The stream has expired due to inactivity", "STREAM_EXPIRED"
                    )
                raise StreamError(400, "Invalid baton: the stream is closed", "BATON_STREAM_CLOSED")
            if stream.acquired and stream.seq == seq:
                # The baton a cursor's head handed out, used before the cursor's body ended
                # (clients stop reading at the last step): wait for the cursor to finish.
                self._released.wait_for(
                    lambda: not stream.acquired or self._streams.get(stream_id) is not stream,
                    timeout=CURSOR_WAIT,
                )
                if self._streams.get(stream_id) is not stream:
                    raise StreamError(400, "Invalid baton: the stream is closed",
                                      "BATON_STREAM_CLOSED")
            if stream.acquired:
                raise StreamError(
                    400, "Invalid baton: the stream is in use by another request", "BATON_REUSED"
                )
            if stream.seq != seq:
                raise StreamError(
                    400, "Invalid baton: it was already used (each baton is good for one request)",
                    "BATON_REUSED",
                )
            stream.acquired = True
            stream.seq = (stream.seq + 1) & (2**64 - 1)
            self._streams.move_to_end(stream_id)
            return stream

    def _open(self) -> Stream:
        victim: Optional[Stream] = None
        with self._lock:
            if len(self._streams) >= self.max_streams:
                for s in self._streams.values():
                    if not s.acquired and not s.executor.in_transaction:
                        victim = s
                        break
                if victim is None:
                    raise StreamError(
                        503,
                        f"Too many open streams ({self.max_streams}), all in a transaction: "
                        "try again later",
                        "STREAMS_EXHAUSTED",
                    )
                del self._streams[victim.id]
                self._remember_expired(victim.id)
            stream_id = secrets.randbits(64)
            while stream_id in self._streams or stream_id in self._expired:
                stream_id = secrets.randbits(64)
            placeholder = Stream(stream_id, None)  # type: ignore[arg-type]
            placeholder.acquired = True
            self._streams[stream_id] = placeholder
        if victim is not None:
            _close_executor(victim.executor)
        try:
            placeholder.executor = self._make()
        except BaseException:
            with self._lock:
                self._streams.pop(stream_id, None)
            raise
        return placeholder

    def release(self, stream: Stream) -> Optional[str]:
        """End a request's turn: the next baton, or None when the stream was closed."""
        stream.last_used = time.monotonic()
        if stream.executor.closed:
            with self._lock:
                self._streams.pop(stream.id, None)
                self._released.notify_all()
            _close_executor(stream.executor)
            self._on_release()
            return None
        baton = self.encode_baton(stream)
        self._on_release()  # log the commit before anyone can see the stream free again
        with self._lock:
            stream.acquired = False
            self._released.notify_all()
        return baton

    def discard(self, stream: Stream) -> None:
        """Drop a stream whose request failed at the protocol level (as sqld does)."""
        with self._lock:
            self._streams.pop(stream.id, None)
            self._released.notify_all()
        _close_executor(stream.executor)
        self._on_release()

    # ---------------------------------------------------------------- expiry

    def _remember_expired(self, stream_id: int) -> None:
        self._expired[stream_id] = None
        while len(self._expired) > _EXPIRED_MEMORY:
            self._expired.popitem(last=False)

    def expire_idle(self) -> int:
        """Close streams idle longer than the timeout (rolling back their transactions)."""
        now = time.monotonic()
        doomed = []
        with self._lock:
            for s in list(self._streams.values()):
                if not s.acquired and now - s.last_used > self.idle_timeout:
                    del self._streams[s.id]
                    self._remember_expired(s.id)
                    doomed.append(s)
        for s in doomed:
            _close_executor(s.executor)
        if doomed:
            self._on_release()
        return len(doomed)

    def _reap_loop(self) -> None:
        while not self._stop.wait(min(1.0, self.idle_timeout / 4)):
            try:
                self.expire_idle()
            except Exception:  # never let the reaper die; the next round tries again
                pass

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def close(self) -> None:
        self._stop.set()
        self._reaper.join()
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for s in streams:
            if s.executor is not None:
                _close_executor(s.executor)


def _close_executor(executor: Executor) -> None:
    conn = executor.conn
    try:
        if conn.in_transaction:
            conn.rollback()
    finally:
        conn.close()

