"""RoaringBitmap portable serialization (RoaringFormatSpec), u32 members.

Used for the `/pull-updates` page selector (spec §2.4). Peers emit both layouts: cookie
12346 (array/bitmap containers, offsets always present) and cookie 12347 (some run
containers; offsets only when there are at least 4 containers), so both are decoded.
Decoding works on ranges, so a hostile 600 KiB bitmap covering 2^32 ids costs nothing
until the caller intersects it with the pages that actually exist.
"""

from __future__ import annotations

import struct
from itertools import groupby
from typing import Iterable, List, Sequence, Tuple

SERIAL_COOKIE_NO_RUNCONTAINER = 12346
SERIAL_COOKIE = 12347
NO_OFFSET_THRESHOLD = 4
ARRAY_MAX = 4096  # an array container holds at most this many values
BITMAP_BYTES = 8192

Range = Tuple[int, int]  # half-open [start, stop)


# --------------------------------------------------------------------------- encoding


def _runs(lows: Sequence[int]) -> List[Range]:
    runs: List[Range] = []
    start = prev = lows[0]
    for v in lows[1:]:
        if v != prev + 1:
            runs.append((start, prev + 1))
            start = v
        prev = v
    runs.append((start, prev + 1))
    return runs


def _container(lows: List[int]) -> Tuple[bool, bytes]:
    """Smallest container for sorted distinct lows: ``(is_run, data)``.

    Ties go to the run container, which is what a range insert of >= 3 values produces
    in the Rust client (so prefix selectors come out byte-identical to its).
    """
    card = len(lows)
    runs = _runs(lows)
    run_size = 2 + 4 * len(runs)
    other_size = 2 * card if card <= ARRAY_MAX else BITMAP_BYTES
    if run_size <= other_size:
        flat = [x for a, b in runs for x in (a, b - a - 1)]
        return True, struct.pack(f"<H{len(flat)}H", len(runs), *flat)
    if card <= ARRAY_MAX:
        return False, struct.pack(f"<{card}H", *lows)
    bits = 0
    for v in lows:
        bits |= 1 << v
    return False, bits.to_bytes(BITMAP_BYTES, "little")


def serialize(values: Iterable[int]) -> bytes:
    """Portable serialization of a set of u32 values (duplicates allowed, any order)."""
    vals = sorted(set(values))
    if vals and (vals[0] < 0 or vals[-1] > 0xFFFFFFFF):
        raise ValueError("roaring bitmap members must be in [0, 2**32)")
    keys: List[int] = []
    cards: List[int] = []
    datas: List[bytes] = []
    flags: List[bool] = []
    for k, group in groupby(vals, key=lambda v: v >> 16):
        lows = [v & 0xFFFF for v in group]
        is_run, data = _container(lows)
        keys.append(k)
        cards.append(len(lows))
        datas.append(data)
        flags.append(is_run)
    return _assemble(keys, cards, datas, flags)


