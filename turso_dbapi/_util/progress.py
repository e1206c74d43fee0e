"""A progress bar for long transfers (a full bootstrap of a large database).

Remote code reports; this module decides whether anyone sees it::

    with Progress(total_bytes, "bootstrap https://host/db") as bar:
        for chunk in body:
            bar.update(len(chunk))

It draws on stderr only when stderr is a terminal and the work has already taken longer
than ``delay`` seconds, so short work, pipes, logs and CI stay quiet (DESIGN §3: first
run is quiet). ``set_enabled(False)`` turns it off for the process (an application that
owns its terminal); ``set_enabled(None)`` restores the automatic choice.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Optional

_enabled: Optional[bool] = None  # None: draw when stderr is a terminal

WIDTH = 30  # characters of bar


def set_enabled(value: Optional[bool]) -> None:
    """True: always draw; False: never; None: only when stderr is a terminal."""
    global _enabled
    _enabled = value


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover  (loop always returns)


class Progress:
    """Counts bytes of one transfer; draws a one-line bar once the transfer is slow."""

    def __init__(
        self,
        total_bytes: Optional[int],
        label: str = "downloading",
        *,
        stream: Optional[IO[str]] = None,
        delay: float = 1.0,
        interval: float = 0.1,
    ) -> None:
        self.total = total_bytes if total_bytes and total_bytes > 0 else None
        self.done = 0
        self.label = label
        self._stream = stream if stream is not None else sys.stderr
        self._start = time.monotonic()
        self._delay = delay
        self._interval = interval
        self._last_draw = 0.0
        self._drawn = False

    def _visible(self) -> bool:
        if _enabled is not None:
            return _enabled
        try:
            return self._stream.isatty()
        except (AttributeError, ValueError):  # closed or not a real stream
            return False

    def update(self, n_bytes: int) -> None:
        """Record ``n_bytes`` more transferred; redraw at most every ``interval`` s."""
        self.done += n_bytes
        now = time.monotonic()
        if now - self._start < self._delay or now - self._last_draw < self._interval:
            return
        if not self._visible():
            return
        self._last_draw = now
        self._draw(now)

    def render(self, now: Optional[float] = None) -> str:
        """The bar's text, e.g. ``label [#######-----]  42% 1.2 MiB/3.0 MiB 2.1 MiB/s``."""
        elapsed = max((now if now is not None else time.monotonic()) - self._start, 1e-6)
        rate = f"{_human(self.done / elapsed)}/s"
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = int(frac * WIDTH)
            bar = "#" * filled + "-" * (WIDTH - filled)
            return (
                f"{self.label} [{bar}] {frac * 100:3.0f}% "
                f"{_human(self.done)}/{_human(self.total)} {rate}"
            )
        return f"{self.label} {_human(self.done)} {rate}"

    def _draw(self, now: float) -> None:
        try:
            self._stream.write("\r" + self.render(now) + "\x1b[K")
            self._stream.flush()
            self._drawn = True
        except (OSError, ValueError):
            pass  # a progress bar never breaks the transfer it reports

    def close(self) -> None:
        """Clear the bar (if one was drawn) so the next output starts on a clean line."""
        if self._drawn:
            try:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            except (OSError, ValueError):
                pass
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
