"""``_util.overlap``: a call run on the helper thread hands back its value or its error,
calls run in the order given, and a forked child gets a helper of its own (threads do not
survive a fork: without one, its first call would wait forever)."""

from __future__ import annotations

import os
import threading

import pytest

from turso_dbapi._util.overlap import Overlap


def test_the_value_or_the_error_comes_back_from_the_helper_thread():
    assert Overlap(lambda a, b: (a + b, threading.current_thread().name), 2, 3).result() == (5, "turso_dbapi-overlap")

    def fails():
        raise OSError("disk full")

    job = Overlap(fails)
    job.wait()  # ends without raising
    with pytest.raises(OSError, match="disk full"):
        job.result()


def test_calls_run_in_the_order_given():
    seen = []
    jobs = [Overlap(seen.append, i) for i in range(50)]
    for j in jobs:
        j.result()
    assert seen == list(range(50))


def test_a_forked_child_gets_a_helper_of_its_own():
    Overlap(lambda: None).result()  # the parent's helper runs
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its call comes back (2: it never did)
        threading.Timer(10, os._exit, (2,)).start()
        os._exit(0 if Overlap(lambda: 7).result() == 7 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
