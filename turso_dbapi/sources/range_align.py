"""Cacheable byte ranges: every range we ask for is ONE aligned block of a few fixed sizes.

A CDN or S3 cache keys a ranged reply by its range. Ranges cut wherever a reader's miss
happened to start are unique to that reader; ranges that are aligned blocks of a few fixed
sizes (one page, 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB, 4 MiB: each 4x the previous) are
the same for every reader of the file, so one reader's request warms the cache for the
next (DESIGN: "remote reads stay cacheable").

(R1) A block of S bytes starts at a multiple of S; S is one page or one of ``BLOCK_SIZES``
     at least a page long (smaller sizes cannot hold a page).
(R2) ``aligned_blocks`` splits a run of pages EXACTLY into such blocks, largest first (the
     greedy split of a buddy allocator): no byte more than the run, at most 3 blocks of
     each size on each side of the largest. A block reaching past the end of the file is
     cut there (the file's last block is the same for every reader too).
(R3) Without multi-range (S3, servers that refuse it), a span of runs costs a request per
     block: ``rounded_span`` widens it to the boundaries of the largest block size for which
     that adds at most ``max_extra`` pages and no more than the span itself (gap filling's
     bound, range.py (7)), so a scan window unaligned by a page or two is still one or two
     requests; the extra pages are dropped like a gap's.
(R4) The miss policy (``fetch.access``) makes its windows end on a boundary of their own
     size, so a scan's run splits into a few blocks (a window continuing the scan starts
     aligned and is usually one block).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

KIB = 1024
BLOCK_SIZES = (4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 1024 * KIB, 4096 * KIB)  # (R1)


def page_runs(pgnos: Sequence[int]) -> List[Tuple[int, int]]:
    """Sorted distinct page numbers grouped into inclusive (first, last) contiguous runs."""
    runs: List[Tuple[int, int]] = []
    for p in sorted(set(pgnos)):
        if runs and p == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def block_pages(page_size: int) -> List[int]:
    """The allowed block sizes in pages, largest first (R1)."""
    if page_size <= 0:
        raise ValueError(f"page_size must be positive, got {page_size}")
    sizes = {1} | {s // page_size for s in BLOCK_SIZES if s >= page_size and s % page_size == 0}
    return sorted(sizes, reverse=True)


def aligned_blocks(first: int, last: int, page_size: int) -> List[Tuple[int, int]]:
    """The run of pages ``first..last`` (1-based, inclusive) as aligned blocks (R2)."""
    if first < 1 or last < first:
        raise ValueError(f"not a run of pages: {first}..{last}")
    sizes = block_pages(page_size)
    out: List[Tuple[int, int]] = []
    p = first - 1  # 0-based: page p starts at byte p * page_size
    end = last  # exclusive, 0-based
    while p < end:
        k = next(k for k in sizes if p % k == 0 and p + k <= end)  # 1 always fits
        out.append((p + 1, p + k))
        p += k
    return out


def rounded_span(first: int, last: int, page_size: int, n_pages: int, max_extra: int) -> Tuple[int, int]:
    """(R3) ``first..last`` widened to aligned boundaries (at most ``max_extra`` pages and
    the span's own length more; never past page ``n_pages``, the end of the file)."""
    bound = min(max_extra, last - first + 1)
    for k in block_pages(page_size):
        lo = (first - 1) // k * k + 1
        hi = min(n_pages, -(-last // k) * k)
        if (first - lo) + (hi - last) <= bound:
            return lo, hi
    return first, last


def is_aligned(start: int, end: int, page_size: int, file_size: int) -> bool:
    """Is the byte range ``start..end`` (inclusive) one aligned block (R1), or such a block
    cut at the end of the file (R2)? What tests check every Range header against."""
    length = end - start + 1
    if start % page_size or length <= 0:
        return False
    for pages in block_pages(page_size):
        size = pages * page_size
        if start % size == 0 and (length == size or (end == file_size - 1 and length < size)):
            return True
    return False
