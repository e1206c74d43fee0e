"""A total deadline per HTTP request (option ``http_deadline``).

``http_timeout`` bounds each socket read, so a server that drips the body (a few bytes
every second) never trips it: a 4 MiB read at 512 B/s takes over two hours. A blocking
read cannot be given a total time limit from the reading thread (the buffered reader loops
over ``recv`` calls, each under the socket timeout), so a ``Watchdog`` timer shuts the
response's socket down when the deadline passes: the blocked read returns at once with a
broken body, and the HTTP layer reports it as the deadline (a timeout: retried like one).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional


class Watchdog:
    """Cuts one response's connection at ``start + seconds`` (``seconds`` None: never)."""

    def __init__(self, seconds: Optional[float], start: float):
        self.seconds = seconds
        self.expired = False
        self._timer: Optional[threading.Timer] = None
        self._resp: Any = None
        self._lock = threading.Lock()
        self._end = None if seconds is None else start + seconds

    def remaining(self, cap: float) -> float:
        """The time left, at most ``cap`` (a socket timeout never outlives the deadline)."""
        if self._end is None:
            return cap
        return max(0.001, min(cap, self._end - time.monotonic()))

    def watch(self, resp: Any) -> None:
        """Start watching a response whose headers arrived (its body is still to come)."""
        if self._end is None:
            return
        with self._lock:
            self._resp = resp
        left = self._end - time.monotonic()
        if left <= 0:
            self._fire()
            return
        self._timer = threading.Timer(left, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._resp = None

    def _fire(self) -> None:
        with self._lock:
            resp = self._resp
            if resp is None:
                return  # the body was read in time
            self.expired = True
        sock = getattr(getattr(getattr(resp, "raw", None), "connection", None), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the blocked read sees EOF now
            except OSError:
                pass
