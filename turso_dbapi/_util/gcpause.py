"""``paused()``: the cyclic garbage collector held off for a block that allocates many
objects at once and frees them as a whole (a push's 10k change rows and statements, the
JSON reply of a 10k-step batch).

Why: each few hundred allocations start a young-generation pass, and every so often a
full pass walks every object of the process; a 1.5 MB batch reply parsed with the collector
on took 32 ms in a push, 10 ms without (benchmarks/bench_sync.py). Nothing here makes
reference cycles, so nothing waits for the collector; it runs again after the block.
Re-entrant and thread-safe: the collector is turned back on when the last block ends, and
only if it was on when the first began.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
