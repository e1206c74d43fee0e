"""Push steps encoded from a per-SQL template (protocol/hrana_batch.py) are byte for byte
what json.dumps writes for the same steps built as dicts, for every kind of value and for
SQL text that looks like the template's own cut points."""

from __future__ import annotations

import json
import random

import pytest

from turso_dbapi.protocol import hrana_batch as h

SQLS = [
    'INSERT INTO "p"("id", "name") VALUES (?, ?) ON CONFLICT("id") DO UPDATE SET "name" = excluded."name"',
    'DELETE FROM "t" WHERE rowid = ? -- "step":1} "args":"x" \\ \u00e9 \U0001f600',
    "SELECT 1",
]
VALUES = [0, -1, 2**63 - 1, -(2**63), 10**30, 1.5, -0.0, 1e300, float("inf"), float("-inf"), "", "a\"b\\c\n\t",
          "\u00e9\u4e2d\U0001f600\x00", b"", b"\x00\xff" * 7, b"abc", None, True, False]


def dict_body(steps):
    return json.dumps(h.batch_request(steps), separators=(",", ":")).encode()


@pytest.mark.parametrize("sql", SQLS)
def test_template_steps_are_the_dumped_dicts_byte_for_byte(sql):
    rng = random.Random(7)
    as_dicts, encoded = [h.step(h.stmt("BEGIN IMMEDIATE"))], [h.step(h.stmt("BEGIN IMMEDIATE"))]
    for i in range(1, 200):
        args = [rng.choice(VALUES) for _ in range(rng.randrange(0, 5))]
        as_dicts.append(h.step(h.stmt(sql, args), h.and_(h.IN_TRANSACTION, h.ok(i - 1))))
        encoded.append(h.template(sql).step(i - 1, args))
    assert h.batch_body(encoded) == dict_body(as_dicts)
    assert all(isinstance(s, h.Encoded) for s in encoded[1:])


def test_a_batch_of_dicts_alone_is_json_dumps():
    steps = [h.step(h.stmt("BEGIN")), h.step(h.stmt("SELECT ?", [b"\x01"]), h.IN_TRANSACTION)]
    assert h.batch_body(steps) == dict_body(steps)
