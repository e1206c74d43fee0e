"""An exclusive lock across processes and threads: ``flock`` on a private open file
description (a process that dies releases it)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator


@contextlib.contextmanager
def file_lock(path: str, *, wait: bool = True, shared: bool = False) -> Iterator[bool]:
    """Hold the lock file ``path`` (created if missing). Yields True when held; with
    ``wait=False`` it yields False at once if someone else holds it. ``shared``: a shared
    lock on the file opened read-only (it must exist; nothing is created or written)."""
    fd = os.open(path, os.O_RDONLY) if shared else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        try:
            fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock
