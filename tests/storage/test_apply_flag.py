"""The apply flag's contracts (storage/apply_flag.py, storage/callbacks.py): the flag lives
in the shared sidecar (every process sees it), and what C's callback answers: PROCEED for
the applying thread, BUSY with no recovery known, else the recovery's answer; an exception
never crosses into C (FAILED, and the cause is kept for the statement's error)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from turso_dbapi._native import ffi, lib
from turso_dbapi.storage import apply_flag, callbacks, pagestore
from turso_dbapi.storage.vfs import ensure_registered


@pytest.fixture
def store(tmp_path):
    ensure_registered()
    s = pagestore.open_store(str(tmp_path / "db"), page_size=4096, size=3 * 4096,
                             identity=b"\x01" * 32)
    yield s
    pagestore.release_store(s)


def test_the_flag_is_shared_with_other_processes_through_the_sidecar(store):
    flag = apply_flag.ApplyFlag(store)
    assert not flag.is_set()
    flag.set()
    code = ("import sys; from turso_dbapi.storage import pagestore\n"
            "s = pagestore.open_store(sys.argv[1], page_size=4096, size=3 * 4096, identity=b'\\x01' * 32)\n"
            "print(s.apply_flag())\n")
    out = subprocess.run([sys.executable, "-c", code, store.path], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
    flag.clear()
    assert not store.apply_flag()


def test_answers_of_the_callback(store):
    assert apply_flag.on_flag_set(store, 1) == apply_flag.BUSY  # nobody known to recover it
    with apply_flag.applying():
        assert apply_flag.on_flag_set(store, 1) == apply_flag.PROCEED  # the apply's own thread
    seen = []
    apply_flag.register_recovery(store.path, lambda s, c: seen.append((s, c)) or apply_flag.RECOVERED)
    try:
        assert apply_flag.on_flag_set(store, 7) == apply_flag.RECOVERED
        assert seen == [(store, 7)]
    finally:
        apply_flag.register_recovery(store.path, lambda s, c: apply_flag.BUSY)


def test_an_exception_in_a_recovery_is_kept_and_answers_failed(store):
    boom = RuntimeError("recovery failed")

    def recovery(s, c):
        raise boom

    apply_flag.register_recovery(store.path, recovery)
    try:
        callbacks.take_error()
        # C calls the extern function with the store's handle; call it the same way.
        handle = ffi.new_handle(store)
        assert lib.tdb_py_applying(handle, 1) == apply_flag.FAILED
        assert callbacks.take_error() is boom
        assert callbacks.take_error() is None  # taken once
    finally:
        apply_flag.register_recovery(store.path, lambda s, c: apply_flag.BUSY)


def test_installing_the_callbacks_again_is_harmless(store):
    callbacks.install(ffi)  # the store's open installed them; cffi refuses a second definition
