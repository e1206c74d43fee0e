"""A bad /pull-updates reply is refused whole and recorded nowhere (issue 14, item 5).

The replica talks to the reference server through the fault proxy; the proxy replaces one
reply with scripted bytes (real HTTP, real sockets, only the body is made up). After a
refused reply the replica's files are byte-for-byte what they were, and the next good
reply works. The hypothesis fuzz puts every header and page field at its bounds
(0, 2^31, 2^32-1, 2^32, 2^63, ...) and checks the same against a model of the rules
written from the spec (§2.1-2.7) and SQLite's limits, not from the code.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import turso_dbapi
from support.faultproxy import FaultProxy
from turso_dbapi.protocol.sync_wire import (
    PageData,
    PullUpdatesResponseHeader,
    ZstdEncoding,
    encode_response,
    parse_response,
)

BOUNDS = [0, 1, 2**31, 2**32 - 3, 2**32 - 2, 2**32 - 1, 2**32, 2**63]
SQLITE_MAX_PAGES = 2**32 - 2
ROWS, MORE = 60, 25
PREFIX = 32 * 4096  # bytes: a bootstrap of page ids 0-31


def is_pull(req) -> bool:
    return req.method == "POST" and req.path.endswith("/pull-updates")


def snapshot(path: str) -> dict:
    """Every file of the replica (lock files hold no state) -> its bytes."""
    d, base = os.path.split(path)
    out = {}
    for name in sorted(os.listdir(d)):
        if name.startswith(base) and not name.endswith(".lock"):
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
    return out


def count(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]


class World(dict):
    def __repr__(self) -> str:  # hypothesis prints it with each failing case: keep it short
        return "<world>"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The reference server behind a proxy, a replica bootstrapped at revision A (ROWS rows)
    kept as a template, and the server moved on to revision B (ROWS + MORE rows)."""
    from support.turso_server import TestServer

    root = tmp_path_factory.mktemp("replies")
    server = TestServer(str(root / "server.db"))
    server.db_sql("CREATE TABLE t(id INTEGER PRIMARY KEY, x BLOB)")
    server.db_sql(f"INSERT INTO t SELECT value, randomblob(700) FROM generate_series(1, {ROWS})")
    proxy = FaultProxy(server.url).start()
    template = root / "template"
    template.mkdir()
    conn = turso_dbapi.connect(proxy.base_url, local_path=str(template / "r.db"))
    assert count(conn) == ROWS
    max_pages = conn._replica.store.max_pages
    conn.close()
    rev_a = server.revision
    header, pages = parse_response(server.pull_updates(b"").content)
    server.db_sql(f"INSERT INTO t SELECT value, randomblob(700) FROM generate_series({ROWS + 1}, {ROWS + MORE})")
    world = World(server=server, proxy=proxy, template=template, rev_a=rev_a, root=root,
                  page1=pages[0].encoded_page, page2=pages[1].encoded_page,
                  max_pages=max_pages, size_a=header.db_size, n=0)
    yield world
    proxy.stop()
    server.stop()


def fresh_replica(world) -> str:
    """A copy of the template replica in a new directory (each case starts from A)."""
    world["n"] += 1
    d = world["root"] / f"case{world['n']}"
    shutil.copytree(world["template"], d)
    return str(d / "r.db")


def script(world, body: bytes) -> None:
    world["proxy"].clear_faults()
    world["proxy"].inject("status", status=200, body=body, when=is_pull,
                          headers={"Content-Type": "application/protobuf"})


def refused_pull_leaves_nothing(world, body: bytes, match: str = "") -> None:
    path = fresh_replica(world)
    conn = turso_dbapi.connect(world["proxy"].base_url, local_path=path)
    before = snapshot(path)
    script(world, body)
    with pytest.raises(turso_dbapi.ProtocolError, match=match) as err:
        conn.pull()
    assert isinstance(err.value, sqlite3.Error)
    assert snapshot(path) == before  # nothing staged, nothing recorded
    assert count(conn) == ROWS
    conn.close()
    conn = turso_dbapi.connect(path)  # reopens (no wedged apply) and a good pull works
    assert conn.pull() is True and count(conn) == ROWS + MORE
    conn.close()
    shutil.rmtree(os.path.dirname(path))


def page1_recording(world, n_pages: int) -> bytes:
    """Revision A's page 1 with its in-header size (offset 28) set to ``n_pages``."""
    b = bytearray(world["page1"])
    b[28:32] = n_pages.to_bytes(4, "big")
    return bytes(b)


def refused(world, body: bytes, match: str) -> None:
    refused_pull_leaves_nothing(world, body, match)


def test_a_pull_reply_with_db_size_2_32_is_refused_and_recorded_nowhere(world):
    body = encode_response(PullUpdatesResponseHeader("999", 2**32),
                           [PageData(0, world["page1"]), PageData(1, world["page2"])])
    refused(world, body, "db_size 4294967296 pages is more than SQLite allows")


