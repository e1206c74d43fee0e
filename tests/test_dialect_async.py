"""The ``sqlite+aioturso_dbapi`` SQLAlchemy asyncio dialect: entry point, AsyncSession on
local files and remote replicas, and SQLAlchemy's own compliance suite run with it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from urllib.parse import quote

import pytest
from sqlalchemy import ForeignKey, String, exc, select, text
from sqlalchemy.dialects import registry
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

import turso_dbapi
from turso_dbapi.dialect_async import AsyncAdapt_turso_connection, AsyncTursoDBAPIDialect

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_dialect_is_loaded_from_the_installed_entry_point():
    eps = entry_points()
    group = eps.select(group="sqlalchemy.dialects") if hasattr(eps, "select") else eps.get("sqlalchemy.dialects", [])
    assert [ep.value for ep in group if ep.name == "sqlite.aioturso_dbapi"] == [
        "turso_dbapi.dialect_async:AsyncTursoDBAPIDialect"]
    assert registry.load("sqlite.aioturso_dbapi") is AsyncTursoDBAPIDialect


def test_async_session_ddl_dml_select(tmp_path):
    async def main():
        engine = create_async_engine(f"sqlite+aioturso_dbapi:///{tmp_path / 'app.db'}")
        assert engine.dialect.is_async and engine.dialect.driver == "aioturso_dbapi"
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        session_factory = async_sessionmaker(engine, expire_on_commit=False)
        async with session_factory() as session:
            async with session.begin():
                for i in range(5):
                    session.add(Author(name=f"a{i}", books=[Book(title=f"b{i}-{j}") for j in range(3)]))
        async with session_factory() as session:
            authors = (await session.scalars(
                select(Author).options(selectinload(Author.books)).where(Author.id > 3).order_by(Author.id)
            )).all()
            assert [(a.name, sorted(b.title for b in a.books)) for a in authors] == [
                ("a3", ["b3-0", "b3-1", "b3-2"]), ("a4", ["b4-0", "b4-1", "b4-2"])]
            await session.execute(text("update books set title = upper(title) where author_id = 1"))
            await session.rollback()
            titles = [t async for t in await session.stream_scalars(select(Book.title).order_by(Book.id))]
            assert titles[:3] == ["b0-0", "b0-1", "b0-2"] and len(titles) == 15  # a server-side cursor
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert isinstance(raw.dbapi_connection, AsyncAdapt_turso_connection)
            assert isinstance(raw.driver_connection, turso_dbapi.aio.Connection)
            with pytest.raises(exc.IntegrityError):
                await conn.execute(text("insert into books(id, title, author_id) values (1, 'dup', 1)"))
        await engine.dispose()
        # the file is an ordinary SQLite database
        plain = turso_dbapi.connect(str(tmp_path / "app.db"))
        assert plain.execute("select count(*) from books").fetchone() == (15,)

    run(main())


def test_remote_replica_through_the_async_engine(served_databases, tmp_path):
    url = quote(served_databases["p4096"], safe="")

    async def main():
        engine = create_async_engine(
            f"sqlite+aioturso_dbapi:///{tmp_path / 'replica.db'}?url={url}&partial=true")
        async with engine.connect() as conn:
            name = (await conn.execute(text("select name from items where id = 42"))).scalar_one()
            assert name == "item-00000042"
            raw = await conn.get_raw_connection()
            stats = await raw.driver_connection.stats()
            assert stats.requests >= 1 and stats.url.endswith("p4096.db")
        await engine.dispose()

    run(main())


def test_remote_errors_reach_the_caller_as_the_drivers(nginx, tmp_path):
    missing = quote(nginx.url("missing.db"), safe="")

    async def main():
        engine = create_async_engine(f"sqlite+aioturso_dbapi:///?url={missing}&partial=true"
                                     f"&local_path={quote(str(tmp_path / 'm.db'))}")
        with pytest.raises(exc.OperationalError) as info:
            async with engine.connect():
                pass
        assert isinstance(info.value.orig, turso_dbapi.RemoteError) and "404" in str(info.value.orig)
        await engine.dispose()

    run(main())


def _suite(tmp_path, name, dburi, *args):
    """SQLAlchemy's compliance suite (tests/sqla_suite) in a scratch copy: (passed, failed
    test ids without the driver's name, summary line)."""
    work = tmp_path / name
    shutil.copytree(os.path.join(HERE, "sqla_suite"), work)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(work)]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "sqla_plugin", "-p", "no:cacheprovider", "-q", "-rf",
         "--rootdir=.", "-c", "setup.cfg", "--confcutdir=.", "--dburi", dburi, "suite_sqla.py", *args],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", summary)) else 0
    failed = {re.sub(r"_sqlite\+\w+?_async_[\d_]+::", "::", line[len("FAILED "):].split(" - ")[0])
              for line in proc.stdout.splitlines() if line.startswith("FAILED ")}
    return passed, failed, summary


def test_sqlalchemy_compliance_suite_passes_what_aiosqlite_passes(tmp_path):
    """The suite SQLAlchemy ships for dialects, run as it runs it for sqlite+aiosqlite: every
    test that fails with ours fails with aiosqlite too in this stand-alone harness (a few
    do, e.g. temporary-table reflection), so ours passes all that aiosqlite passes."""
    passed, failed, summary = _suite(tmp_path, "ours", "sqlite+aioturso_dbapi:///suite.db")
    assert passed > 500, summary
    if failed:  # the tests of those names with aiosqlite: ours must fail only where it fails
        names = sorted({f.split("::")[-1].split("[")[0] for f in failed})
        _, their_failed, their_summary = _suite(tmp_path, "aiosqlite", "sqlite+aiosqlite:///suite.db",
                                                "-k", " or ".join(names))
        assert failed <= their_failed, (sorted(failed - their_failed), their_summary)