def _assemble(keys: List[int], cards: List[int], datas: List[bytes], flags: List[bool]) -> bytes:
    n = len(keys)
    desc = b"".join(struct.pack("<HH", k, c - 1) for k, c in zip(keys, cards))
    if any(flags):
        head = struct.pack("<I", SERIAL_COOKIE | ((n - 1) << 16))
        flagbytes = bytearray((n + 7) // 8)
        for i, f in enumerate(flags):
            if f:
                flagbytes[i >> 3] |= 1 << (i & 7)
        head += bytes(flagbytes) + desc
        with_offsets = n >= NO_OFFSET_THRESHOLD
    else:
        head = struct.pack("<II", SERIAL_COOKIE_NO_RUNCONTAINER, n) + desc
        with_offsets = True
    if with_offsets:
        pos = len(head) + 4 * n
        offsets = []
        for d in datas:
            offsets.append(pos)
            pos += len(d)
        head += struct.pack(f"<{n}I", *offsets)
    return head + b"".join(datas)


def serialize_range(start: int, stop: int) -> bytes:
    """Bitmap of ``range(start, stop)`` (a bootstrap prefix or chunk), byte-identical to
    ``serialize(range(start, stop))`` but built per 65536-id container, never per id: the
    whole u32 space is 65536 containers (~0.1 s), not 2^32 values."""
    if start < 0 or stop > 1 << 32:
        raise ValueError("roaring bitmap members must be in [0, 2**32)")
    keys: List[int] = []
    cards: List[int] = []
    datas: List[bytes] = []
    flags: List[bool] = []
    for k in range(start >> 16, ((stop - 1) >> 16) + 1 if stop > start else start >> 16):
        a = max(start, k << 16) & 0xFFFF
        b = min(stop, (k + 1) << 16) - (k << 16)  # exclusive, up to 65536
        card = b - a
        is_run = 6 <= 2 * card  # one run (2 + 4 bytes) against an array; ties go to the run
        keys.append(k)
        cards.append(card)
        flags.append(is_run)
        datas.append(struct.pack("<HHH", 1, a, card - 1) if is_run
                     else struct.pack(f"<{card}H", *range(a, b)))
    return _assemble(keys, cards, datas, flags)


# --------------------------------------------------------------------------- decoding


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("roaring bitmap truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16s(self, count: int) -> Tuple[int, ...]:
        return struct.unpack(f"<{count}H", self.take(2 * count))

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]


def _bitmap_ranges(data: bytes) -> List[Range]:
    ranges: List[Range] = []
    words = struct.unpack("<1024Q", data)
    start = -1
    for wi, word in enumerate(words):
        base = wi * 64
        if word == 0:
            if start >= 0:
                ranges.append((start, base))
                start = -1
            continue
        if word == 0xFFFFFFFFFFFFFFFF:
            if start < 0:
                start = base
            continue
        for bit in range(64):
            if word >> bit & 1:
                if start < 0:
                    start = base + bit
            elif start >= 0:
                ranges.append((start, base + bit))
                start = -1
    if start >= 0:
        ranges.append((start, 65536))
    return ranges


def deserialize_ranges(data: bytes) -> List[Range]:
    """Decode to sorted, merged half-open ranges; malformed input raises ``ValueError``."""
    data = bytes(data)
    r = _Reader(data)
    cookie = r.u32()
    if cookie & 0xFFFF == SERIAL_COOKIE:
        n = (cookie >> 16) + 1
        flagbytes = r.take((n + 7) // 8)
        is_run = [bool(flagbytes[i >> 3] >> (i & 7) & 1) for i in range(n)]
        has_offsets = n >= NO_OFFSET_THRESHOLD
    elif cookie == SERIAL_COOKIE_NO_RUNCONTAINER:
        n = r.u32()
        if n > 65536:
            raise ValueError(f"roaring bitmap claims {n} containers (max 65536)")
        is_run = [False] * n
        has_offsets = True
    else:
        raise ValueError(f"not a portable roaring bitmap (cookie {cookie & 0xFFFF})")
    desc = r.u16s(2 * n)
    offsets: Tuple[int, ...] = struct.unpack(f"<{n}I", r.take(4 * n)) if has_offsets else ()

    out: List[Range] = []
    prev_key = -1
    for i in range(n):
        key, card = desc[2 * i], desc[2 * i + 1] + 1
        if key <= prev_key:
            raise ValueError("roaring container keys are not strictly increasing")
        prev_key = key
        if has_offsets and offsets[i] != r.pos:
            raise ValueError(f"roaring container {i} offset {offsets[i]} != {r.pos}")
        if is_run[i]:
            (nruns,) = r.u16s(1)
            flat = r.u16s(2 * nruns)
            local = []
            total = 0
            prev_end = -1
            for j in range(nruns):
                start, length = flat[2 * j], flat[2 * j + 1] + 1
                if start <= prev_end or start + length > 65536:
                    raise ValueError("roaring run container has overlapping or invalid runs")
                local.append((start, start + length))
                prev_end = start + length - 1
                total += length
        elif card <= ARRAY_MAX:
            lows = r.u16s(card)
            if any(b <= a for a, b in zip(lows, lows[1:])):
                raise ValueError("roaring array container is not strictly increasing")
            local = _runs(lows)
            total = card
        else:
            block = r.take(BITMAP_BYTES)
            total = bin(int.from_bytes(block, "little")).count("1")  # int.bit_count is 3.10+
            local = _bitmap_ranges(block)
        if total != card:
            raise ValueError(f"roaring container {i}: cardinality {total} != declared {card}")
        base = key << 16
        for a, b in local:
            if out and out[-1][1] == base + a:
                out[-1] = (out[-1][0], base + b)
            else:
                out.append((base + a, base + b))
    if r.pos != len(data):
        raise ValueError(f"roaring bitmap has {len(data) - r.pos} trailing bytes")
    return out


def deserialize(data: bytes, max_cardinality: int = 1 << 24) -> List[int]:
    """Decode to a sorted list of members; refuses bitmaps above ``max_cardinality``."""
    ranges = deserialize_ranges(data)
    if sum(b - a for a, b in ranges) > max_cardinality:
        raise ValueError(f"roaring bitmap has more than {max_cardinality} members")
    return [v for a, b in ranges for v in range(a, b)]


def clip(ranges: Iterable[Range], limit: int) -> List[Range]:
    """Intersect ranges with ``[0, limit)``."""
    return [(a, min(b, limit)) for a, b in ranges if a < limit]
