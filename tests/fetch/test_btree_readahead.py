"""B-tree-aware access rules (turso_dbapi/fetch/access.py over btree_readahead.BtreeMap) on a real SQLite file."""

from __future__ import annotations

import sqlite3

from turso_dbapi.fetch.access import AccessPolicy
from turso_dbapi.fetch.btree_readahead import BtreeMap, btree_children

PS = 4096


def build(path):
    """A 3-level table (root -> interior -> leaves) followed by an index."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, x BLOB)")
    conn.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 150000) "
                 "INSERT INTO t SELECT i, i % 977, randomblob(20) FROM s")
    conn.execute("CREATE INDEX t_k ON t(k)")
    conn.commit()
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 't'").fetchone()[0]
    n = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    with open(path, "rb") as f:
        data = f.read()
    return root, n, {p: data[(p - 1) * PS:p * PS] for p in range(1, n + 1)}


def test_interior_siblings_on_the_second_descent_and_scans_keep_to_their_tree(tmp_path):
    root, n, pages = build(str(tmp_path / "a.db"))
    level1 = btree_children(pages[root], root, PS)
    assert len(level1) >= 3 and all(btree_children(pages[c], c, PS) for c in level1)  # 3 levels
    hints = BtreeMap(PS)
    hints.note(root, pages[root])
    present = {1, root}
    ra = AccessPolicy(PS, 128 * 1024, 4 * 1024 * 1024, hints)
    hints.note(level1[0], pages[level1[0]])
    present.add(level1[0])
    # (A1) the first miss below the root costs its page; (A4) the second brings every
    # missing sibling
    read = {1, root}  # pages SQLite read (was_read): level1[0] was fetched, never read
    assert ra.plan(level1[2], n, present.__contains__, read.__contains__) == [level1[2]]
    plan = ra.plan(level1[1], n, present.__contains__, read.__contains__)
    assert set(level1) - present <= set(plan) and set(plan) <= set(level1)
    present.update(plan)
    for p in level1:
        hints.note(p, pages[p])
    # (A2) a scan: the leaf after one that was read brings the next leaves in key order,
    # 4 pages first, then 4 times more per miss; never a page of another B-tree; (A6) each
    # window runs on to a page-number boundary of its size (the leaves lie in page order)
    leaves = [c for p in level1 for c in btree_children(pages[p], p, PS)]
    assert leaves == sorted(leaves)
    present.add(leaves[0])
    read.add(leaves[0])
    first = ra.plan(leaves[1], n, present.__contains__, read.__contains__)
    assert first == leaves[1:1 + len(first)] and 4 <= len(first) < 8 and first[-1] % 4 == 0, first
    present.update(first)
    read.update(first)
    nxt = leaves[1 + len(first)]
    second = ra.plan(nxt, n, present.__contains__, read.__contains__)
    assert second == leaves[1 + len(first):1 + len(first) + len(second)], second
    assert 16 <= len(second) < 32 and second[-1] % 16 == 0, second
    # a lookup elsewhere is random again: its page alone
    assert ra.plan(leaves[-3], n, present.__contains__, read.__contains__) == [leaves[-3]]


def test_unknown_pages_cost_their_page_and_runs_of_them_grow(tmp_path):
    hints = BtreeMap(PS)
    ra = AccessPolicy(PS, 128 * 1024, 4 * 1024 * 1024, hints)
    assert ra.plan(100, 1000, lambda p: False) == [100]  # (A1)
    assert ra.plan(101, 1000, lambda p: False) == [101, 102, 103, 104]  # (A3) a run: 4 pages
    # then 4 times more, on to the next boundary of 16 pages (A6): 105..128
    assert ra.plan(105, 1000, lambda p: False) == list(range(105, 129))
    assert ra.plan(500, 1000, lambda p: False) == [500]  # a jump: random again
    assert ra.plan(2, 1000, lambda p: False) == [2]  # page 1 then 2 is no run (open, then a root)
    hints.clear()
    assert hints.parent_of(100) is None


def interior_page(children, right):
    """A table-interior page (type 5) pointing at ``children`` then ``right``."""
    page = bytearray(PS)
    page[0] = 5
    page[3:5] = len(children).to_bytes(2, "big")
    page[8:12] = right.to_bytes(4, "big")
    for i, child in enumerate(children):
        off = 1000 + 5 * i
        page[12 + 2 * i:14 + 2 * i] = off.to_bytes(2, "big")
        page[off:off + 4] = child.to_bytes(4, "big")
        page[off + 4] = i + 1  # the key, a one-byte varint
    return bytes(page)


def test_a_descent_is_not_taken_for_a_scan():
    hints = BtreeMap(PS)
    ra = AccessPolicy(PS, 128 * 1024, 4 * 1024 * 1024, hints)
    assert ra.plan(30, 200, lambda p: False) == [30]  # the interior page alone
    hints.note(30, interior_page(list(range(33, 96)), 96))  # its children follow it in the file
    # next miss: a child just past it. By page numbers alone this continues a scan (a
    # policy of page numbers only doubled its window to 64 pages); it is a descent: one page.
    assert ra.plan(33, 200, lambda p: False) == [33]
