"""Writer of the live-WAL campaign (tests/replica/test_live_campaign.py).

``python live_writer.py DB SECONDS SEED`` commits continuously to a WAL-mode database:
each transaction moves money between two of 100 accounts (the sum stays 100000), bumps
the version row and sometimes adds a padding row (so checkpoints move many pages).
Automatic checkpoints run every 64 pages, and PASSIVE/FULL/RESTART/TRUNCATE checkpoints
happen at random moments. Prints "READY" once the database exists, then at the end one
JSON line: {"states": {version: [sum, pad_count, pad_sum]}, "commits": n,
"checkpoints": {mode: n}}.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import time


def main() -> None:
    path, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    con = sqlite3.connect(path, isolation_level=None, timeout=30)
    con.execute("pragma journal_mode=wal")
    con.execute("pragma wal_autocheckpoint=64")
    con.execute("create table acct(id integer primary key, bal integer not null)")
    con.execute("create table ver(v integer not null)")
    con.execute("create table pad(n integer, blob blob)")
    con.execute("begin")
    con.executemany("insert into acct values (?, 1000)", [(i,) for i in range(100)])
    con.execute("insert into ver values (0)")
    con.execute("commit")
    states = {0: [100000, 0, 0]}
    pad_count = pad_sum = 0
    checkpoints = {"PASSIVE": 0, "FULL": 0, "RESTART": 0, "TRUNCATE": 0}
    print("READY", flush=True)
    deadline = time.monotonic() + seconds
    v = 0
    while time.monotonic() < deadline:
        a, b = rng.sample(range(100), 2)
        amount = rng.randint(1, 50)
        v += 1
        con.execute("begin immediate")
        con.execute("update acct set bal = bal - ? where id = ?", (amount, a))
        con.execute("update acct set bal = bal + ? where id = ?", (amount, b))
        con.execute("update ver set v = ?", (v,))
        if rng.random() < 0.3:
            con.execute("insert into pad values (?, ?)", (v, rng.randbytes(rng.randint(100, 3000))))
            pad_count += 1
            pad_sum += v
        con.execute("commit")
        states[v] = [100000, pad_count, pad_sum]
        if rng.random() < 0.01:
            mode = rng.choice(sorted(checkpoints))
            con.execute(f"pragma wal_checkpoint({mode})").fetchone()
            checkpoints[mode] += 1
        time.sleep(rng.random() * 0.002)
    print(json.dumps({"states": states, "commits": v, "checkpoints": checkpoints}), flush=True)
    con.close()


if __name__ == "__main__":
    main()
