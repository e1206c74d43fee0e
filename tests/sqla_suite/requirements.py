"""What the driver supports, for SQLAlchemy's dialect compliance suite: the suite's
defaults, minus the attached ``test_schema`` (this stand-alone harness does not provision
it: sqlite+aiosqlite fails those tests here just the same)."""

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements


class Requirements(SuiteRequirements):
    @property
    def schemas(self):
        return exclusions.closed()
