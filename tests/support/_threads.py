"""Run a test's worker in several threads at once (a helper, not a fixture plugin)."""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Sequence


def run_threads(target: Callable[..., object], args: Iterable[Sequence[object]],
                timeout: float = 60.0) -> None:
    """Start one thread per argument tuple, all before any is joined, then join each
    (``timeout`` seconds each). Workers report their own failures (e.g. into a list the
    test asserts empty): an exception in a thread does not reach the caller."""
    threads = [threading.Thread(target=target, args=tuple(a)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
