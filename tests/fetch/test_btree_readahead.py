"""B-tree-aware readahead rules (turso_dbapi/fetch/btree_readahead.py) on a real SQLite file."""

from __future__ import annotations

import sqlite3

from turso_dbapi.fetch.btree_readahead import BtreeMap, BtreeReadahead, btree_children
from turso_dbapi.fetch.readahead import Readahead

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


def test_interior_siblings_and_known_children_only(tmp_path):
    root, n, pages = build(str(tmp_path / "a.db"))
    level1 = btree_children(pages[root], root, PS)
    assert len(level1) >= 3 and all(btree_children(pages[c], c, PS) for c in level1)  # 3 levels
    hints = BtreeMap(PS)
    hints.note(root, pages[root])
    present = {1, root}
    ra = BtreeReadahead(Readahead(PS, 128 * 1024), hints)
    # nothing known about the level below the root yet: no siblings
    assert hints.parent_of(level1[1]) == root
    hints.note(level1[0], pages[level1[0]])
    present.add(level1[0])
    # one interior child seen; the first miss below the root stays small, the second one
    # brings every missing sibling (rule 1)
    seg = 32

    def segment(p):
        return set(range((p - 1) // seg * seg + 1, (p - 1) // seg * seg + seg + 1))

    first = ra.plan(level1[2], n, present.__contains__)
    assert set(first) <= segment(level1[2])
    plan = ra.plan(level1[1], n, present.__contains__)
    assert not set(plan) <= segment(level1[1])
    assert set(level1) - present <= set(plan)
    # rule 2: speculative pages are known B-tree children (no index pages, no strangers)
    for p in plan:
        assert p == level1[1] or hints.is_known_child(p)
    leaves = btree_children(pages[level1[0]], level1[0], PS)
    index_root = max(p for p in pages if p not in leaves and p not in level1 and p != root)
    plan = ra.plan(leaves[-1], n, present.__contains__)
    assert leaves[-1] in plan and index_root not in plan
    assert set(plan) <= set(leaves) | set(level1)


def test_unknown_pages_keep_the_plain_segment_policy(tmp_path):
    root, n, pages = build(str(tmp_path / "b.db"))
    hints = BtreeMap(PS)
    inner = Readahead(PS, 128 * 1024)
    plain = Readahead(PS, 128 * 1024).plan(100, n, lambda p: False)
    assert BtreeReadahead(inner, hints).plan(100, n, lambda p: False) == plain
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
    ra = BtreeReadahead(Readahead(PS, 128 * 1024), hints)
    assert ra.plan(30, 200, lambda p: False)[-1] == 32  # the interior page's own segment
    hints.note(30, interior_page(list(range(33, 96)), 96))  # its children follow it in the file
    # next miss: a child just past that segment. The plain policy reads it as a scan and
    # doubles its window to 64 pages; a descent stays in its own segment (rule 3).
    assert ra.plan(33, 200, lambda p: False) == list(range(33, 65))
    plain = Readahead(PS, 128 * 1024)
    plain.plan(30, 200, lambda p: False)
    assert len(plain.plan(33, 200, lambda p: False)) == 64
