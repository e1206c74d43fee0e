"""The thread behind one asyncio connection: jobs in, results out, cancellation by interrupt.

Rules (numbered; the code tags them):

(1) One thread per connection runs every call on its ``sqlite3.Connection`` (SQLite's own
    threading rules hold: the connection never moves), so a page miss that waits on the
    network blocks that thread, never the event loop.
(2) Results go back in batches: the thread appends (future, result) to a list and wakes the
    loop (``call_soon_threadsafe``) unless a wake-up is already on its way; results finished
    before the loop runs it ride along. Many coroutines sharing a connection cost one
    wake-up per burst, not one per statement, and no result waits for a later job.
(3) Cancellation: a job still queued is dropped; a running one is interrupted
    (``sqlite3.Connection.interrupt``, thread-safe) and the cancelled coroutine waits for the
    thread to finish it, so the connection is idle — and usable — when ``CancelledError``
    reaches the caller. An interrupted write inside an explicit transaction rolls that
    transaction back (SQLite's rule for SQLITE_INTERRUPT). A miss waiting on the network
    ends when its request does (``http_timeout``), then the statement stops.
(4) ``interrupt()`` is only called while the job runs, under the job's lock, so it cannot
    hit a later statement.
(5) SQLite forgets an interrupt that lands while none of the connection's statements is
    running (the next one to start clears it): a job cancelled between its start and its
    statement's first step would run on. So the interrupt is repeated every
    ``REINTERRUPT`` seconds until the job ends; one that lands after its last statement is
    forgotten the same way, and hits nothing later.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable, List, Optional, Tuple

_QUEUED, _RUNNING, _DONE, _DROPPED = range(4)
REINTERRUPT = 0.01  # seconds between the interrupts of a cancelled job still running (5)


class _Job:
    __slots__ = ("fn", "future", "state", "waiter")

    def __init__(self, fn: Callable[[], Any], future: Optional[asyncio.Future]):
        self.fn = fn
        self.future = future
        self.state = _QUEUED
        self.waiter: Optional[asyncio.Future] = None  # set when a cancelled caller waits (3)


class Worker:
    """Runs callables on its own thread for coroutines of one event loop (see the rules)."""

    def __init__(self, name: str = "turso_dbapi.aio"):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards job states and the result batch
        self._batch: List[Tuple[asyncio.Future, Any, Optional[BaseException], Optional[asyncio.Future]]] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.interrupt: Optional[Callable[[], None]] = None  # the connection's, once it exists
        self._wake_pending = False  # a _deliver call is scheduled on the loop
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopped

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the thread; cancellation interrupts it (3)."""
        loop = self._loop
        assert loop is not None, "start() first"
        job = _Job(fn, loop.create_future())
        self._jobs.put(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            waiter = self._cancel(job, loop)
            if waiter is not None:
                await waiter  # the statement stops at its next step; then the connection is idle
            raise

    def _cancel(self, job: _Job, loop: asyncio.AbstractEventLoop) -> Optional[asyncio.Future]:
        with self._lock:
            if job.state == _QUEUED:
                job.state = _DROPPED
                return None
            if job.state != _RUNNING:
                return None
            job.waiter = loop.create_future()
            if self.interrupt is not None:
                self.interrupt()  # (4) under the lock: the job is still running
                loop.call_later(REINTERRUPT, self._reinterrupt, job, loop)  # (5)
            return job.waiter

    def _reinterrupt(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        """(5) On the loop: interrupt again while the cancelled job still runs."""
        with self._lock:
            if job.state != _RUNNING or self.interrupt is None:
                return
            self.interrupt()  # (4)
        loop.call_later(REINTERRUPT, self._reinterrupt, job, loop)

    def post(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the thread, nobody waiting for it (closing without a loop)."""
        self._jobs.put(_Job(fn, None))

    def stop(self) -> None:
        """No more jobs: the thread exits after the queued ones (a sentinel)."""
        if not self._stopped:
            self._stopped = True
            self._jobs.put(None)

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                if job.state == _DROPPED:
                    continue
                job.state = _RUNNING
            result: Any = None
            error: Optional[BaseException] = None
            try:
                result = job.fn()
            except BaseException as exc:  # delivered to the awaiting coroutine
                error = exc
            if job.future is None:
                continue  # posted: nobody waits
            with self._lock:
                job.state = _DONE
                self._batch.append((job.future, result, error, job.waiter))
            self._wake()  # (2) at once: a result never waits for the next job to finish

    def _wake(self) -> None:
        """Wake the loop for the finished jobs, unless a wake-up is already on its way."""
        with self._lock:
            if not self._batch or self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._deliver)  # type: ignore[union-attr]
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            with self._lock:
                self._batch.clear()
                self._wake_pending = False

    def _deliver(self) -> None:
        """On the loop: settle every finished job's future."""
        with self._lock:
            batch, self._batch = self._batch, []
            self._wake_pending = False
        for future, result, error, waiter in batch:
            if not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
