"""_util/gcpause.paused(): the cyclic collector is off inside, back on after the last
block (re-entrant, across threads), and left off if it was off before."""

from __future__ import annotations

import gc
import threading

from turso_dbapi._util.gcpause import paused


def test_paused_turns_the_collector_off_and_back_on_after_the_outermost_block():
    assert gc.isenabled()
    with paused():
        assert not gc.isenabled()
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()


def test_a_collector_off_before_stays_off():
    gc.disable()
    try:
        with paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_blocks_of_threads_restore_it_once_all_ended():
    inside, release = threading.Event(), threading.Event()

    def worker():
        with paused():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    with paused():
        pass
    assert not gc.isenabled()  # the other thread's block is still open
    release.set()
    t.join(5)
    assert gc.isenabled()


def test_an_exception_inside_still_restores_it():
    try:
        with paused():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()
