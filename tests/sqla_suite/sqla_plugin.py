"""SQLAlchemy's own pytest plugin, loaded with ``-p sqla_plugin`` by the async dialect test
(not a conftest: the main test run must not load it)."""

import pytest

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403

# SQLite's provisioning (temp tables, the attached test_schema, upserts, ...), as
# SQLAlchemy's own test run loads it for sqlite+aiosqlite.
import sqlalchemy.dialects.sqlite.provision  # noqa: E402,F401

# The dialect by name even where the installed metadata predates its entry point (a stale
# editable install); test_dialect_async checks the entry point itself.
from sqlalchemy.dialects import registry  # noqa: E402

registry.register("sqlite.aioturso_dbapi", "turso_dbapi.dialect_async", "AsyncTursoDBAPIDialect")
