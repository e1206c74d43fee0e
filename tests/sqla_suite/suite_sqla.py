"""SQLAlchemy's dialect compliance suite, run with sqlite+aioturso_dbapi (see
test_dialect_async, which also runs it with sqlite+aiosqlite for comparison)."""

from sqlalchemy.testing.suite import *  # noqa: F401,F403
from sqlalchemy.testing.suite import ServerSideCursorsTest


# The suite recognises a server-side cursor by driver name ("a huge issue as it prevents
# these tests from being usable by third party dialects", says its TODO); ours says so the
# way aiomysql's and asyncmy's do.
def _is_server_side(self, cursor):
    if self.engine.dialect.driver == "aioturso_dbapi":
        return cursor.server_side
    return _suite_is_server_side(self, cursor)


_suite_is_server_side = ServerSideCursorsTest._is_server_side
ServerSideCursorsTest._is_server_side = _is_server_side
