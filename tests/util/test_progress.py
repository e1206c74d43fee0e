"""The progress hook: silent off a terminal and on short work, one redrawn line otherwise."""

from __future__ import annotations

import io
import time

import pytest

from turso_dbapi._util import progress
from turso_dbapi._util.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def auto_mode():
    progress.set_enabled(None)
    yield
    progress.set_enabled(None)


def test_nothing_is_drawn_when_stderr_is_not_a_terminal():
    pipe = io.StringIO()
    with Progress(1000, "bootstrap", stream=pipe, delay=0, interval=0) as bar:
        for _ in range(10):
            bar.update(100)
    assert pipe.getvalue() == "" and bar.done == 1000


def test_short_work_stays_quiet_even_on_a_terminal():
    tty = Terminal()
    with Progress(1000, stream=tty, delay=60, interval=0) as bar:
        bar.update(1000)
    assert tty.getvalue() == ""


def test_long_work_on_a_terminal_draws_one_line_and_clears_it():
    tty = Terminal()
    with Progress(4096, "bootstrap https://h/db", stream=tty, delay=0, interval=0) as bar:
        bar.update(1024)
        bar.update(1024)
        drawn = tty.getvalue()
    assert "\n" not in tty.getvalue()  # redrawn in place with \r
    last = drawn.split("\r")[-1]
    assert last.startswith(
        "bootstrap https://h/db [" + "#" * 15 + "-" * 15 + "]  50% 2.0 KiB/4.0 KiB"
    )
    assert tty.getvalue().endswith("\r\x1b[K")  # cleared for the next output


def test_redraws_are_rate_limited():
    tty = Terminal()
    bar = Progress(10**6, stream=tty, delay=0, interval=60)
    time.sleep(0.01)
    for _ in range(100):
        bar.update(1)
    assert tty.getvalue().count("\r") == 1


def test_unknown_total_shows_bytes_and_rate():
    bar = Progress(None, "pull")
    bar.update(3 * 1024 * 1024)
    assert bar.render().startswith("pull 3.0 MiB ")
    assert bar.render().endswith("/s")


def test_set_enabled_overrides_the_terminal_check():
    pipe, tty = io.StringIO(), Terminal()
    progress.set_enabled(True)
    Progress(10, stream=pipe, delay=0, interval=0).update(5)
    assert "50%" in pipe.getvalue()
    progress.set_enabled(False)
    Progress(10, stream=tty, delay=0, interval=0).update(5)
    assert tty.getvalue() == ""
