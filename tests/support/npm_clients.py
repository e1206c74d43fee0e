"""Fixture: the npm clients others wrote, installed once per session into a temp dir.

``node_clients.run(script, **env)`` runs ``tests/support/node/<script>`` with node next to
that install and returns the JSON object it prints. Node.js and npm must be on PATH; if
they are not, the tests that need them error (they never skip) with how to install them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any, Dict

import pytest

PACKAGES = ["@libsql/client@0.18", "@tursodatabase/serverless@1.4", "@tursodatabase/sync@0.7"]
_SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


class NodeClients:
    def __init__(self, root: str) -> None:
        self.root = root

    def run(self, script: str, timeout: float = 60, **env: str) -> Dict[str, Any]:
        # ES modules resolve packages from the script's own directory: run a copy there.
        target = os.path.join(self.root, script)
        shutil.copyfile(os.path.join(_SCRIPTS, script), target)
        proc = subprocess.run(
            ["node", target], cwd=self.root, env={**os.environ, **env},
            capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(f"node {script} failed ({proc.returncode}):\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def node_clients(tmp_path_factory) -> NodeClients:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the real-client tests need Node.js 18+ with "
            "npm (Debian/Ubuntu: apt-get install nodejs npm; or https://nodejs.org)",
            pytrace=False,
        )
    root = str(tmp_path_factory.mktemp("npm-clients"))
    with open(os.path.join(root, "package.json"), "w") as f:
        json.dump({"name": "turso-dbapi-client-tests", "private": True, "type": "module"}, f)
    proc = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"npm install {' '.join(PACKAGES)} failed:\n{proc.stderr}", pytrace=False)
    return NodeClients(root)
