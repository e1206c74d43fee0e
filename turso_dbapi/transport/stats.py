"""``SourceStats``: the network counters of one source (requests, bytes, pages, retries)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict


@dataclasses.dataclass
class SourceStats:
    """Network counters of one source. Body bytes only (headers are not counted)."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    pages_fetched: int = 0
    retries: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, requests: int = 0, sent: int = 0, received: int = 0, pages: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_sent += sent
            self.bytes_received += received
            self.pages_fetched += pages
            self.retries += retries

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests,
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
                "pages_fetched": self.pages_fetched,
                "retries": self.retries,
            }
