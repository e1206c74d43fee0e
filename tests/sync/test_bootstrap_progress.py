"""A long bootstrap reports progress through ``turso_dbapi._util.progress`` (drawn only on a
terminal: ``Progress`` itself decides, see tests/util/test_progress.py)."""

from __future__ import annotations

import io

import turso_dbapi
from turso_dbapi.sync import bootstrap
from turso_dbapi._util import progress


def test_full_bootstrap_reports_every_page_to_the_progress_bar(turso_server, tmp_path, monkeypatch):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(1024) FROM generate_series(1, 300)")
    screen = io.StringIO()
    bars = []

    def make(*args, **kwargs):
        bar = progress.Progress(*args, stream=screen, delay=0, interval=0, **kwargs)
        bars.append(bar)
        return bar

    monkeypatch.setattr(bootstrap, "Progress", make)
    progress.set_enabled(True)  # a StringIO is no terminal: force drawing for the test
    try:
        con = turso_dbapi.connect(turso_server.url, local_path=str(tmp_path / "r.db"))
    finally:
        progress.set_enabled(None)
    assert con.execute("SELECT count(*) FROM t").fetchone() == (300,)
    (bar,) = bars
    pages = int(turso_server.db_sql("PRAGMA page_count")[0][0])
    assert bar.total == pages * 4096
    assert bar.done == bar.total  # every page of a full bootstrap was counted
    assert "bootstrap http://127.0.0.1" in screen.getvalue()
    assert screen.getvalue().endswith("\r\x1b[K")  # the bar is cleared afterwards


def test_prefix_bootstrap_progress_counts_only_the_prefix(turso_server, tmp_path, monkeypatch):
    turso_server.db_sql("CREATE TABLE t(x)")
    turso_server.db_sql("INSERT INTO t SELECT randomblob(1024) FROM generate_series(1, 300)")
    bars = []
    monkeypatch.setattr(
        bootstrap, "Progress",
        lambda *a, **k: bars.append(progress.Progress(*a, stream=io.StringIO(), **k)) or bars[-1],
    )
    turso_dbapi.connect(turso_server.url, partial=True, bootstrap_prefix=8192,
                        local_path=str(tmp_path / "p.db"))
    (bar,) = bars
    assert bar.total == 2 * 4096 and bar.done == 2 * 4096


def test_whole_file_download_of_a_range_database_reports_progress(served_databases, databases,
                                                                  monkeypatch, tmp_path):
    from turso_dbapi.fetch import miss

    bars = []
    monkeypatch.setattr(
        miss, "Progress",
        lambda *a, **k: bars.append(progress.Progress(*a, stream=io.StringIO(), **k)) or bars[-1],
    )
    con = turso_dbapi.connect(served_databases["p4096"], partial=False,
                              local_path=str(tmp_path / "whole" / "db"))
    (bar,) = bars
    st = con.stats()
    assert bar.total == bar.done == st.pages_fetched * 4096  # every downloaded page counted
    opened = st.size - bar.done  # what open() brought before the download
    assert 0 < bar.done and 0 < opened <= 128 * 1024 and opened % 4096 == 0
