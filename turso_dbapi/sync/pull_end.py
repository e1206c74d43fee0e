"""How an apply ends, the same for both journal modes (``apply.py``, ``wal_apply.py``).

``finish``: the replay committed, so the metadata switches to the new revision (one atomic
save: the point after which a crash no longer redoes the apply), then the stage and the
replay file go and the apply flag is cleared. ``abandon``: a failure before the apply began
(``started`` False) leaves no trace of the pull; after it began, the stage stays for a redo.
"""

from __future__ import annotations

import time
from typing import Optional

from ..storage.apply_flag import ApplyFlag
from . import metadata as sync_meta, rebase
from .stage import Staged, remove_stage


def finish(replica: str, meta: sync_meta.SyncMeta, staged: Staged, flag: ApplyFlag) -> sync_meta.SyncMeta:
    meta.synced_revision = staged.revision
    meta.db_size_pages = staged.db_size
    meta.pull_gen += 1
    meta.last_pull_unix_time = int(time.time())
    meta.pending_pull = None
    sync_meta.save(replica, meta)
    remove_stage(replica)
    rebase.remove_replay(replica)
    flag.clear()
    flag.close()
    return meta


def abandon(replica: str, prepared: Optional[rebase.Prepared], started: bool) -> None:
    if prepared is not None:
        prepared.discard()
    if not started:
        remove_stage(replica)  # the apply never began: the pull leaves no trace
        rebase.remove_replay(replica)
