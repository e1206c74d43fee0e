"""The reference server answers malformed request bodies with 400 and a message, never
500 (issue 14, item 12), and keeps serving afterwards."""

from __future__ import annotations

import pytest

from turso_dbapi.protocol.sync_wire import PullUpdatesRequest, parse_response


@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_deeply_nested_json_on_the_pipeline_is_a_400(turso_server, depth):
    body = b"[" * depth + b"]" * depth
    r = turso_server.session.post(turso_server.url + "/v2/pipeline", data=body, timeout=30)
    assert r.status_code == 400, r.text[:200]
    assert "nested too deeply" in r.text
    # a nesting the decoder takes but the pipeline walks further: still 400
    deep = b'{"requests": [{"type": "execute", "stmt": {"sql": "select 1", "args": ' + \
        b"[" * 900 + b"]" * 900 + b"}}]}"
    r = turso_server.session.post(turso_server.url + "/v2/pipeline", data=deep, timeout=30)
    assert r.status_code in (200, 400), r.text[:200]
    assert turso_server.db_sql("SELECT 1") == [["1"]]  # still serving


@pytest.mark.parametrize("field", ["client_revision", "server_revision"])
def test_a_5000_digit_revision_is_a_400_naming_the_field(turso_server, field):
    r = turso_server.pull_updates(PullUpdatesRequest(**{field: "9" * 5000}).encode())
    assert r.status_code == 400, r.text[:200]
    assert f"{field} has 5000 digits" in r.text
    header, _ = parse_response(turso_server.pull_updates(b"").content)  # still serving
    assert header.server_revision == turso_server.revision
