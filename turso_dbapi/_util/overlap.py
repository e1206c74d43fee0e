"""``Overlap``: one blocking call (a file flush, mostly) run on a helper thread while the
caller does something else; ``result()`` waits for it and returns its value or raises its
error.

Why: a cold Turso connect waits on flushes that need not wait for each other, only come
before what depends on them (sync/bootstrap.py): the claim's fsyncs run while the bootstrap
request is on the network, the final metadata's temp file is flushed while the page store
is. fsync releases the GIL, so the caller's thread runs meanwhile. One helper thread per
process serves every call, in order: starting a thread per call cost about as much as the
fsync it hid (~0.1 ms, and the start waits for the new thread to run). It is a daemon (it
dies with the process) and is started again in a forked child (threads do not survive a
fork). Callers give it system calls to make, not Python work: its Python holds the GIL.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Optional

_lock = threading.Lock()
_jobs: Optional[queue.SimpleQueue[Overlap]] = None


def _serve(jobs: queue.SimpleQueue[Overlap]) -> None:
    while True:
        jobs.get()._run()


def _submit(job: Overlap) -> None:
    global _jobs
    with _lock:
        if _jobs is None:
            _jobs = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(_jobs,), daemon=True, name="turso_dbapi-overlap").start()
        _jobs.put(job)


def _forget_after_fork() -> None:
    global _jobs, _lock
    _jobs, _lock = None, threading.Lock()  # the child has no helper thread: start one anew


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class Overlap:
    def __init__(self, fn: Callable[..., Any], *args: Any):
        self._fn, self._args = fn, args
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self._done = threading.Event()
        _submit(self)

    def _run(self) -> None:
        try:
            self._value = self._fn(*self._args)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc
        finally:
            self._done.set()

    def wait(self) -> None:
        """Until the call ended (its error, if any, is kept for ``result``)."""
        self._done.wait()

    def result(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value
