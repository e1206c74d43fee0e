"""SQLAlchemy recipes shared by the dialect tests (a helper, not a fixture plugin)."""

from __future__ import annotations

from sqlalchemy import event


def savepoint_ready(eng):
    """SQLAlchemy's documented pysqlite recipe: let SQLAlchemy, not the driver, emit BEGIN.

    The sqlite3 module defers BEGIN until the first DML, so a SAVEPOINT issued first would
    open (and its RELEASE would end) a transaction of its own. Same for pysqlite itself.
    """

    @event.listens_for(eng, "connect")
    def _no_driver_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None

    @event.listens_for(eng, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN")

    return eng
