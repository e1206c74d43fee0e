"""Durable, atomic file replacement: temp file -> fsync -> rename -> fsync of the directory.

After a crash a reader finds the old file or the new one, whole, never a torn mix (STYLE
habit 10). The one implementation for every file this driver replaces: the cache metadata
(``-tdbmeta.json``), the sync metadata (``-tdbsync.json``) and the pull stage
(``-tdbpull``, which is written by its own writer and published with ``publish``).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, Mapping, Optional


def fsync_dir(path: str) -> None:
    """Make a rename of ``path`` durable: fsync its directory."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str, path: str) -> None:
    """Rename the (already fsynced) ``tmp`` over ``path`` and make the rename durable."""
    os.replace(tmp, path)
    fsync_dir(path)


def prepare(path: str, data: bytes, *, durable: bool = True) -> str:
    """The first half of ``write_atomic``: ``data`` in a temp file beside ``path`` (unique
    per process and thread), fsynced unless ``durable=False``; its name, for ``publish``."""
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_atomic(path: str, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: temp, fsync, rename, fsync of the directory.
    ``durable=False`` skips both fsyncs: still atomic for other processes, but after a
    power loss the file may be missing or empty - only for files whose loss is harmless
    (every reader treats a missing or unreadable file as absent)."""
    tmp = prepare(path, data, durable=durable)
    if durable:
        publish(tmp, path)
    else:
        os.replace(tmp, path)


def write_json_atomic(path: str, data: Mapping[str, Any], *, durable: bool = True) -> None:
    """``write_atomic`` of ``data`` as indented, key-sorted JSON."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"), durable=durable)


def read_json(path: str) -> Optional[Dict[str, Any]]:
    """A JSON object file, or None when it is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
