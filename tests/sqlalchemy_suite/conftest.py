"""SQLAlchemy's dialect compliance suite against ``sqlite+turso_dbapi`` (README.dialects).

Run in its own pytest process (SQLAlchemy's plugin takes over collection and fixtures, so
it cannot share a session with the project's own tests; ``tests/conftest.py`` ignores this
directory and ``tests/test_sqlalchemy_suite.py`` starts the run). The database comes from
``--dburi`` (or ``[db]`` in setup.cfg), the requirements class from ``[sqla_testing]``.
"""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import registry

# The entry point of an installed turso_dbapi says the same; this also serves a checkout.
registry.register("sqlite.turso_dbapi", "turso_dbapi.dialect", "TursoDBAPIDialect")

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402,F401,F403
