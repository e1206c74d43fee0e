"""The ``sqlite+turso_dbapi`` SQLAlchemy dialect on real local files (remote: test_dialect_remote)."""

from __future__ import annotations

import sqlite3
import warnings
from importlib.metadata import entry_points
from typing import List, Optional

import pytest

import sqlalchemy as sa
from sqlalchemy import (  # noqa: E402
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    exc,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import registry  # noqa: E402
from sqlalchemy.orm import (  # noqa: E402
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
)
from support._sqlalchemy_recipes import savepoint_ready  # noqa: E402

import turso_dbapi  # noqa: E402
from turso_dbapi.dialect import TursoDBAPIDialect  # noqa: E402
from turso_dbapi.url import OPTIONS, parse_options  # noqa: E402


def _dialect_entry_points():
    eps = entry_points()
    if hasattr(eps, "select"):  # 3.10+
        return eps.select(group="sqlalchemy.dialects")
    return eps.get("sqlalchemy.dialects", [])  # 3.9: a dict of groups


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite+turso_dbapi:///{tmp_path / 'app.db'}"


@pytest.fixture
def engine(db_url):
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


# -- loading -----------------------------------------------------------------------------


def test_dialect_is_loaded_from_the_installed_entry_point_not_an_import_path():
    eps = [
        ep for ep in _dialect_entry_points() if ep.name == "sqlite.turso_dbapi"
    ]
    assert [ep.value for ep in eps] == ["turso_dbapi.dialect:TursoDBAPIDialect"]
    assert registry.load("sqlite.turso_dbapi") is TursoDBAPIDialect
    # SQLAlchemy caches the loader it used: an EntryPoint's bound load(), not a register() call.
    loader = registry.impls["sqlite.turso_dbapi"]
    assert type(getattr(loader, "__self__", None)).__name__ == "EntryPoint"
    assert loader.__self__.value == "turso_dbapi.dialect:TursoDBAPIDialect"


def test_engine_connections_are_turso_dbapi_connections(engine):
    assert isinstance(engine.dialect, TursoDBAPIDialect)
    assert engine.dialect.driver == "turso_dbapi" and engine.dialect.name == "sqlite"
    assert engine.dialect.dbapi is turso_dbapi
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert isinstance(raw, turso_dbapi.Connection)
        # pysqlite's on-connect functions are installed on our connections too.
        assert conn.execute(text("select 'abc' regexp 'b'")).scalar() == 1


# -- Core and ORM ------------------------------------------------------------------------


def test_core_round_trip_lands_in_a_plain_sqlite_file(engine, tmp_path):
    md = MetaData()
    t = Table("items", md, Column("id", Integer, primary_key=True), Column("name", String(20)))
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"name": "a"}, {"name": "b"}, {"name": "c"}])
        conn.execute(t.update().where(t.c.name == "b").values(name="B"))
        conn.execute(t.delete().where(t.c.name == "c"))
    with engine.connect() as conn:
        assert conn.execute(select(t.c.id, t.c.name).order_by(t.c.id)).all() == [(1, "a"), (2, "B")]
    engine.dispose()
    with sqlite3.connect(tmp_path / "app.db") as plain:  # the stdlib reads what we wrote
        assert plain.execute("select name from items order by id").fetchall() == [("a",), ("B",)]


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[List[Book]] = relationship(back_populates="author", cascade="all")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    year: Mapped[Optional[int]]
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


def test_orm_round_trip_with_relationships(engine):
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(
            Author(
                name="Le Guin",
                books=[Book(title="Earthsea", year=1968), Book(title="Dispossessed")],
            )
        )
        s.commit()
    with Session(engine) as s:
        author = s.scalars(select(Author)).one()
        assert sorted((b.title, b.year) for b in author.books) == [
            ("Dispossessed", None),
            ("Earthsea", 1968),
        ]
        book = s.scalars(select(Book).where(Book.title == "Earthsea")).one()
        assert book.author.name == "Le Guin"
        s.delete(author)
        s.commit()
        assert s.scalars(select(Book)).all() == []


# -- reflection --------------------------------------------------------------------------