def test_a_pull_reply_with_page_id_2_32_is_refused_and_recorded_nowhere(world):
    body = encode_response(PullUpdatesResponseHeader("999", world["size_a"]),
                           [PageData(0, world["page1"]), PageData(2**32, world["page2"])])
    refused(world, body, "page_id 4294967296 is past the largest SQLite page")


def test_a_pull_reply_with_pages_past_what_the_replica_can_hold_is_refused_before_recording(world):
    # Within SQLite's limits, but past the sidecar this replica reserved: refused before
    # pending_pull is written (it used to fail half-way through the apply, for good).
    big = world["max_pages"] + 5
    body = encode_response(PullUpdatesResponseHeader("999", big),
                           [PageData(0, page1_recording(world, big)), PageData(big - 1, world["page2"])])
    refused(world, body, f"page {big} is past the {world['max_pages']} pages this replica can hold")


def test_a_pull_reply_whose_page_1_is_not_a_database_header_is_refused(world):
    body = encode_response(PullUpdatesResponseHeader("999", 3), [PageData(0, bytes(range(256)) * 16)])
    refused(world, body, "page 1 is not a database header")


def test_a_pull_reply_whose_db_size_disagrees_with_page_1_is_refused(world):
    # db_size 2^31 is within SQLite's limits, but page 1 records the real size: accepted, it
    # made the replica claim 8 TiB and the rebase of local changes fail ("disk is full").
    body = encode_response(PullUpdatesResponseHeader("999", 2**31),
                           [PageData(0, world["page1"]), PageData(1, world["page2"])])
    refused(world, body, f"db_size 2147483648 disagrees with page 1, which records {world['size_a']} pages")


def test_a_pull_reply_that_changes_db_size_without_page_1_is_refused(world):
    body = encode_response(PullUpdatesResponseHeader("999", world["size_a"] - 2), [PageData(1, world["page2"])])
    refused(world, body, "although page 1 .* did not change")


def test_a_bootstrap_reply_with_db_size_2_33_is_refused_and_a_later_bootstrap_works(world):
    path = str(world["root"] / "boot33" / "r.db")
    os.makedirs(os.path.dirname(path))
    script(world, encode_response(PullUpdatesResponseHeader(world["rev_a"], 2**33),
                                  [PageData(0, world["page1"])]))
    with pytest.raises(turso_dbapi.ProtocolError, match="db_size 8589934592"):
        turso_dbapi.connect(world["proxy"].base_url, local_path=path)
    assert not os.path.exists(path + "-tdbsync.json")  # no replica was recorded
    conn = turso_dbapi.connect(world["proxy"].base_url, local_path=path)
    assert count(conn) == ROWS + MORE
    conn.close()


def leftovers(path: str) -> list:
    """Files of the replica at ``path`` besides its (stateless) lock files."""
    d, base = os.path.split(path)
    return sorted(n for n in os.listdir(d) if n.startswith(base) and not n.endswith(".lock"))


def test_a_bootstrap_refused_mid_stream_leaves_no_files_and_the_next_one_works(world):
    # The header is fine (the store is already created when it arrives); a later page is
    # not one the prefix asked for: the files made so far go, and this process can
    # bootstrap the same path again (its store used to stay open, for "another version").
    path = str(world["root"] / "midstream" / "r.db")
    os.makedirs(os.path.dirname(path))
    script(world, encode_response(PullUpdatesResponseHeader(world["rev_a"], world["size_a"]),
                                  [PageData(0, world["page1"]), PageData(40, world["page2"])]))
    with pytest.raises(turso_dbapi.ProtocolError, match="page_id 40 was not asked for"):
        turso_dbapi.connect(world["proxy"].base_url, local_path=path, bootstrap_prefix=PREFIX)
    assert leftovers(path) == []
    conn = turso_dbapi.connect(world["proxy"].base_url, local_path=path, bootstrap_prefix=PREFIX)
    assert count(conn) == ROWS + MORE
    conn.close()


# -- the fuzz ------------------------------------------------------------------------------

REVISIONS = ["", "999", "x" * 4096, "x" * 4097]


PAGES = st.tuples(st.sampled_from([0, 1, 2] + BOUNDS), st.sampled_from([4096, 4096, 0, 4095, 4097]),
                  st.sampled_from(["real", "garbage"]))


@st.composite
def replies(draw, revisions=REVISIONS):
    """Either every field drawn from its bounds, or a valid reply with one to three fields
    put at a bound (so a bad field also shows up behind a good header, mid-stream)."""
    fields = dict(
        server_revision=st.sampled_from(revisions),
        db_size=st.sampled_from(BOUNDS + [3, "A"]),  # "A": the size page 1 of revision A records
        raw_encoding=st.booleans(),
        zstd=st.booleans(),
        stream_kind=st.sampled_from([0, 0] + BOUNDS),
        apply_mode=st.sampled_from([0, 0] + BOUNDS),
        protocol=st.sampled_from([0, 1] + BOUNDS),
    )
    if draw(st.booleans()):
        return {k: draw(v) for k, v in fields.items()}, draw(st.lists(PAGES, max_size=3))
    header = dict(server_revision=revisions[1], db_size="A", raw_encoding=True, zstd=False,
                  stream_kind=0, apply_mode=0, protocol=1)
    pages = [(0, 4096, "real"), (1, 4096, "real"), (2, 4096, "real")]
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(fields) + ["page", "page", "extra page"]))
        if name == "page":
            pages[draw(st.integers(0, len(pages) - 1))] = draw(PAGES)
        elif name == "extra page":
            pages.append(draw(PAGES))
        else:
            header[name] = draw(fields[name])
    return header, pages


