"""Run a module's tests in both journal modes of a new Turso replica: WAL (the default,
``sync/replica.py`` DEFAULT_JOURNAL_MODE) and rollback (``journal_mode="delete"``). A module
opts in with ``pytestmark = pytest.mark.usefixtures("new_replica_mode")``: each of its tests
then runs once per mode, for replicas made in this process."""

from __future__ import annotations

import pytest

from turso_dbapi.sync import replica


@pytest.fixture(params=["wal", "delete"])
def new_replica_mode(request, monkeypatch) -> str:
    monkeypatch.setattr(replica, "DEFAULT_JOURNAL_MODE", request.param)
    return request.param
