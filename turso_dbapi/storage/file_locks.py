"""Who holds SQLite's EXCLUSIVE lock on a database file, read from Linux's ``/proc/locks``
- never by opening the file: closing any descriptor of it would drop every POSIX lock this
process holds there, SQLite's own included.

SQLite's unix VFS locks bytes past 1 GiB (os_unix.c): PENDING at 0x40000000, RESERVED at
+1, and a 510-byte SHARED range from +2; EXCLUSIVE is a write lock on that whole range. A
WAL-mode connection holds it only in ``locking_mode=EXCLUSIVE`` (its wal-index then lives in
its heap, where no other connection can reach it) or for a moment (the last connection's
close, a journal-mode switch).
"""

from __future__ import annotations

import os
from typing import List

PENDING_BYTE = 0x40000000
SHARED_FIRST = PENDING_BYTE + 2
PROC_LOCKS = "/proc/locks"


def exclusive_holders(path: str) -> List[int]:
    """PIDs holding SQLite's EXCLUSIVE lock on ``path`` (this one's included: another of
    its connections); [] when none, or where ``/proc/locks`` cannot be read."""
    try:
        st = os.stat(path)
        with open(PROC_LOCKS) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    out: List[int] = []
    for line in lines:
        # "8: POSIX  ADVISORY  WRITE 7289 fe:00:2204188 1073741826 1073742335"; a waiter's
        # line has "->" after the number: it is blocked, not holding
        fields = line.split()
        if len(fields) < 8 or fields[1] == "->" or fields[5] != file_id or fields[3] != "WRITE":
            continue
        try:
            start = int(fields[6])
            end = int(fields[7]) if fields[7] != "EOF" else 1 << 63
            pid = int(fields[4])
        except ValueError:
            continue
        if start <= SHARED_FIRST <= end:
            out.append(pid)
    return out
