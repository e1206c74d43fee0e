"""The SQLAlchemy dialect on remote databases served by the reference server (tests/support).

Two sources behind the same dialect: HTTP ranges (``<server>/server.db``, read-only) and
the Turso sync protocol (``<server>`` itself; the local replica is writable).
"""

from __future__ import annotations

import os
import socket
import sqlite3
from typing import Optional
from urllib.parse import quote

import pytest

import sqlalchemy as sa
from sqlalchemy import create_engine, exc, inspect, select  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column  # noqa: E402
from support._sqlalchemy_recipes import savepoint_ready  # noqa: E402

pytest.importorskip("turso_dbapi.replica.base")

ROWS = 3000


def fill(path: str) -> None:
    with sqlite3.connect(path) as c:
        c.execute("create table notes (id integer primary key, title text not null, body text)")
        c.execute(
            "create table tags (id integer primary key, note_id integer not null, "
            "tag text, foreign key (note_id) references notes(id))"
        )
        c.execute("create index ix_tags_tag on tags(tag)")
        c.executemany(
            "insert into notes (title, body) values (?, ?)",
            [(f"note {i}", "x" * 200) for i in range(ROWS)],  # several hundred KB: many pages
        )
        c.executemany(
            "insert into tags (note_id, tag) values (?, ?)",
            [(i, f"t{i % 7}") for i in range(1, ROWS, 10)],
        )
    c.close()


@pytest.fixture
def server(turso_server_factory):
    return turso_server_factory(setup=fill)


def engine_url(remote: str, replica: Optional[str] = None, **query: str) -> str:
    q = "&".join([f"url={quote(remote, safe='')}"] + [f"{k}={v}" for k, v in query.items()])
    return f"sqlite+turso_dbapi:///{replica or ''}?{q}"


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    body: Mapped[Optional[str]]


def test_range_source_engine_reads_lazily_and_reflects(server, tmp_path):
    size = os.path.getsize(server.db_path)
    eng = create_engine(
        engine_url(server.file_url, str(tmp_path / "replica.db"), partial="true")
    )
    with eng.connect() as conn:
        assert conn.execute(select(Note.title).where(Note.id == 1234)).scalar() == "note 1233"
        stats = conn.connection.dbapi_connection.stats()
        assert 0 < stats["requests"] and stats["bytes_received"] < size / 2  # lazy: not the file
    insp = inspect(eng)
    assert insp.get_table_names() == ["notes", "tags"]
    assert [c["name"] for c in insp.get_columns("notes")] == ["id", "title", "body"]
    assert [i["name"] for i in insp.get_indexes("tags")] == ["ix_tags_tag"]
    assert insp.get_foreign_keys("tags")[0]["referred_table"] == "notes"
    with Session(eng) as s:
        assert s.scalar(select(sa.func.count()).select_from(Note)) == ROWS
    assert (tmp_path / "replica.db").exists()  # the path in the URL is the replica
    eng.dispose()


def test_remote_without_a_local_path_uses_the_user_cache_dir(server, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    eng = create_engine(engine_url(server.file_url, partial="true"))
    assert type(eng.pool).__name__ == "QueuePool"
    with eng.connect() as a, eng.connect() as b:  # two pooled connections, one replica
        assert a.exec_driver_sql("select count(*) from tags").scalar() == len(range(1, ROWS, 10))
        assert b.exec_driver_sql("select title from notes where id = 1").scalar() == "note 0"
    eng.dispose()
    assert any((tmp_path / "cache" / "turso_dbapi").rglob("*"))


def test_turso_replica_orm_round_trip_transactions_and_savepoints(server, tmp_path):
    eng = savepoint_ready(
        create_engine(engine_url(server.url, str(tmp_path / "replica.db"), partial="true"))
    )
    with Session(eng) as s:
        s.add(Note(title="kept"))
        nested = s.begin_nested()
        s.add(Note(title="dropped"))
        s.flush()
        nested.rollback()
        s.commit()
    with Session(eng) as s:
        s.add(Note(title="rolled back"))
        s.flush()
        s.rollback()
    with eng.connect() as conn:
        titles = (
            conn.execute(select(Note.title).where(Note.id > ROWS).order_by(Note.id)).scalars().all()
        )
        assert titles == ["kept"]
    with eng.begin() as conn:
        conn.exec_driver_sql("update notes set body = 'edited' where id = 1")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("select body from notes where id = 1").scalar() == "edited"
    # The server is untouched: local writes stay in the replica until pushed.
    assert server.db_sql("select count(*) from notes") == [[str(ROWS)]]
    eng.dispose()
    with sqlite3.connect(server.db_path) as direct:
        assert direct.execute("select body from notes where id = 1").fetchone() == ("x" * 200,)
    direct.close()


def test_turso_replica_sees_server_changes_after_pull(server, tmp_path):
    eng = create_engine(engine_url(server.url, str(tmp_path / "replica.db"), partial="true"))
    with eng.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from notes").scalar() == ROWS
        server.db_sql("insert into notes (title) values ('from the server')")
        assert conn.connection.dbapi_connection.pull() is True
        assert (
            conn.exec_driver_sql("select title from notes order by id desc limit 1").scalar()
            == "from the server"
        )
    eng.dispose()


def test_auth_token_in_the_password_slot_reaches_the_server(turso_server_factory, tmp_path):
    srv = turso_server_factory(setup=fill, auth_token="tok-123")
    good = f"sqlite+turso_dbapi://:tok-123@/{tmp_path / 'a.db'}?url={quote(srv.url, safe='')}&partial=true"
    eng = create_engine(good)
    with eng.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from tags").scalar() > 0
    eng.dispose()
    bad = create_engine(good.replace("tok-123", "wrong-tok").replace("a.db", "b.db"))
    with pytest.raises(exc.OperationalError) as info:
        bad.connect()
    assert "wrong-tok" not in str(info.value) and "401" in str(info.value)
    bad.dispose()


def test_unreachable_remote_raises_a_remote_error_naming_the_url(tmp_path):
    import turso_dbapi

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    eng = create_engine(
        engine_url(
            f"http://127.0.0.1:{port}/db.sqlite",
            str(tmp_path / "r.db"),
            partial="true",
            retries="0",
        )
    )
    with pytest.raises(exc.OperationalError) as info:
        eng.connect()
    assert isinstance(info.value.orig, turso_dbapi.RemoteError)
    assert f"127.0.0.1:{port}" in str(info.value)
    eng.dispose()


def test_turso_replica_reopens_by_its_path_alone_without_the_server(server, tmp_path):
    replica = str(tmp_path / "replica.db")
    eng = create_engine(engine_url(server.url, replica, partial="true"))
    with eng.begin() as conn:
        conn.exec_driver_sql("insert into notes (title) values ('offline edit')")
        conn.exec_driver_sql("select count(*) from notes").scalar()
    eng.dispose()
    server.stop()  # no network from here on
    again = create_engine(f"sqlite+turso_dbapi:///{replica}")  # the plain local-file form
    with again.connect() as conn:
        assert (
            conn.exec_driver_sql("select title from notes order by id desc limit 1").scalar()
            == "offline edit"
        )
        assert conn.connection.dbapi_connection.stats()["requests"] == 0
    again.dispose()