def test_reflection_reports_tables_columns_indexes_and_foreign_keys(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "create table parent (id integer primary key, code text not null unique)"
        )
        conn.exec_driver_sql(
            "create table child (id integer primary key, parent_id integer not null, "
            "note varchar(30) default 'x', "
            "foreign key (parent_id) references parent(id) on delete cascade)"
        )
        conn.exec_driver_sql("create index ix_child_note on child(note)")
    insp = inspect(engine)
    assert insp.get_table_names() == ["child", "parent"]
    cols = {c["name"]: c for c in insp.get_columns("child")}
    assert list(cols) == ["id", "parent_id", "note"]
    assert cols["parent_id"]["nullable"] is False
    assert isinstance(cols["note"]["type"], sa.VARCHAR) and cols["note"]["type"].length == 30
    assert cols["note"]["default"] == "'x'"
    assert insp.get_pk_constraint("child")["constrained_columns"] == ["id"]
    assert [(i["name"], i["column_names"]) for i in insp.get_indexes("child")] == [
        ("ix_child_note", ["note"])
    ]
    (fk,) = insp.get_foreign_keys("child")
    assert (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) == (
        ["parent_id"],
        "parent",
        ["id"],
    )
    assert fk["options"].get("ondelete") == "CASCADE"
    assert [u["column_names"] for u in insp.get_unique_constraints("parent")] == [["code"]]
    md = MetaData()
    md.reflect(engine)
    assert set(md.tables) == {"parent", "child"}


# -- transactions, savepoints, isolation -------------------------------------------------


