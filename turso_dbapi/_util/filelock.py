"""An exclusive lock across processes and threads: ``flock`` on a private open file
description (a process that dies releases it)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator


@contextlib.contextmanager
def file_lock(path: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock file ``path`` (created if missing). Yields True when held; with
    ``wait=False`` it yields False at once if someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock
