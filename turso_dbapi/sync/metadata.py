"""Sync metadata of a Turso replica: ``<replica>-tdbsync.json``.

It records what the local files mean: which server revision the synced layer holds, the
revision lazy fetches are pinned to, the client id used for pushes, and the saved
configuration that lets ``connect(local_path)`` reopen without the URL.

Writes are atomic and durable (``_util.atomic``): temp file, fsync, rename, fsync of the directory — so a
crash leaves either the old or the new metadata, never a torn file. The configuration is
rewritten only when a new non-null value differs, so concurrent opens do not race on it.
Auth tokens are never stored.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any, Dict, Optional

from .._util.atomic import prepare as atomic_prepare
from .._util.atomic import publish as atomic_publish
from .._util.atomic import write_atomic
from ..errors import OperationalError
from ..storage.files import SYNC_META

FORMAT = "v1"


@dataclasses.dataclass
class SyncMeta:
    client_unique_id: str
    synced_revision: Optional[str] = None
    partial_bootstrap_server_revision: Optional[str] = None
    db_size_pages: int = 0
    pull_gen: int = 0
    last_pull_unix_time: Optional[int] = None
    last_push_unix_time: Optional[int] = None
    remote_url: Optional[str] = None
    segment_size: Optional[int] = None
    prefetch: Optional[bool] = None
    # Set while a pull's staged pages are being applied ({"revision": ..., "db_size": ...});
    # found set at open, the apply is redone from the staging file (it is idempotent).
    pending_pull: Optional[Dict[str, Any]] = None
    # True from the start of a bootstrap until its last step (sync.bootstrap): the files
    # are a cache being filled, nothing of the user's; an open finding it bootstraps again.
    bootstrapping: bool = False
    version: str = FORMAT

    @classmethod
    def new(cls, client_name: str) -> SyncMeta:
        return cls(client_unique_id=f"{client_name}-{uuid.uuid4()}")

    @property
    def partial(self) -> bool:
        return self.partial_bootstrap_server_revision is not None

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        if not self.bootstrapping:  # written only while true: a finished replica's file
            del fields["bootstrapping"]  # has the fields it always had
        return json.dumps(fields, separators=(",", ":"), sort_keys=False)

    @classmethod
    def from_json(cls, text: str, path: str) -> SyncMeta:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise OperationalError(f"sync metadata {path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("version"), str):
            raise OperationalError(f"sync metadata {path} has no version field")
        if raw["version"] != FORMAT:
            raise OperationalError(
                f"sync metadata {path} has unsupported version {raw['version']!r} (expected {FORMAT!r})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        if "client_unique_id" not in raw:
            raise OperationalError(f"sync metadata {path} lacks client_unique_id")
        return cls(**{k: v for k, v in raw.items() if k in known})


def meta_path(replica_path: str) -> str:
    return replica_path + SYNC_META


def load(replica_path: str) -> Optional[SyncMeta]:
    """The metadata, or None when the file is missing or empty ("no metadata")."""
    path = meta_path(replica_path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    if not text.strip():
        return None
    return SyncMeta.from_json(text, path)


def save(replica_path: str, meta: SyncMeta) -> None:
    write_atomic(meta_path(replica_path), meta.to_json().encode())


def prepare(replica_path: str, meta: SyncMeta) -> str:
    """``save`` in two halves: the temp file, flushed (its name) ..."""
    return atomic_prepare(meta_path(replica_path), meta.to_json().encode())


def publish(replica_path: str, tmp: str) -> None:
    """... then the rename over the metadata and the directory's fsync."""
    atomic_publish(tmp, meta_path(replica_path))


def merge_configuration(meta: SyncMeta, **new: Any) -> bool:
    """Apply non-null configuration values that differ; True when something changed."""
    changed = False
    for key, value in new.items():
        if value is not None and getattr(meta, key) != value:
            setattr(meta, key, value)
            changed = True
    return changed
