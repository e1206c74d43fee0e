"""``Overlap``: one blocking call (a file flush, mostly) run on a thread while the caller
does something else; ``result()`` waits for it and returns its value or raises its error.

Why: a cold Turso connect waits on flushes that need not wait for each other, only come
before what depends on them (sync/bootstrap.py): the claim's fsyncs run while the bootstrap
request is on the network, the final metadata's temp file is flushed while the page store
is. fsync releases the GIL, so the caller's thread runs meanwhile. The thread dies with the
process (daemon); every caller waits for it before it goes on or cleans up.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class Overlap:
    def __init__(self, fn: Callable[..., Any], *args: Any):
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True,
                                        name="turso_dbapi-overlap")
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def wait(self) -> None:
        """Until the call ended (its error, if any, is kept for ``result``)."""
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
