"""The README's main job, `python -m turso_dbapi.demo`, runs end to end on a fresh
temporary directory and reports what it fetched."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_serves_queries_lazily_both_ways_and_pulls(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "turso_dbapi.demo", "--rows", "20000", "--keep", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    size = int(re.search(r"20,000 rows, ([\d,]+) bytes", out).group(1).replace(",", ""))
    totals = [int(m.replace(",", "")) for m in re.findall(r"total\s+\d+ req\s+([\d,]+) B", out)]
    assert len(totals) == 2  # Turso protocol and HTTP ranges
    assert all(0 < t <= 1.1 * size for t in totals)
    # The repeated point lookup is served from the cache: no request, no byte.
    assert re.findall(r"same point lookup again\s+0 req\s+0 B", out) and len(
        re.findall(r"same point lookup again\s+0 req\s+0 B", out)) == 2
    # Issue 13: a cold lookup costs its pages (the open included), and one user's rows (~20 table leaves via the
    # index) come in a few requests (before: 262,144 B for the lookup over HTTP ranges, and
    # 17-18 requests / ~2.5-2.9 MB for the user's rows, in both modes).
    # The open reads page 1 alone (a 128 KiB segment before: ~11x the lookup's minimum);
    # the lookup then costs its 3 pages, one request each.
    opens = re.findall(r"\n  open\s+(\d+) req\s+([\d,]+) B", out)
    assert len(opens) == 2, out
    for req, nbytes in opens:
        assert int(req) <= 2 and int(nbytes.replace(",", "")) <= 4096 + 512, out
    for req, nbytes in re.findall(r"point lookup by primary key\s+(\d+) req\s+([\d,]+) B", out):
        assert int(req) <= 3 and int(nbytes.replace(",", "")) <= 3 * 4096 + 512, out
    ranges = re.findall(r"indexed range \(one user\)\s+(\d+) req\s+([\d,]+) B", out)
    assert len(ranges) == 2, out
    for req, nbytes in ranges:
        assert int(req) <= 4 and int(nbytes.replace(",", "")) <= 160_000, out
    assert "pull() -> True, rows after 20,001" in out
    # two-way: a write pushed by one replica is seen by a second one, and back with sync()
    assert "replica 1 pushed 1 row change(s) in 1 batch(es)" in out
    assert "replica 2 sees: ['written on the server', 'written on replica 1']" in out
    assert "replica 1 syncs and sees: 'edited on replica 2'" in out
    assert proc.stderr == ""  # quiet: no warnings, no progress bar in a pipe