def test_rollback_discards_and_commit_keeps(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("create table t (x)")
    with engine.connect() as conn:
        conn.exec_driver_sql("insert into t values (1)")
        conn.rollback()
        conn.exec_driver_sql("insert into t values (2)")
        conn.commit()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select x from t").all() == [(2,)]


def test_savepoint_rollback_undoes_only_the_nested_part(engine):
    savepoint_ready(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("create table t (x)")
    with engine.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql("insert into t values (1)")
            sp = conn.begin_nested()
            conn.exec_driver_sql("insert into t values (2)")
            sp.rollback()
            with conn.begin_nested():
                conn.exec_driver_sql("insert into t values (3)")
        assert conn.exec_driver_sql("select x from t order by x").all() == [(1,), (3,)]
    # The outer transaction still governs: rolling it back drops the released savepoint too.
    with engine.connect() as conn:
        with conn.begin() as outer:
            with conn.begin_nested():
                conn.exec_driver_sql("insert into t values (4)")
            outer.rollback()
        assert conn.exec_driver_sql("select count(*) from t").scalar() == 2


def test_orm_session_begin_nested_rolls_back_to_the_savepoint(engine):
    savepoint_ready(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Author(name="kept"))
        try:
            with s.begin_nested():
                s.add(Author(name="dropped"))
                s.flush()
                raise RuntimeError("abort the nested part")
        except RuntimeError:
            pass
        s.commit()
        assert s.scalars(select(Author.name)).all() == ["kept"]


def test_isolation_levels_behave_as_in_pysqlite(engine, tmp_path):
    with engine.connect() as conn:
        assert conn.get_isolation_level() == "SERIALIZABLE"
    with engine.connect().execution_options(isolation_level="READ UNCOMMITTED") as conn:
        assert conn.get_isolation_level() == "READ UNCOMMITTED"
        assert conn.exec_driver_sql("pragma read_uncommitted").scalar() == 1
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert conn.connection.dbapi_connection.isolation_level is None
        conn.exec_driver_sql("create table t (x)")
        conn.exec_driver_sql("insert into t values (1)")  # no commit: autocommit applies
        with sqlite3.connect(tmp_path / "app.db") as other:
            assert other.execute("select x from t").fetchall() == [(1,)]
    # Returned to the pool, the connection is back to the default level.
    with engine.connect() as conn:
        assert conn.get_isolation_level() == "SERIALIZABLE"
        assert conn.connection.dbapi_connection.isolation_level == ""
    with pytest.raises(exc.ArgumentError, match="REPEATABLE READ"):
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            conn.exec_driver_sql("select 1")


# -- Alembic -----------------------------------------------------------------------------


def test_alembic_operations_add_column_index_and_batch_alter(engine):
    import alembic  # noqa: F401 - a test extra; an ImportError names it
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    with engine.begin() as conn:
        conn.exec_driver_sql(
            "create table users (id integer primary key, name varchar(20), legacy text)"
        )
        conn.exec_driver_sql("insert into users (name, legacy) values ('ann', 'x'), ('bob', 'y')")
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.add_column("users", Column("email", String(100)))
        op.create_index("ix_users_email", "users", ["email"], unique=True)
        with op.batch_alter_table("users") as batch:  # SQLite: copy-and-move
            batch.alter_column("name", existing_type=String(20), type_=String(80), nullable=False)
            batch.drop_column("legacy")
    insp = inspect(engine)
    cols = {c["name"]: c for c in insp.get_columns("users")}
    assert list(cols) == ["id", "name", "email"]
    assert cols["name"]["nullable"] is False and cols["name"]["type"].length == 80
    assert [(i["name"], i["unique"]) for i in insp.get_indexes("users")] == [("ix_users_email", 1)]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select name from users order by id").all() == [
            ("ann",),
            ("bob",),
        ]


def test_alembic_migration_context_sees_the_dialect(engine):
    import alembic  # noqa: F401
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.dialect.driver == "turso_dbapi"
        assert ctx.impl.__class__.__name__ == "SQLiteImpl"  # alembic's SQLite rules apply


# -- URL → connect() arguments -----------------------------------------------------------


def cargs(url: str):
    eng = create_engine(url)
    try:
        return eng.dialect.create_connect_args(eng.url)
    finally:
        eng.dispose()


def test_local_urls_map_exactly_as_pysqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    for suffix in [
        "",
        "/:memory:",
        "/app.db",
        "/app.db?timeout=2.5&check_same_thread=false",
        "/file:app.db?uri=true&mode=ro",
        "/app.db?isolation_level=IMMEDIATE",
    ]:
        ours = cargs("sqlite+turso_dbapi://" + suffix)
        theirs = SQLiteDialect_pysqlite().create_connect_args(
            sa.engine.make_url("sqlite://" + suffix)
        )
        assert ours == theirs, suffix


def test_pysqlite_query_options_take_effect(tmp_path):
    path = tmp_path / "ro.db"
    sqlite3.connect(path).execute("create table t (x)").connection.close()
    eng = create_engine(f"sqlite+turso_dbapi:///file:{path}?uri=true&mode=ro&timeout=0.5")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from t").scalar() == 0
        with pytest.raises(exc.OperationalError, match="readonly"):
            conn.exec_driver_sql("insert into t values (1)")
    eng.dispose()


SAMPLES = {
    "url": ("https://h/db.sqlite", "https://h/db.sqlite"),
    "partial": ("true", True),
    "local_path": ("cache.db", None),  # handled by the replica-location tests below
    "segment_size": ("64k", 65536),
    "readahead_max": ("2m", 2 << 20),
    "prefetch": ("1", True),
    "bootstrap_prefix": ("1m", 1 << 20),
    "bootstrap_query": ("select * from t", "select * from t"),
    "auth_token": ("tok", "tok"),
    "client_name": ("me", "me"),
    "http_timeout": ("2.5", 2.5),
    "retries": ("7", 7),
    "verify": ("false", False),
    "long_poll_timeout_ms": ("250", 250),
    "follow": ("500", 500),
    "journal_mode": ("DELETE", "delete"),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_connect_option_is_accepted_in_the_query_string_with_the_same_meaning(name, tmp_path):
    raw, expected = SAMPLES.get(name, (None, None))
    if raw is None:  # a newer option: its default, or a value its parser accepts
        opt = OPTIONS[name]
        by_parser = {
            "_parse_bool": "true",
            "_parse_size": "8k",
            "_parse_int": "3",
            "_parse_float": "1.5",
        }
        raw = (
            str(opt.default) if opt.default is not None else by_parser.get(opt.parse.__name__, "x")
        )
        expected = None if opt.parse.__name__ == "_parse_callable" else parse_options({name: raw})[name]
    if name == "local_path":
        return  # covered by test_remote_url_forms_choose_the_replica_location
    if OPTIONS[name].parse.__name__ == "_parse_callable":  # keyword-only: refused in a URL
        with pytest.raises(sqlite3.ProgrammingError, match="callable"):
            parse_options({name: "x"})
        return
    query = sa.engine.URL.create(
        "sqlite+turso_dbapi",
        database=str(tmp_path / "r.db"),
        query={"url": "https://h/db.sqlite", name: raw},
    )
    eng = create_engine(query)
    args, kwargs = eng.dialect.create_connect_args(eng.url)
    assert args == [str(tmp_path / "r.db")]
    assert kwargs[name] == expected == parse_options({name: raw})[name]


def test_remote_url_forms_choose_the_replica_location(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Path in the URL = replica location: turso_dbapi.connect("<abs>/r.db", url=...).
    args, kw = cargs("sqlite+turso_dbapi:///r.db?url=https://h/db.sqlite&partial=true")
    assert args == [str(tmp_path / "r.db")]
    assert kw == {"url": "https://h/db.sqlite", "partial": True, "check_same_thread": False}
    # No path: turso_dbapi.connect(url, ...) with its default cache, or local_path=.
    args, kw = cargs("sqlite+turso_dbapi:///?url=https://h/db.sqlite")
    assert args == ["https://h/db.sqlite"] and kw == {"check_same_thread": False}
    args, kw = cargs("sqlite+turso_dbapi://?url=libsql://x.turso.io&local_path=c.db")
    assert args == ["libsql://x.turso.io"] and kw["local_path"] == str(tmp_path / "c.db")
    # A remote URL with its own (percent-encoded) query keeps it.
    args, kw = cargs("sqlite+turso_dbapi:///r.db?url=https%3A%2F%2Fh%2Fdb%3Fsig%3Dabc%26v%3D1")
    assert kw["url"] == "https://h/db?sig=abc&v=1"
    # Remote pools like a file database even without a path (not a single :memory: conn).
    eng = create_engine("sqlite+turso_dbapi:///?url=https://h/db.sqlite")
    assert type(eng.pool).__name__ == "QueuePool"
    eng.dispose()


def test_token_in_the_password_slot_becomes_auth_token_and_is_masked():
    eng = create_engine("sqlite+turso_dbapi://:s3cr%40t@/?url=libsql://x.turso.io")
    args, kw = eng.dialect.create_connect_args(eng.url)
    assert kw["auth_token"] == "s3cr@t"
    assert "s3cr" not in repr(eng) and "s3cr" not in str(eng.url)


@pytest.mark.parametrize(
    "url, message",
    [
        (
            "sqlite+turso_dbapi:///a.db?partail=true",
            r"unknown query parameter\(s\) partail.*known: .*partial",
        ),
        ("sqlite+turso_dbapi:///a.db?partial=true", r"apply to remote databases"),
        (
            "sqlite+turso_dbapi:///?url=https://h/x&partial=maybe",
            r"bad value 'maybe' for option 'partial'",
        ),
        (
            "sqlite+turso_dbapi:///?url=https://h/x&auth_token=zzsecret&retries=-1",
            r"auth_token=\*\*\*",
        ),
        ("sqlite+turso_dbapi:///r.db?url=https://h/x&local_path=c.db", r"names the replica twice"),
        ("sqlite+turso_dbapi:///:memory:?url=https://h/x", r"needs a file, not :memory:"),
        ("sqlite+turso_dbapi://host/db?url=https://h/x", r"a host goes in the url= parameter"),
        ("sqlite+turso_dbapi://:tok@/a.db", r"password .* is read as auth_token"),
    ],
)
def test_bad_urls_are_rejected_at_create_engine_with_a_clear_message(url, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an error, not pysqlite's "ignored" warning
        with pytest.raises(exc.ArgumentError, match=message) as info:
            create_engine(url)
    assert "zzsecret" not in str(info.value)
