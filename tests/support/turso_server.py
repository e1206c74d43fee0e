"""Fixtures: the reference server on a free loopback port over a generated database.

``turso_server`` is a fresh, empty server per test; ``turso_server_factory(...)`` makes
more (auth token, pre-filled database file). ``server.db_sql(sql)`` runs SQL through
``/v2/pipeline`` exactly like pyturso's test harness (spec §7.3): the rows come back as
lists of each cell's ``"value"``, so integers are strings.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Optional

import pytest
import requests

from turso_dbapi.protocol import revision
from turso_dbapi.server import ReferenceServer


def rev_no(text: str) -> int:
    """The number in a revision string of the reference server ("0", "<history>-<n>")."""
    parsed = revision.parse(text)
    assert parsed is not None, f"not a reference-server revision: {text!r}"
    return parsed[1]


class TestServer:
    __test__ = False  # not a test class, despite the name

    def __init__(self, db_path: str, auth_token: Optional[str] = None, **options: Any) -> None:
        self.db_path = db_path
        self.auth_token = auth_token
        self.server = ReferenceServer(db_path, auth_token=auth_token, **options).start()
        self.url = self.server.url
        self.file_url = self.server.file_url  # where plain ranged GETs read the database
        self.session: Optional[requests.Session] = requests.Session()

    def db_url(self) -> str:
        return self.url

    @property
    def revision(self) -> str:
        """The latest revision string, as the server sends it ("0", "<history>-<n>")."""
        return self.server.db.revision_text

    @property
    def revision_number(self) -> int:
        return self.server.db.revision

    @property
    def stats(self) -> dict:
        return self.server.stats

    def _headers(self) -> dict:
        headers = {"Host": ""}  # the pyturso harness sends an empty Host header
        if self.auth_token:
            headers["Authorization"] = f"Bearer {self.auth_token}"
        return headers

    def pipeline(self, body: Any) -> dict:
        r = self.session.post(
            self.url + "/v2/pipeline", json=body, headers=self._headers(), timeout=60
        )
        r.raise_for_status()
        return r.json()

    def db_sql(self, sql: str) -> List[List[Any]]:
        out = self.pipeline({"requests": [{"type": "execute", "stmt": {"sql": sql}}]})
        result = out["results"][0]
        if result["type"] != "ok":
            raise RuntimeError(f"server SQL failed: {result['error']}")
        return [[cell.get("value") for cell in row] for row in result["response"]["result"]["rows"]]

    def pull_updates(self, body: bytes = b"", **headers: str) -> requests.Response:
        h = self._headers()
        h.update(
            {"content-type": "application/protobuf", "accept-encoding": "application/protobuf"}
        )
        h.update(headers)
        return self.session.post(self.url + "/pull-updates", data=body, headers=h, timeout=60)

    def stop(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
            self.server.stop()


@pytest.fixture
def turso_server_factory(tmp_path_factory) -> Callable[..., TestServer]:
    started: List[TestServer] = []

    def make(
        db_path: Optional[str] = None,
        auth_token: Optional[str] = None,
        setup: Optional[Callable[[str], None]] = None,
        **options: Any,  # ReferenceServer options, e.g. idle_timeout=0.5
    ) -> TestServer:
        if db_path is None:
            db_path = os.path.join(str(tmp_path_factory.mktemp("server")), "server.db")
        if setup is not None:
            setup(db_path)  # e.g. generate the database with sqlite3 before serving it
        srv = TestServer(db_path, auth_token, **options)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def turso_server(turso_server_factory) -> TestServer:
    return turso_server_factory()
