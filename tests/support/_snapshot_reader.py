"""A reader process for tests/reliability/test_readers_during_pulls.py.

    python _snapshot_reader.py ROOT REPLICA_PATH FINAL_VERSION SECONDS

Opens the replica by its path and runs the campaign's snapshot query in a loop until it
sees FINAL_VERSION (or SECONDS pass), then prints one JSON line: reads, mixed snapshots,
versions seen going backwards, last version seen, errors.
"""

from __future__ import annotations

import json
import random
import sys
import time


def main() -> None:
    root, path, final, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    sys.path.insert(0, root)
    sys.path.insert(0, root + "/tests")
    import turso_dbapi
    from support._snapshots import SNAPSHOT_SQL, check_snapshot, snapshot_args

    con = turso_dbapi.connect(path)
    rng = random.Random(path)
    print("ready", flush=True)
    out = {"reads": 0, "mixed": 0, "backwards": 0, "last": -1, "errors": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and out["last"] != final:
        try:
            row = con.execute(SNAPSHOT_SQL, snapshot_args(rng)).fetchone()
        except Exception as exc:  # reported, never hidden
            out["errors"].append(f"{type(exc).__name__}: {exc}")
            continue
        version = check_snapshot(row)
        out["reads"] += 1
        if version is None:
            out["mixed"] += 1
            continue
        out["backwards"] += version < out["last"]
        out["last"] = version
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
