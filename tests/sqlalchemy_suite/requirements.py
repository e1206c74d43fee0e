"""What SQLite can do, for SQLAlchemy's compliance suite (``[sqla_testing]`` in setup.cfg).

``SuiteRequirements`` answers for a generic server database; each override below is a fact
about SQLite, the same for the stdlib driver (``sqlite://``) and for this one, as SQLAlchemy's
own test requirements state it for SQLite. None is a way around a failure of this driver:
the suite gives the same result through pysqlite (``--dburi sqlite:///file.db``).
"""

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements


def _file_database(config):
    return config.db.dialect._is_url_file_db(config.db.url)


class Requirements(SuiteRequirements):
    @property
    def independent_connections(self):
        # SQLite's provisioning ATTACHes "test_schema" per connection of the main engine; an
        # independent engine has none of it (SQLAlchemy never runs these on SQLite)
        return exclusions.closed()

    @property
    def implicitly_named_constraints(self):
        return exclusions.closed()  # SQLite does not name unnamed constraints

    @property
    def parens_in_union_contained_select_w_limit_offset(self):
        return exclusions.closed()  # "(SELECT ... LIMIT 1) UNION ...": a syntax error in SQLite

    @property
    def parens_in_union_contained_select_wo_limit_offset(self):
        return exclusions.closed()  # "(SELECT ...) UNION (SELECT ...)": likewise

    # Temporary tables live in the connection's own "temp" schema: on a file database the
    # suite's pooled connections do not see each other's (SQLAlchemy skips these there).
    @property
    def temporary_tables(self):
        return exclusions.skip_if(_file_database, "temp tables are per connection")

    @property
    def temp_table_reflection(self):
        return self.temporary_tables

    @property
    def temp_table_names(self):
        return exclusions.skip_if(_file_database, "temp tables are per connection")

    @property
    def has_temp_table(self):
        return exclusions.skip_if(_file_database, "temp tables are per connection")

    @property
    def temporary_views(self):
        return exclusions.skip_if(_file_database, "temp views are per connection")

    @property
    def temp_table_reflect_indexes(self):
        return exclusions.skip_if(_file_database, "temp tables are per connection")

    @property
    def views(self):
        return exclusions.open()  # SQLite has views (the generic default says no)

    @property
    def reflects_pk_names(self):
        return exclusions.open()  # SQLite keeps a named PRIMARY KEY constraint's name

    @property
    def reflect_table_options(self):
        return exclusions.open()  # SQLAlchemy's SQLite dialect reflects WITHOUT ROWID / STRICT
