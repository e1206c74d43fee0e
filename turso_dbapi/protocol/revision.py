"""Revision strings of the reference server: unique across a reset of its history.

The protocol treats a revision as an opaque string (spec §2.5): clients store it and send it
back. The reference server numbers revisions 1, 2, 3... in its page log (``-revlog``); if
that log is lost (server restarted without it), numbering starts again and "17" would name
two different databases, so a partial replica pinned at "17" would lazily read pages of the
new history into the old one. So the server mints ``"<history>-<n>"``, where ``history``
is the 16-hex-digit id its page log drew when it was created (the same id as in its
ETags), and ``"0"`` for the empty database (the same in every history).

Both sides check the id: the server refuses a ``server_revision`` of another history (HTTP
410: it cannot serve those pages) and resends everything for such a ``client_revision``;
the client (``same_history``) refuses a reply whose history differs from the revision it
asked about or stored. Other servers' revisions (Turso Cloud: JSON; pyturso; MVCC
``g1:o7``) and plain numbers (replicas made before this format) have no history id and
are never compared.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

MAX_DIGITS = 20  # a u64 revision number has at most 20 decimal digits
_MINTED = re.compile(r"([0-9a-f]{16})-([0-9]{1,%d})" % MAX_DIGITS)  # noqa: UP031 - a regex full of braces


def mint(history: str, number: int) -> str:
    """The revision string of revision ``number`` of ``history``."""
    return "0" if number == 0 else f"{history}-{number}"


def parse(text: str) -> Optional[Tuple[Optional[str], int]]:
    """``(history or None, number)``, or None when ``text`` is not a reference-server
    revision. A plain number (made before history ids) has no history."""
    if not text or not text.isascii():
        return None
    if text.isdigit():
        return (None, int(text)) if len(text) <= MAX_DIGITS else None
    m = _MINTED.fullmatch(text)
    return (m.group(1), int(m.group(2))) if m else None


def history_of(text: Optional[str]) -> Optional[str]:
    parsed = parse(text or "")
    return parsed[0] if parsed else None


def same_history(a: Optional[str], b: Optional[str]) -> bool:
    """False only when both revisions carry a history id and the ids differ."""
    ha, hb = history_of(a), history_of(b)
    return ha is None or hb is None or ha == hb


def number_in(text: str, history: str) -> Optional[int]:
    """The number of ``text`` as a revision of ``history``: None when it is not one of the
    reference server's (or is of another history). ValueError: too many digits."""
    digits = text.rpartition("-")[2]
    if text.isascii() and digits.isdigit() and len(digits) > MAX_DIGITS:
        raise ValueError(f"has {len(digits)} digits; revisions have at most {MAX_DIGITS}")
    parsed = parse(text)
    if parsed is None or parsed[0] not in (None, history):
        return None
    return parsed[1]


def foreign(text: str, history: str, latest: int) -> str:
    """The server's message for a revision of another history (HTTP 410)."""
    return (f"revision {text!r} belongs to another history of this database: the server's page "
            f"log was reset (its history is now {history!r}, at revision "
            f"{mint(history, latest)!r}); bootstrap the replica afresh")
