"""Reader of the live-WAL campaign (tests/replica/test_live_campaign.py).

``python live_reader.py URL CACHE SECONDS MODE`` (MODE: ``pull`` calls pull() before each
query; ``follow`` connects with follow=0 and never calls it) reads the campaign database
over HTTP in a loop. Each reading is one read transaction of two statements, which must
agree. Prints one JSON line: {"readings": [[v, sum, pad_count, pad_sum], ...],
"pulls": n, "changed": n, "remote_changed": n}.
"""

from __future__ import annotations

import json
import sys
import time

import turso_dbapi
from turso_dbapi.errors import RemoteChangedError

QUERY = ("select (select v from ver), (select sum(bal) from acct), (select count(*) from pad),"
         " (select coalesce(sum(n), 0) from pad)")


def main() -> None:
    url, cache, seconds, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    con = turso_dbapi.connect(url, partial=True, local_path=cache, segment_size=8192,
                              follow=0 if mode == "follow" else None)
    readings = []
    pulls = changed = remote_changed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if mode == "pull":
            pulls += 1
            changed += bool(con.pull())
        try:
            cur = con.cursor()
            cur.execute("begin")
            row = cur.execute(QUERY).fetchone()
            again = cur.execute("select v from ver").fetchone()
            cur.execute("commit")
        except RemoteChangedError:
            remote_changed += 1  # a change seen mid-transaction: allowed, never a mix
            if con.in_transaction:
                con.rollback()
            continue
        if again[0] != row[0]:
            raise SystemExit(f"one transaction saw versions {row[0]} and {again[0]}")
        readings.append(list(row))
    print(json.dumps({"readings": readings, "pulls": pulls, "changed": changed,
                      "remote_changed": remote_changed}), flush=True)
    con.close()


if __name__ == "__main__":
    main()
