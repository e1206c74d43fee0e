"""Private S3 buckets (``sources.s3``) against a real S3 API: moto's server with auth on.

Requests go through the fault proxy (``keep_host``: the signature covers the host), so each
one is counted and its headers seen.
"""

from __future__ import annotations

import logging
import sqlite3
import sys

import pytest
from support.databases import make_database
from support.faultproxy import FaultProxy

import turso_dbapi
from turso_dbapi.errors import NotSupportedError, RemoteChangedError, RemoteError
from turso_dbapi.sources import s3 as s3_source


@pytest.fixture(scope="module")
def db_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("s3db") / "src.db"
    make_database(path, rows=2000)
    return path.read_bytes()


@pytest.fixture(scope="module")
def db_bytes_v2(tmp_path_factory):
    path = tmp_path_factory.mktemp("s3db2") / "src2.db"
    make_database(path, rows=2000, seed=1)
    return path.read_bytes()


@pytest.fixture
def aws_env(moto_s3, monkeypatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    return moto_s3


@pytest.fixture
def s3_proxy(moto_s3):
    proxy = FaultProxy(moto_s3.endpoint, keep_host=True).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _our_logs(caplog) -> str:
    """This driver's log lines (botocore's DEBUG lines show its canonical requests and
    signatures, never the secret key, as for every botocore user)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("turso_dbapi"))


def _open(url, tmp_path, **opts):
    opts.setdefault("partial", True)
    return turso_dbapi.connect(url, local_path=str(tmp_path / "replica.db"), **opts)


def test_private_bucket_reads_lazily_with_signed_requests(aws_env, s3_proxy, db_bytes, tmp_path):
    bucket = aws_env.bucket()
    aws_env.put(bucket, "app.db", db_bytes)
    url = f"s3://{bucket}/app.db"
    con = _open(url, tmp_path, endpoint_url=s3_proxy.base_url, segment_size=16384)
    assert s3_proxy.request_count == 1  # open(): one ranged GET of page 1
    name = con.execute("select name from items where id = 1234").fetchone()[0]
    assert name == "item-00001234"
    records = list(s3_proxy.records)
    # open, the table's root, the leaf (a descent costs its pages: issue 13)
    assert len(records) == con.stats().requests == 3
    assert con.stats().bytes_received < len(db_bytes) // 20  # lazily: a small part of the file
    for r in records:
        assert r.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=" + aws_env.key_id)
        assert "x-amz-date" in r.headers and r.status == 206
    con.close()
    # The bucket is private: the same request unsigned is refused.
    with pytest.raises(RemoteError, match="HTTP 403"):
        turso_dbapi.connect(f"{s3_proxy.base_url}/{bucket}/app.db", partial=True,
                            local_path=str(tmp_path / "unsigned.db"))


def test_no_multi_range_request_is_ever_sent(aws_env, s3_proxy, db_bytes, tmp_path):
    bucket = aws_env.bucket()
    aws_env.put(bucket, "app.db", db_bytes)
    con = _open(f"s3://{bucket}/app.db", tmp_path, endpoint_url=s3_proxy.base_url,
                segment_size=4096, prefetch=True)
    got = con.execute("select count(*), sum(length(payload)) from items where category = 7").fetchone()
    ref = sqlite3.connect(":memory:")
    ref.deserialize(db_bytes)
    assert got == ref.execute("select count(*), sum(length(payload)) from items where category = 7").fetchone()
    ranges = [r.range for r in s3_proxy.records]
    assert len(ranges) > 3 and all(r and "," not in r for r in ranges)  # single ranges only
    assert all(r.status == 206 for r in s3_proxy.records)  # and none refused first
    con.close()


def test_wrong_secret_is_a_clear_error_without_secrets(aws_env, monkeypatch, db_bytes, tmp_path, caplog):
    bucket = aws_env.bucket()
    aws_env.put(bucket, "app.db", db_bytes)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RemoteError) as info:
        _open(f"s3://{bucket}/app.db", tmp_path, endpoint_url=aws_env.endpoint)
    text = str(info.value)
    assert info.value.status == 403
    assert "SignatureDoesNotMatch" in text and "AWS_SECRET_ACCESS_KEY" in text
    assert "not-the-secret" not in text and "not-the-secret" not in caplog.text
    assert "Signature=" not in text and "Signature=" not in _our_logs(caplog)


def test_unknown_access_key_is_a_clear_error(aws_env, monkeypatch, db_bytes, tmp_path):
    bucket = aws_env.bucket()
    aws_env.put(bucket, "app.db", db_bytes)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")
    with pytest.raises(RemoteError, match="InvalidAccessKeyId.*AWS_ACCESS_KEY_ID"):
        _open(f"s3://{bucket}/app.db", tmp_path, endpoint_url=aws_env.endpoint)


def test_secrets_never_in_logs_or_reprs(aws_env, db_bytes, tmp_path, caplog):
    bucket = aws_env.bucket()
    aws_env.put(bucket, "app.db", db_bytes)
    caplog.set_level(logging.DEBUG)
    con = _open(f"s3://{bucket}/app.db", tmp_path, endpoint_url=aws_env.endpoint)
    con.execute("select max(price) from items").fetchone()
    source = con._replica.source
    ours = " ".join([_our_logs(caplog), repr(source), repr(source._http), repr(source._http._session.auth),
                     str(con.stats())])
    assert aws_env.secret not in ours + caplog.text  # botocore's own DEBUG lines included
    assert "Signature=" not in ours and "AWS4-HMAC" not in ours
    assert f"s3://{bucket}/app.db" in repr(source)
    con.close()


def test_versioned_bucket_pins_the_version_across_an_overwrite(aws_env, s3_proxy, db_bytes, db_bytes_v2, tmp_path):
    bucket = aws_env.bucket(versioned=True)
    v1 = aws_env.put(bucket, "app.db", db_bytes)
    con = _open(f"s3://{bucket}/app.db", tmp_path, endpoint_url=s3_proxy.base_url, segment_size=4096)
    assert v1 and v1 in con.stats().version
    v2 = aws_env.put(bucket, "app.db", db_bytes_v2)  # overwritten mid-session
    assert v2 != v1
    ref = sqlite3.connect(":memory:")
    ref.deserialize(db_bytes)
    query = "select sum(price), group_concat(title) from items join docs using (id)"
    assert con.execute(query).fetchone() == ref.execute(query).fetchone()  # all of version 1
    fetches = [r for r in s3_proxy.records[1:]]
    assert fetches and all(f"versionId={v1}" in r.path for r in fetches)
    con.close()
    # A new session reads the new version.
    (tmp_path / "new").mkdir()
    con2 = _open(f"s3://{bucket}/app.db", tmp_path / "new", endpoint_url=s3_proxy.base_url)
    ref2 = sqlite3.connect(":memory:")
    ref2.deserialize(db_bytes_v2)
    assert v2 in con2.stats().version
    assert con2.execute(query).fetchone() == ref2.execute(query).fetchone()
    con2.close()


def test_version_id_in_url_reads_that_version(aws_env, db_bytes, db_bytes_v2, tmp_path):
    bucket = aws_env.bucket(versioned=True)
    v1 = aws_env.put(bucket, "app.db", db_bytes)
    aws_env.put(bucket, "app.db", db_bytes_v2)
    con = _open(f"s3://{bucket}/app.db?versionId={v1}", tmp_path, endpoint_url=aws_env.endpoint)
    ref = sqlite3.connect(":memory:")
    ref.deserialize(db_bytes)
    query = "select sum(price) from items"
    assert con.execute(query).fetchone() == ref.execute(query).fetchone()
    con.close()


def test_unversioned_overwrite_mid_session_raises_remote_changed(aws_env, db_bytes, db_bytes_v2, tmp_path):
    bucket = aws_env.bucket()
    aws_env.put(bucket, "app.db", db_bytes)
    con = _open(f"s3://{bucket}/app.db", tmp_path, endpoint_url=aws_env.endpoint, segment_size=4096)
    assert "etag=" in con.stats().version and "s3-version" not in con.stats().version
    aws_env.put(bucket, "app.db", db_bytes_v2)
    with pytest.raises(RemoteChangedError, match="changed since it was opened"):
        con.execute("select sum(length(body)) from docs").fetchone()
    con.close()


def test_endpoint_region_profile_from_aws_config_files(aws_env, monkeypatch, db_bytes, tmp_path):
    bucket = aws_env.bucket()
    aws_env.put(bucket, "app.db", db_bytes)
    creds = tmp_path / "credentials"
    creds.write_text(f"[reader]\naws_access_key_id = {aws_env.key_id}\n"
                     f"aws_secret_access_key = {aws_env.secret}\n")
    config = tmp_path / "config"
    config.write_text(f"[profile reader]\nregion = us-east-1\nendpoint_url = {aws_env.endpoint}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # every option in the URL's query string, as for any remote URL
    con = turso_dbapi.connect(f"s3://{bucket}/app.db?profile=reader&partial=true",
                              local_path=str(tmp_path / "replica.db"))
    assert con.execute("select count(*) from items").fetchone() == (2000,)
    con.close()
    with pytest.raises(turso_dbapi.ProgrammingError, match="profile"):
        turso_dbapi.connect(f"s3://{bucket}/app.db", profile="nobody", local_path=str(tmp_path / "x.db"))


def test_aws_endpoint_url_env_names_an_s3_compatible_store(aws_env, monkeypatch, db_bytes, tmp_path):
    bucket = aws_env.bucket()
    aws_env.put(bucket, "app.db", db_bytes)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env.endpoint)
    con = _open(f"s3://{bucket}/app.db", tmp_path)
    assert con.execute("select count(*) from kv").fetchone()[0] > 0
    con.close()


def test_missing_botocore_names_the_extra(aws_env, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "botocore", None)  # import botocore -> ImportError
    with pytest.raises(NotSupportedError, match=r"pip install turso_dbapi\[s3\]"):
        _open("s3://bucket/app.db", tmp_path)


@pytest.mark.parametrize("url, bucket, key, region", [
    ("s3://my-bucket/dir/app.db", "my-bucket", "dir/app.db", None),
    ("https://my-bucket.s3.eu-west-1.amazonaws.com/dir/app.db", "my-bucket", "dir/app.db", "eu-west-1"),
    ("https://my-bucket.s3.amazonaws.com/app.db", "my-bucket", "app.db", None),
    ("https://s3.us-west-2.amazonaws.com/my-bucket/a%20b.db", "my-bucket", "a b.db", "us-west-2"),
])
def test_s3_urls_are_recognised(url, bucket, key, region):
    loc = s3_source.parse_s3_url(url)
    assert (loc.bucket, loc.key, loc.region) == (bucket, key, region)


@pytest.mark.parametrize("url", [
    "https://my-bucket.s3.amazonaws.com/app.db?X-Amz-Signature=abc&X-Amz-Credential=x",  # presigned
    "https://example.com/app.db",
    "http://127.0.0.1:8080/bucket/app.db",
])
def test_other_urls_stay_plain_http(url):
    assert s3_source.parse_s3_url(url) is None


def test_aws_https_url_resolves_to_the_regional_object_url(aws_env):
    loc = s3_source.parse_s3_url("https://my-bucket.s3.eu-west-1.amazonaws.com/dir/app.db")
    url, region, credentials = s3_source.resolve(loc)
    assert url == "https://my-bucket.s3.eu-west-1.amazonaws.com/dir/app.db"
    assert region == "eu-west-1" and credentials is not None


def test_s3_options_on_a_plain_http_url_are_an_error(tmp_path):
    with pytest.raises(turso_dbapi.ProgrammingError, match="apply to S3 URLs"):
        turso_dbapi.connect("http://127.0.0.1:9/app.db", region="eu-west-1", local_path=str(tmp_path / "x.db"))


@pytest.mark.parametrize("versioned", [False, True], ids=["etag", "version-id"])
def test_pull_takes_the_overwritten_object(aws_env, db_bytes, db_bytes_v2, tmp_path, versioned):
    bucket = aws_env.bucket(versioned=versioned)
    aws_env.put(bucket, "app.db", db_bytes)
    con = _open(f"s3://{bucket}/app.db", tmp_path, endpoint_url=aws_env.endpoint)
    query = "select sum(price), count(*) from items"
    old, new = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    old.deserialize(db_bytes)
    new.deserialize(db_bytes_v2)
    assert con.execute(query).fetchone() == old.execute(query).fetchone()
    aws_env.put(bucket, "app.db", db_bytes_v2)
    assert con.pull() is True
    assert con.execute(query).fetchone() == new.execute(query).fetchone()
    assert con.pull() is False  # nothing new
    con.close()


def test_a_live_wal_mode_database_is_followed_with_signed_requests(aws_env, s3_proxy, tmp_path):
    """A WAL-mode database uploaded with its -wal: both objects are read (signed), and
    pull() takes the frames of a newer -wal (sources/live.py)."""
    src = tmp_path / "live.db"
    writer = sqlite3.connect(src)
    writer.execute("pragma journal_mode=wal")
    writer.execute("create table t(x)")
    writer.execute("insert into t values (1)")
    writer.commit()
    writer.execute("pragma wal_checkpoint(truncate)")
    writer.execute("insert into t values (2)")
    writer.commit()
    bucket = aws_env.bucket()
    aws_env.put(bucket, "live.db", src.read_bytes())
    aws_env.put(bucket, "live.db-wal", (tmp_path / "live.db-wal").read_bytes())
    (tmp_path / "r").mkdir()
    con = _open(f"s3://{bucket}/live.db", tmp_path / "r", endpoint_url=s3_proxy.base_url)
    assert con.execute("select x from t").fetchall() == [(1,), (2,)]  # the second row is in the WAL
    writer.execute("insert into t values (3)")
    writer.commit()
    aws_env.put(bucket, "live.db-wal", (tmp_path / "live.db-wal").read_bytes())
    assert con.pull() is True
    assert con.execute("select x from t").fetchall() == [(1,), (2,), (3,)]
    paths = {r.path.split("?")[0] for r in s3_proxy.records}
    assert paths == {f"/{bucket}/live.db", f"/{bucket}/live.db-wal"}
    assert all(r.headers["authorization"].startswith("AWS4-HMAC-SHA256") for r in s3_proxy.records)
    con.close()
    writer.close()
