"""Which files at a replica path are ours, and whether ours are intact.

A replica at ``P`` is made of files this driver created (``files``). Three
rules keep the user's data safe (README "Reliability"):

1. **Never touch a file we did not create.** ``P`` counts as ours only when one of our
   side files says so: ``P-tdbmeta.json`` (written before ``P`` is created: the claim),
   ``P-tdbsync.json`` (a Turso replica's metadata) or a ``P-tdbmap`` that starts with the
   sidecar's magic. An ordinary SQLite database (or any other file) at ``P`` is refused,
   in every mode, before anything is written.
2. **Committed local pages are never dropped silently.** They live in ``P-tdblocal`` and
   only the sidecar's CRC entries say which of its pages are real. When the sidecar is
   missing, damaged or belongs to another replica, or the cache would be started afresh
   (new remote version), and ``P-tdblocal`` holds anything, the open is refused with a
   message naming the files; nothing is removed. Without local data the files are only a
   cache of the remote, so starting afresh loses nothing.
3. **A replica answers to one remote.** Re-pointing it at another URL is refused (the
   caller compares the URL it recorded; see ``recorded_url``).
"""

from __future__ import annotations

import json
import os
from typing import Optional

from ..errors import OperationalError
from . import files

SIDECAR_MAGIC = b"TDBMAP\x00\x01"  # pagestore.c MAGIC
_CLAIMS = (files.CACHE_META, files.SYNC_META)


def has_local_data(path: str) -> bool:
    """Does ``P-tdblocal`` hold any bytes (pages SQLite wrote to this replica)?"""
    try:
        return os.path.getsize(path + files.LOCAL) > 0
    except OSError:
        return False


def sidecar_state(path: str, page_size: int, identity: bytes) -> str:
    """``"ok"``, ``"missing"``, ``"damaged"`` (no magic / short header) or ``"other"``
    (a valid sidecar of another replica, version or page size)."""
    try:
        with open(path + files.SIDECAR, "rb") as f:
            head = f.read(64)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "damaged"
    if len(head) < 64 or head[:8] != SIDECAR_MAGIC:
        return "damaged"
    fmt = int.from_bytes(head[8:12], "little")
    ps = int.from_bytes(head[12:16], "little")
    if fmt != 1 or ps != page_size or head[32:64] != identity:
        return "other"
    return "ok"


def is_ours(path: str) -> bool:
    """Rule 1: does one of our side files claim ``path``?"""
    if any(os.path.exists(path + s) for s in _CLAIMS):
        return True
    try:
        with open(path + files.SIDECAR, "rb") as f:
            return f.read(8) == SIDECAR_MAGIC
    except OSError:
        return False


def refuse_foreign(path: str, what: str) -> None:
    """Rule 1: raise when ``path`` exists and no side file of ours claims it."""
    if os.path.lexists(path) and not is_ours(path):
        raise OperationalError(
            f"{path} already exists and was not created by turso_dbapi (no {os.path.basename(path)}"
            f"-tdbmeta.json or -tdbsync.json beside it), so it cannot hold the local replica of "
            f"{what}: it would be overwritten. Nothing was changed; choose another local_path "
            "(or open the file itself with turso_dbapi.connect(path) as a plain database)")


def refuse_dropping_local(path: str, why: str, fix: str = "") -> None:
    """Rule 2: raise when starting afresh would drop pages written locally."""
    if has_local_data(path):
        raise OperationalError(
            f"the replica {path} {why}, and it holds local changes ({path}-tdblocal) that "
            "would be lost by starting afresh; nothing was changed. "
            + (fix or "Copy what you need out of it with another tool, or move the replica "
               "files away (or use another local_path) to start a fresh replica"))


def recorded_url(path: str) -> Optional[str]:
    """The (redacted) URL ``P-tdbmeta.json`` says this replica caches, if any."""
    try:
        with open(path + files.CACHE_META, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    return url if isinstance(url, str) else None


def refuse_repoint(path: str, recorded: Optional[str], wanted: str) -> None:
    """Rule 3: raise when the replica was made from another remote."""
    if recorded and recorded != wanted:
        raise OperationalError(
            f"the replica {path} belongs to {recorded}, not {wanted}: a replica answers to the "
            "remote it was made from (pages of two databases must never mix). Nothing was "
            "changed; use another local_path for this remote")
