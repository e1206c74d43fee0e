"""A process for the kill -9 campaign (tests/reliability/test_killed_processes.py).

    python _crash_worker.py ROOT OPERATION KILL_AT TARGET [LOCAL_PATH]

OPERATION is one of ``pull`` (pull() a Turso replica), ``push`` (push() it), ``scan`` (read
every page lazily), ``bootstrap`` (armed before the connect: kill points of the bootstrap
itself; then a count of table ``t``),
``write`` (commit rows of table ``mine``, printing "committed <rowid>" after each commit) or
``big-write`` (one transaction larger than the page cache, never committed) or ``torn-write``
(``big-write``, then page 1's next image written into the local layer without its CRC: the
state a kill inside pagestore.c's write leaves, between the page bytes and the CRC word).

KILL_AT is where the process SIGKILLs itself: ``never``, ``<hook>:<n>`` (the n-th call of a
hook: ``stage.add``, ``stage.finish``, ``apply.put``, ``fetch.put``, ``meta.save``,
``rebase.prepare``, ``rebase.extract``, ``rebase.replay``, ``push.batch``, ``tail.fold``,
``push.fold``, ``wal.side``,
``wal.record``, ``wal.append``, and the bootstrap's ``bootstrap.pages``, ``capture.install``,
``store.sync``, ``meta.publish``;
``meta.save:1`` is the pending-apply record, ``meta.save:2`` the switch; in a bootstrap,
``meta.save:1`` is its claim), or
``after:<seconds>`` (a timer: a random point chosen by the caller); ``pause:<hook>:<n>:<seconds>``
does not kill: after the n-th call of the hook it creates the file named by
``TURSO_DBAPI_PAUSE_MARK`` and sleeps, so the caller can act inside the operation. It prints "ready"
when the replica is open, then "done <seconds the operation took>" if it was not killed
(callers use it to draw timer points inside the operation).

To add a kill point, add a hook to ``HOOKS``: a (module, attribute) pair whose calls are
counted; the process dies right after the n-th call returns.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

HOOKS = {
    "stage.add": ("turso_dbapi.sync.stage", "StageWriter.add"),
    "stage.finish": ("turso_dbapi.sync.stage", "StageWriter.finish"),
    "meta.save": ("turso_dbapi.sync.metadata", "save"),
    "apply.put": ("turso_dbapi.storage.pagestore", "PageStore.put_synced", "overwrite"),
    "rebase.prepare": ("turso_dbapi.sync.rebase", "prepare"),  # extracted ahead of the lock
    "rebase.extract": ("turso_dbapi.sync.rebase", "extract"),  # local changes set aside
    "rebase.replay": ("turso_dbapi.sync.rebase", "replay"),  # replayed, not yet committed
    "push.batch": ("turso_dbapi.sync.push", "Pipeline.call"),  # the server committed a batch
    "tail.fold": ("turso_dbapi.sync.tail", "fold"),  # push's tails in the log, not committed
    "push.fold": ("turso_dbapi.sync.push", "_fold"),  # ... committed, before the network
    "fetch.put": ("turso_dbapi.storage.pagestore", "PageStore.put_synced", "fill"),
    "wal.record": ("turso_dbapi.storage.wal_writer", "record"),  # WAL replica: frames listed
    "wal.append": ("turso_dbapi.storage.wal_writer", "append"),  # ... and committed in the WAL
    "wal.side": ("turso_dbapi.sync.side_replay", "run"),  # WAL replica: replayed off to the side
    # a bootstrap (sync/bootstrap.py): pages stored; capture written (its transaction still
    # open); the page store flushed; the final metadata renamed into place
    "bootstrap.pages": ("turso_dbapi.sync.bootstrap", "bootstrap"),
    "capture.install": ("turso_dbapi.sync.capture", "install"),
    "store.sync": ("turso_dbapi.storage.pagestore", "PageStore.sync"),
    "meta.publish": ("turso_dbapi.sync.metadata", "publish"),
}
# The same point reached through another call: the replay file extracted ahead of the lock
# is published under it by Prepared.use (rebase.extract runs only when that one is stale).
ALSO = {
    "rebase.extract": ("turso_dbapi.sync.rebase", "Prepared.use"),
}
# Calls that take a batch of pages count one per page, so ``stage.add:40`` still means "the
# 40th page staged" and ``apply.put:30`` "the 30th page applied": the n-th page of a batch
# ends the process after the batch's first pages went in (a kill in the middle of a call).
BATCH_HOOKS = {
    "stage.add": ("turso_dbapi.sync.stage", "StageWriter.add_run"),
    "apply.put": ("turso_dbapi.storage.pagestore", "PageStore.put_synced_many", "overwrite"),
}


def _first_pages(args: tuple, k: int) -> tuple:
    """The arguments of a batch call cut to its first ``k`` pages."""
    if len(args) == 2:  # StageWriter.add_run(self, run)
        self, run = args
        return self, type(run)(run.buf, run.page_ids[:k], run.offsets[:k])
    self, buf, pgnos, offsets = args  # PageStore.put_synced_many(self, buf, pgnos, offsets)
    return self, buf, pgnos[:k], offsets[:k]


def _batch_size(args: tuple) -> int:
    return len(args[1].page_ids) if len(args) == 2 else len(args[2])


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def pause_at(hook: str, seconds: float, mark: str) -> None:
    """After the n-th call of ``hook`` (``<hook>:<n>``): create ``mark``, sleep, go on."""
    import importlib

    kind, _, arg = hook.partition(":")
    module_name, attr = HOOKS[kind][:2]
    owner = importlib.import_module(module_name)
    if "." in attr:
        owner, attr = getattr(owner, attr.split(".")[0]), attr.split(".")[1]
    original, left = getattr(owner, attr), [int(arg or 1)]

    def hooked(*args, **kwargs):
        result = original(*args, **kwargs)
        left[0] -= 1
        if left[0] == 0:
            open(mark, "w").close()
            time.sleep(seconds)
        return result

    setattr(owner, attr, hooked)


def arm(kill_at: str) -> None:
    if kill_at == "never":
        return
    kind, _, arg = kill_at.partition(":")
    if kind == "pause":  # pause:<hook>:<n>:<seconds>: the caller acts while the process waits
        hook, n, seconds = arg.split(":")
        pause_at(f"{hook}:{n}", float(seconds), os.environ["TURSO_DBAPI_PAUSE_MARK"])
        return
    if kind == "after":
        timer = threading.Timer(float(arg), die)
        timer.daemon = True
        timer.start()
        return
    import importlib

    left = [int(arg or 1)]

    def counted(only: list, kwargs: dict) -> bool:
        if only and only[0] == "overwrite" and not kwargs.get("overwrite"):
            return False
        if only and only[0] == "fill" and kwargs.get("overwrite"):
            return False
        return True

    def patch(spec: tuple, batch: bool) -> None:
        module_name, attr, *only = spec
        module = importlib.import_module(module_name)
        owner, name = (module, attr) if "." not in attr else (getattr(module, attr.split(".")[0]),
                                                              attr.split(".")[1])
        original = getattr(owner, name)

        def hooked(*args, **kwargs):
            if batch and counted(only, kwargs):
                n = _batch_size(args)
                if 0 < left[0] <= n:
                    original(*_first_pages(args, left[0]), **kwargs)
                    die()
                left[0] -= n
                return original(*args, **kwargs)
            result = original(*args, **kwargs)
            if not counted(only, kwargs):
                return result
            left[0] -= 1
            if left[0] == 0:
                die()
            return result

        setattr(owner, name, hooked)

    patch(HOOKS[kind], False)
    if kind in ALSO:
        patch(ALSO[kind], False)
    if kind in BATCH_HOOKS:
        patch(BATCH_HOOKS[kind], True)


def tear_page1(path: str) -> None:
    """Write page 1's next image (change counter + 1) over the local layer's copy, as
    pagestore.c's write does before it stores the page's CRC, and leave the CRC stale."""
    import struct

    with open(path + "-tdblocal", "r+b") as f:
        page = bytearray(f.read(100))
        assert page[:16] == b"SQLite format 3\x00", "page 1 is not in the local layer"
        struct.pack_into(">I", page, 24, struct.unpack_from(">I", page, 24)[0] + 1)
        f.seek(0)
        f.write(page)
        f.flush()
        os.fsync(f.fileno())


def main() -> None:
    root, operation, kill_at, target = sys.argv[1:5]
    local_path = sys.argv[5] if len(sys.argv) > 5 else None
    sys.path.insert(0, root)
    import turso_dbapi

    if operation == "bootstrap":
        arm(kill_at)
        started = time.perf_counter()
        con = turso_dbapi.connect(target, local_path=local_path, partial=True)
        print("count", con.execute("SELECT count(*) FROM t").fetchone()[0], flush=True)
        print("done", time.perf_counter() - started, flush=True)
        return
    if local_path:
        con = turso_dbapi.connect(target, local_path=local_path, partial=True)
    else:
        con = turso_dbapi.connect(target)
    print("ready", flush=True)
    started = time.perf_counter()
    arm(kill_at)
    if operation == "pull":
        con.pull()
    elif operation == "push":
        con.push()
    elif operation == "scan":
        con.execute("SELECT count(*), sum(length(x)) FROM t").fetchall()
    elif operation == "write":
        con.execute("CREATE TABLE IF NOT EXISTS mine(n INTEGER PRIMARY KEY, pad BLOB)")
        con.commit()
        while True:
            n = con.execute("INSERT INTO mine(pad) VALUES (randomblob(3000))").lastrowid
            con.commit()
            print("committed", n, flush=True)
    elif operation in ("big-write", "torn-write"):
        con.execute("PRAGMA cache_size=5")
        con.execute("BEGIN")
        con.execute("UPDATE t SET x = randomblob(1200)")
        con.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
                    "INSERT INTO t SELECT i + 100000, -1, randomblob(3000) FROM n")
        print("spilled", con.stats().local_writes, flush=True)
        if operation == "torn-write":
            tear_page1(local_path or target)
        die()
    print("done", time.perf_counter() - started, flush=True)


if __name__ == "__main__":
    main()
