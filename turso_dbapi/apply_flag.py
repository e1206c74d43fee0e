"""``<replica>-tdbapply``: one shared byte that says "an apply may be half done".

Set (under SQLite's EXCLUSIVE lock) before a pull starts switching the synced layer, cleared
after the switch is complete. Every process maps the file, so a statement checks it with one
memory read instead of a system call; only when it is set does the statement look further
(is the puller alive?) and finish a dead puller's apply (``TursoReplica.recover_if_needed``).
The byte is a hint for speed: the authority is ``pending_pull`` in the sync metadata.
"""

from __future__ import annotations

import mmap
import os

SUFFIX = "-tdbapply"


class ApplyFlag:
    def __init__(self, replica: str):
        fd = os.open(replica + SUFFIX, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < 1:
                os.ftruncate(fd, 1)  # two processes racing here both leave one zero byte
            self._map = mmap.mmap(fd, 1, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    def is_set(self) -> bool:
        return self._map[0] != 0

    def set(self) -> None:
        self._map[0] = 1
        self._map.flush()

    def clear(self) -> None:
        self._map[0] = 0
        self._map.flush()

    def close(self) -> None:
        self._map.close()
