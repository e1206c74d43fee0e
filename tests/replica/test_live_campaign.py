"""The live-WAL campaign: a writer process commits continuously to a WAL-mode database that
nginx serves (automatic checkpoints plus PASSIVE/FULL/RESTART/TRUNCATE ones at random
moments) while reader processes follow it over HTTP (one with pull(), one with follow=0).

Every reading must be a state the writer committed (its log: version -> (sum, padding
rows, their sum)); the sum of the accounts never moves; a reader's version never goes
back. Bounded: about 20 s. The counts are printed (pytest -s shows them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
SECONDS = 15.0


def test_readers_follow_a_writer_through_checkpoints_and_never_see_a_mix(nginx, tmp_path):
    name = "campaign.db"
    db = nginx.root / name
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{db}{suffix}"):
            os.remove(f"{db}{suffix}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]))
    writer = subprocess.Popen([sys.executable, str(SCRIPTS / "live_writer.py"), str(db), str(SECONDS), "12"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout.readline().strip() == "READY"
        time.sleep(0.3)
        readers = [
            subprocess.Popen([sys.executable, str(SCRIPTS / "live_reader.py"), nginx.url(name),
                              str(tmp_path / f"r{i}.db"), str(SECONDS - 2), mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for i, mode in enumerate(["pull", "follow"])]
        outs = [r.communicate(timeout=SECONDS + 30) for r in readers]
        log = json.loads(writer.stdout.readline())
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    states = {int(v): s for v, s in log["states"].items()}
    print(f"\nwriter: {log['commits']} commits, checkpoints {log['checkpoints']}")
    for (out, err), reader, mode in zip(outs, readers, ["pull", "follow"]):
        assert reader.returncode == 0, err[-3000:]
        res = json.loads(out)
        readings = res["readings"]
        versions = [r[0] for r in readings]
        for v, total, pads, pad_sum in readings:
            assert [total, pads, pad_sum] == states[v], f"reading at version {v} is no committed state"
        assert versions == sorted(versions), "a reader's version went back"
        print(f"reader ({mode}): {len(readings)} readings, {len(set(versions))} distinct versions, "
              f"{res['pulls']} pulls ({res['changed']} changed), {res['remote_changed']} changes "
              "seen mid-transaction")
        # progress, not a rate: on a loaded machine a slow reading is more often cut by a
        # commit (RemoteChangedError, retried); alone ~800 readings, with a busy core 16
        assert len(readings) >= 5 and len(set(versions)) >= 3
    assert log["commits"] >= 500
    assert all(n >= 1 for n in log["checkpoints"].values()), log["checkpoints"]
