"""Push batches cut only at local transaction boundaries (``push_operations_threshold``).

The change log is key-based (capture.py): push sends each changed key's CURRENT row, the
net effect of every logged change of that key. A cut between two local transactions is
therefore consistent only where no key has log rows on both sides of it: such a key's one
statement would carry the later transaction's effect into the earlier batch, or leave the
earlier transaction's change out of it. So:

* the candidate cuts are the log ids that start a local transaction (``Changes.starts``:
  rows whose ``x`` is a transaction id, capture.py / _native/txn.c) after the BARRIER
  (``Changes.barrier``): rows logged in bulk (a tail folded, tail.py, or a new table's
  rows) belong to transactions nobody recorded, possibly older than any mark, so no cut
  is made at or before the first of them; a push that sends tail rows (unlogged, their
  transactions unknown too) makes no cut at all;
* a candidate is VALID when no collected key has its oldest log id before it and its newest
  at or after it;
* a batch is sealed at the first valid cut after it holds ``threshold`` row changes, its
  high-water log id being that cut - 1 (every log row before the cut is in this batch or an
  earlier one);
* when no valid cut follows, the rest goes as ONE batch, however far over the threshold
  it is: one local transaction (or keys that chain several) is never split.

Without a threshold everything is one batch. Schema changes go first (DDL before the rows)
and last (indexes, views, triggers after them), as before. Changes made before transaction
ids were recorded (an older version's log) and the changes a pull replayed (one local
transaction, rebase.py) carry no boundaries: they go as one batch.
"""

from __future__ import annotations

import bisect
from typing import List, Optional, Tuple

from .changes import Changes, Stmt

Batch = Tuple[List[Stmt], int]  # (statements, high-water log id)


def valid_cuts(changes: Changes) -> List[int]:
    """The transaction starts no collected key straddles, ascending."""
    starts = sorted(s for s in changes.starts if s > changes.barrier)
    if not starts:
        return []
    # A key with log rows in [first, newest] straddles every start s with first < s <= newest:
    # mark those index ranges of ``starts`` with a difference array.
    diff = [0] * (len(starts) + 1)
    for ch in changes.rows:
        first = ch.first_id or ch.change_id
        lo = bisect.bisect_right(starts, first)
        hi = bisect.bisect_right(starts, ch.change_id)
        if lo < hi:
            diff[lo] += 1
            diff[hi] -= 1
    out, depth = [], 0
    for i, s in enumerate(starts):
        depth += diff[i]
        if depth == 0:
            out.append(s)
    return out


def split(changes: Changes, groups: List[List[Stmt]], threshold: Optional[int]) -> List[Batch]:
    """[(statements, high-water log id)]; ``groups`` are the statements of each of
    ``changes.rows`` (Changes.row_groups)."""
    rows = [s for g in groups for s in g]
    if not threshold or threshold <= 0:
        return [(changes.before + rows + changes.after, changes.last_id)]
    cuts = valid_cuts(changes)
    out: List[Batch] = []
    cur: List[Stmt] = list(changes.before)
    n = 0
    for i, (ch, group) in enumerate(zip(changes.rows, groups)):
        cur.extend(group)
        n += 1 if group else 0
        if n < threshold or i + 1 == len(changes.rows):
            continue
        # Rows are in newest-log-id order and none straddles a valid cut, so a valid cut
        # in (this row's newest id, the next row's] has every row so far before it and
        # every later row after it.
        c = bisect.bisect_right(cuts, ch.change_id)
        if c < len(cuts) and cuts[c] <= changes.rows[i + 1].change_id:
            out.append((cur, cuts[c] - 1))
            cur, n = [], 0
    cur.extend(changes.after)
    out.append((cur, changes.last_id))
    return out
