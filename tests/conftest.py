"""Shared pytest set-up: fixture modules live in tests/support/, one per concern.

Each ``tests/support/<name>.py`` is loaded as a pytest plugin, so fixtures (nginx on a
free loopback port, the reference server, the fault proxy, generated databases) are
available to every test file without one large conftest.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# Modules whose name starts with "_" are plain helpers (e.g. test-only oracles that need
# extra packages), not fixture plugins.
pytest_plugins = sorted(
    "support." + name[:-3]
    for name in os.listdir(os.path.join(_HERE, "support"))
    if name.endswith(".py") and not name.startswith("_")
)
collect_ignore = ["sqlalchemy_suite"]  # SQLAlchemy's own suite: its own process (test_sqlalchemy_suite.py)
