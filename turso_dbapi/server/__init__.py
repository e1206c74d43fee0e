"""The reference Turso sync server (``python -m turso_dbapi.server``).

Server-only: it imports nothing of the client but the bottom layers (errors, protocol
codecs, the native core), and no client module imports it.
"""

from .app import ReferenceServer
from .command import main

__all__ = ["ReferenceServer", "main"]
