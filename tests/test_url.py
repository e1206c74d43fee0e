"""Remote options: one table, the same meaning from keywords and query strings; secrets
never shown. Every default is pinned here (a change of default is a visible decision)."""

from __future__ import annotations

import pytest

import turso_dbapi
from turso_dbapi import url as u


def test_defaults_are_pinned():
    defaults = {name: opt.default for name, opt in u.OPTIONS.items()}
    assert defaults == {
        "url": None,
        "partial": False,
        "local_path": None,
        "segment_size": 128 * 1024,
        "readahead_max": defaults["readahead_max"],  # tuned by benchmark; pinned below
        "prefetch": False,
        "bootstrap_prefix": None,
        "bootstrap_query": None,
        "auth_token": None,
        "client_name": "turso-dbapi",
        "http_timeout": 30.0,
        "http_deadline": None,  # no total limit unless asked: a full bootstrap is one request
        "retries": 3,
        "verify": True,
        "long_poll_timeout_ms": 0,
        "endpoint_url": None,
        "region": None,
        "profile": None,
        "follow": None,  # a live database is not followed unless asked
        "push_operations_threshold": None,  # one batch (one server transaction) per push
        "journal_mode": None,  # a new Turso replica: wal; an existing one keeps its file's mode
        "on_conflict": None,  # pull(): the replayed local row wins
        "transform": None,  # push(): every change sent as it is
        "readonly": False,  # replicas are writable unless asked (mode=ro in a file: URI too)
        "protocol": "auto",
    }
    assert defaults["readahead_max"] % (128 * 1024) == 0 and defaults["readahead_max"] >= 4 << 20


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"segment_size": "128k"}, {"segment_size": 131072}),
        ({"segment_size": "4096"}, {"segment_size": 4096}),
        ({"readahead_max": "16MiB"}, {"readahead_max": 16 << 20}),
        ({"partial": "true"}, {"partial": True}),
        ({"partial": "0"}, {"partial": False}),
        ({"prefetch": True}, {"prefetch": True}),
        ({"http_timeout": "2.5"}, {"http_timeout": 2.5}),
        ({"retries": "0"}, {"retries": 0}),
        ({"verify": "false"}, {"verify": False}),
        ({"verify": "/etc/ssl/ca.pem"}, {"verify": "/etc/ssl/ca.pem"}),
        ({"auth_token": None}, {}),  # None means "not given"
    ],
)
def test_query_string_values_mean_the_same_as_keywords(raw, expected):
    assert u.parse_options(raw) == expected


def test_unknown_option_names_the_known_ones():
    with pytest.raises(turso_dbapi.ProgrammingError, match="unknown option 'partail'.*partial"):
        u.parse_options({"partail": "true"})


@pytest.mark.parametrize(
    "raw", [{"partial": "maybe"}, {"segment_size": "lots"}, {"http_timeout": "0"}, {"retries": "-1"}]
)
def test_bad_values_are_a_programming_error_naming_the_option(raw):
    (name,) = raw
    with pytest.raises(turso_dbapi.ProgrammingError, match=f"option '{name}'"):
        u.parse_options(raw)


def test_a_bad_secret_value_is_not_echoed():
    class Weird:
        def __str__(self):
            raise ValueError("cannot")

    with pytest.raises(turso_dbapi.ProgrammingError) as info:
        u.parse_options({"auth_token": Weird()})
    assert "<redacted>" in str(info.value)


def test_callable_tokens_are_kept_callable():
    fn = lambda: "t"  # noqa: E731
    assert u.parse_options({"auth_token": fn})["auth_token"] is fn


def test_split_url_options_keeps_foreign_query_parameters():
    rest, ours = u.split_url_options("https://h/db.sqlite?X-Amz-Signature=abc&partial=true&segment_size=64k")
    assert ours == {"partial": "true", "segment_size": "64k"}
    assert rest == "https://h/db.sqlite?X-Amz-Signature=abc"


@pytest.mark.parametrize(
    "given, expected",
    [
        ("libsql://db.example.io", "https://db.example.io"),
        ("turso://db.example.io/x", "https://db.example.io/x"),
        ("http://h/db", "http://h/db"),
    ],
)
def test_libsql_and_turso_schemes_mean_https(given, expected):
    assert u.normalize_remote_url(given) == expected


@pytest.mark.parametrize("target, remote", [
    ("https://h/db", True), ("HTTP://h/db", True), ("libsql://h", True), ("app.db", False),
    ("file:app.db?mode=ro", False), (":memory:", False), (b"https://h", False),
])
def test_is_remote(target, remote):
    assert u.is_remote(target) is remote


def test_redact_hides_user_info_and_secret_query_values():
    shown = u.redact("https://alice:s3cret@host/db.sqlite?token=abc&X-Amz-Signature=zz&partial=1")
    assert "s3cret" not in shown and "alice" not in shown
    assert "abc" not in shown and "zz" not in shown
    assert "partial=1" in shown and shown.startswith("https://***@host/db.sqlite?")


def test_remote_errors_carry_sqlite_error_attributes_like_stdlib_errors():
    err = turso_dbapi.RemoteError("x", url="https://h/db", status=503)
    assert (err.sqlite_errorcode, err.sqlite_errorname) == (266, "SQLITE_IOERR_READ")
    if hasattr(__import__("sqlite3"), "SQLITE_IOERR_READ"):
        assert err.sqlite_errorcode == __import__("sqlite3").SQLITE_IOERR_READ
    assert (err.url, err.status) == ("https://h/db", 503)


@pytest.mark.parametrize("given, ms", [("true", 1000), (True, 1000), ("on", 1000), ("false", None),
                                       (False, None), ("0", 0), ("250", 250), (250, 250)])
def test_follow_is_milliseconds_or_a_boolean(given, ms):
    assert u.parse_options({"follow": given}) == {"follow": ms}


def test_follow_rejects_nonsense():
    with pytest.raises(turso_dbapi.ProgrammingError, match="option 'follow'"):
        u.parse_options({"follow": "soon"})
    with pytest.raises(turso_dbapi.ProgrammingError, match="option 'follow'"):
        u.parse_options({"follow": "-5"})