def build(world, header, pages) -> bytes:
    hdr = PullUpdatesResponseHeader(
        header["server_revision"], header["db_size"], raw_encoding=header["raw_encoding"],
        zstd_encoding=ZstdEncoding(3) if header["zstd"] else None, stream_kind=header["stream_kind"],
        apply_mode=header["apply_mode"], protocol=header["protocol"])
    out = []
    for page_id, size, kind in pages:
        data = (world["page1"] if page_id == 0 else world["page2"]) if kind == "real" \
            else bytes(range(256)) * 16
        out.append(PageData(page_id, (data * 2)[:size]))
    return encode_response(hdr, out)


def resolve(world, header) -> dict:
    return dict(header, db_size=world["size_a"]) if header["db_size"] == "A" else header


def valid(world, header, pages, prefix=None) -> bool:
    """The rules, from the spec and SQLite's limits (not from the code under test)."""
    rev = header["server_revision"]
    if not rev or len(rev) > 4096:  # an opaque but present, bounded revision (§2.5)
        return False
    if header["db_size"] > SQLITE_MAX_PAGES:  # page numbers are u32 (2^32-1 unused)
        return False
    if header["zstd"] or header["stream_kind"] or header["apply_mode"]:  # §2.7, pages only
        return False
    if pages and (header["zstd"] or not header["raw_encoding"] or header["db_size"] == 0):
        return False  # §2.6/2.7: raw pages only, and pages need db_size > 0
    for page_id, size, kind in pages:
        if size != 4096 or page_id + 1 > SQLITE_MAX_PAGES:  # §2.3
            return False
        if page_id == 0 and kind != "real":  # page 1 must be a database header
            return False
        if prefix is not None and page_id >= prefix:  # only the pages asked for (§2.6)
            return False
        if page_id < header["db_size"] and page_id + 1 > world["max_pages"]:
            return False  # storable by this replica (checked before anything is recorded)
    # Page 1 records the database size (offset 28): db_size must be that size, the pulled
    # page 1's, or, when page 1 did not change, the replica's (all pages here are of A).
    if pages and header["db_size"] != world["size_a"]:
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(reply=replies())
def test_fuzz_pull_replies_are_applied_or_refused_without_a_trace(world, reply):
    header, pages = reply
    header = resolve(world, header)
    path = fresh_replica(world)
    conn = turso_dbapi.connect(world["proxy"].base_url, local_path=path)
    before = snapshot(path)
    script(world, build(world, header, pages))
    try:
        conn.pull()
    except turso_dbapi.ProtocolError:
        assert not valid(world, header, pages), "a valid reply was refused"
        assert snapshot(path) == before
        world["proxy"].clear_faults()
        assert conn.pull() is True and count(conn) == ROWS + MORE
    else:
        assert valid(world, header, pages), f"an invalid reply was accepted: {header} {pages}"
        assert conn.stats().revision == header["server_revision"]
    finally:
        world["proxy"].clear_faults()
        conn.close()
    shutil.rmtree(os.path.dirname(path))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(reply=replies(revisions=["", "REAL", "x" * 4097]))  # "REAL": the server's revision
def test_fuzz_bootstrap_replies_are_refused_without_recording_a_replica(world, reply):
    header, pages = reply
    header = resolve(world, header)
    if header["server_revision"] == "REAL":
        header = dict(header, server_revision=world["server"].revision)
    world["n"] += 1
    path = str(world["root"] / f"boot{world['n']}" / "r.db")
    os.makedirs(os.path.dirname(path))
    pages = [(0, 4096, "real")] + [pg for pg in pages if pg[0] != 0 or pg[2] != "real"]
    script(world, build(world, header, pages))
    try:  # a prefix bootstrap of 32 pages: the reply may hold page ids 0-31 only
        conn = turso_dbapi.connect(world["proxy"].base_url, local_path=path, bootstrap_prefix=PREFIX)
    except turso_dbapi.ProtocolError:
        assert not valid(world, header, pages, prefix=32), "a valid reply was refused"
        assert leftovers(path) == []  # no replica recorded, no half-made store
        world["proxy"].clear_faults()
        conn = turso_dbapi.connect(world["proxy"].base_url, local_path=path)
        assert count(conn) == ROWS + MORE
    else:
        assert valid(world, header, pages, prefix=32), f"accepted: {header} {pages}"
    finally:
        world["proxy"].clear_faults()
    conn.close()
    shutil.rmtree(os.path.dirname(path))
