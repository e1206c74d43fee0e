"""``S3Source``: pages of a SQLite object in a (private) S3 bucket, or any S3-compatible store.

It is the HTTP range source (``sources.range``) with three differences, no fork of it:

(1) Which URLs: ``s3://bucket/key`` (an optional ``?versionId=`` pins that version), and
    ``https://<bucket>.s3[.<region>].amazonaws.com/<key>`` or
    ``https://s3[.<region>].amazonaws.com/<bucket>/<key>`` when botocore is installed. A
    presigned URL (``X-Amz-Signature``/``Signature`` in its query) is already signed: it stays
    a plain HTTP URL.
(2) Where and as whom: botocore resolves everything the AWS tools do — credentials (env
    vars, shared credentials/config files, ``profile``, SSO, container and instance roles),
    region and endpoint (``AWS_ENDPOINT_URL[_S3]``, ``endpoint_url`` in the config file) —
    and the connect options ``endpoint_url``, ``region``, ``profile`` override it. The object
    URL is the one botocore's endpoint rules give ``GetObject`` (virtual-host or path style).
    Every request attempt is signed with SigV4 by botocore (``S3SigV4Auth``) through the
    transport's ``sign`` hook; signed are the host, the Range and If-* headers and the
    ``x-amz-*`` ones, so a proxy that rewrites hop-by-hop headers does not break the
    signature. No credentials found: requests go unsigned (a public bucket still reads).
(3) Version pinning: a versioned bucket answers open() with ``x-amz-version-id``; every
    later read names that version (``?versionId=``), so an object overwritten mid-session
    keeps serving the version the session began with. Otherwise the ETag pins it
    (``If-Match``), exactly as for any HTTP host: an overwrite raises ``RemoteChangedError``.
    ``pull()`` re-opens the plain URL and pins whatever version it finds; a live WAL-mode
    database (``sources.live``) reads ``<key>-wal`` through the same signed client.
(4) S3 has no multi-range: runs are read with single ranges (joined across small gaps),
    never first tried as a multi-range request.
(5) An error reply's XML ``<Code>``/``<Message>`` become the advice of the ``RemoteError``
    (``InvalidAccessKeyId``, ``SignatureDoesNotMatch``, ``AccessDenied``, ``NoSuchKey``,
    wrong region, ...). Secrets (the secret key, session token, signatures) never appear in
    logs, reprs or messages: the display URL is ``s3://bucket/key``.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit
from xml.etree import ElementTree

from ..errors import NotSupportedError, ProgrammingError, RemoteError
from ..transport.http import Reply
from .range import HttpRangeSource
from .range_reply import Validators

INSTALL_HINT = "pip install turso_dbapi[s3]"
# (1) virtual-host style: <bucket>.s3[.-]<region>.amazonaws.com; path style: s3[.-]<region>...
_VHOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.\-]*?)\.s3(?:[.\-](?P<region>[a-z0-9\-]+))?\.amazonaws\.com$")
_PATH_HOST = re.compile(r"^s3(?:[.\-](?P<region>[a-z0-9\-]+))?\.amazonaws\.com$")
_PRESIGNED = {"x-amz-signature", "signature", "x-amz-credential"}
# (2) headers that go into the signature: the others (User-Agent, Connection, ...) are
# allowed to change on the way
_SIGNED = re.compile(r"^(range|if-match|if-none-match|if-range|if-unmodified-since|if-modified-since|x-amz-.*)$",
                     re.I)

_ADVICE = {
    "InvalidAccessKeyId": "the access key id is not known to this S3 endpoint: check the AWS "
                          "credentials (AWS_ACCESS_KEY_ID, the profile) and endpoint_url",
    "SignatureDoesNotMatch": "the signature does not match: check the secret access key of these "
                             "credentials (AWS_SECRET_ACCESS_KEY, the profile)",
    "InvalidToken": "the session token is invalid: refresh the temporary credentials",
    "ExpiredToken": "the session token expired: refresh the temporary credentials",
    "AccessDenied": "access denied: these credentials may not read this object (bucket policy, "
                    "IAM policy), or no credentials were found",
    "NoSuchBucket": "no such bucket: check the bucket name, endpoint_url and region",
    "NoSuchKey": "no such object: check the key",
    "NoSuchVersion": "no such object version: check versionId",
    "AuthorizationHeaderMalformed": "wrong region: pass region=... (or set AWS_REGION)",
    "PermanentRedirect": "the bucket is in another region: pass region=... (or set AWS_REGION)",
}


class S3Location:
    """Bucket, key, optional version and region of an S3 URL (1)."""

    def __init__(self, bucket: str, key: str, version_id: Optional[str] = None,
                 region: Optional[str] = None):
        if not bucket or not key:
            raise ProgrammingError("an S3 URL names a bucket and a key: s3://bucket/path/to/db.sqlite")
        self.bucket = bucket
        self.key = key
        self.version_id = version_id
        self.region = region

    @property
    def display_url(self) -> str:
        tail = f"?versionId={quote(self.version_id)}" if self.version_id else ""
        return f"s3://{self.bucket}/{self.key}{tail}"


def parse_s3_url(url: str) -> Optional[S3Location]:
    """An ``S3Location`` when ``url`` names an S3 object to sign for (1), else None."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    version = query.get("versionId") or None
    if scheme == "s3":
        other = sorted(k for k in query if k != "versionId")
        if other:
            raise ProgrammingError(f"unknown query parameter(s) {', '.join(other)} in an s3:// URL; "
                                   "known: versionId and the connect options")
        return S3Location(parts.netloc, unquote(parts.path.lstrip("/")), version)
    if scheme not in ("http", "https") or {k.lower() for k in query} & _PRESIGNED:
        return None
    host = (parts.hostname or "").lower()
    m = _VHOST.match(host)
    if m:
        return S3Location(m.group("bucket"), unquote(parts.path.lstrip("/")), version,
                          _region(m.group("region")))
    m = _PATH_HOST.match(host)
    if m:
        bucket, _, key = parts.path.lstrip("/").partition("/")
        return S3Location(bucket, unquote(key), version, _region(m.group("region")))
    return None


def _region(label: Optional[str]) -> Optional[str]:
    # s3.amazonaws.com and s3-external-1 are us-east-1; "dualstack.<region>" names one too
    if not label or label == "external-1":
        return None
    return label.split(".")[-1].replace("dualstack", "") or None


def is_s3_url(url: str) -> bool:
    try:
        return parse_s3_url(url) is not None
    except ProgrammingError:
        return True  # an s3:// URL, malformed: S3Source will say what is wrong


def botocore_available() -> bool:
    try:
        import botocore  # noqa: F401
    except ImportError:
        return False
    return True


class _SigV4:
    """The ``sign`` hook (2): SigV4 by botocore, credentials refreshed as botocore sees fit.
    Its repr shows the access key id's last 4 characters at most, never the secret."""

    def __init__(self, credentials: Any, region: str):
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        self._credentials = credentials  # botocore's (refreshable) Credentials
        self._region = region
        self._auth_cls = S3SigV4Auth
        self._request_cls = AWSRequest
        self._lock = threading.Lock()

    def __call__(self, method: str, url: str, headers: Mapping[str, str]) -> Dict[str, str]:
        try:
            with self._lock:  # refreshing credentials is not thread-safe everywhere
                frozen = self._credentials.get_frozen_credentials()
        except Exception as exc:  # botocore's own errors: credential_process, SSO, IMDS...
            raise RemoteError(f"cannot get AWS credentials to sign the request: {type(exc).__name__}"
                              " (check the profile / credential source)") from None
        signed = {k: v for k, v in headers.items() if _SIGNED.match(k)}
        request = self._request_cls(method=method, url=url, headers=signed)
        self._auth_cls(frozen, "s3", self._region).add_auth(request)
        return {k: v for k, v in request.headers.items()
                if k.lower() in ("authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token")}

    def __repr__(self) -> str:
        return f"<SigV4 s3 {self._region} ***>"


def _explain(reply: Reply) -> Optional[str]:
    """(5) Advice from S3's XML error body: its code, message and our hint."""
    body = reply.body or b""
    if not body.lstrip().startswith(b"<"):
        return None
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    code = (root.findtext("Code") or "").strip()
    message = (root.findtext("Message") or "").strip()[:300]
    if not code:
        return None
    hint = _ADVICE.get(code)
    expected = (root.findtext("Region") or "").strip()  # AuthorizationHeaderMalformed names it
    if expected and code in ("AuthorizationHeaderMalformed", "PermanentRedirect"):
        hint = f"the bucket is in region {expected}: pass region={expected}"
    text = f"S3 {code}: {message}" if message else f"S3 {code}"
    return f"{text} ({hint})" if hint else text


class _Built(Exception):
    def __init__(self, url: str):
        super().__init__()
        self.url = url


def _stop(request: Any, **_: Any) -> None:
    raise _Built(request.url)


def _get_object_url(client: Any, params: Mapping[str, str]) -> str:
    try:
        client.get_object(**params)
    except _Built as built:
        return built.url
    raise RemoteError("botocore sent GetObject instead of stopping before it")  # never: _stop raises


# URL-building clients by everything that decides their endpoint: making one loads S3's
# service model (~50-80 ms), which a connect should pay once per process, not each time.
_clients: Dict[Tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _url_client(session: Any, profile: Optional[str], region: Optional[str], endpoint_url: Optional[str]) -> Any:
    config_file = os.path.expanduser(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    try:
        config_mtime = os.stat(config_file).st_mtime_ns
    except OSError:
        config_mtime = None
    env = tuple(sorted((k, v) for k, v in os.environ.items()
                       if k.startswith("AWS_") and "SECRET" not in k and "TOKEN" not in k))
    key = (profile, region, endpoint_url, config_file, config_mtime, env)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # The client only builds the URL, exactly as a GetObject call would (endpoint
            # rules: virtual-host or path style, region, custom endpoint): the request is
            # stopped before it is sent, so placeholder keys do. Real requests are signed by
            # _SigV4 with the credentials of the chain.
            client = session.create_client("s3", region_name=region, endpoint_url=endpoint_url,
                                           aws_access_key_id="-", aws_secret_access_key="-")
            client.meta.events.register("before-send.s3.GetObject", _stop)
            _clients[key] = client
        return client


def resolve(location: S3Location, *, endpoint_url: Optional[str] = None, region: Optional[str] = None,
            profile: Optional[str] = None) -> Tuple[str, str, Any]:
    """(object URL, signing region, credentials or None) from botocore's chain (2)."""
    try:
        import botocore
        import botocore.session
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise NotSupportedError(
            f"reading {location.display_url} needs botocore to sign S3 requests: {INSTALL_HINT}"
        ) from None
    try:
        session = botocore.session.Session(profile=profile)
        client = _url_client(session, profile, region or location.region, endpoint_url)
        params: Dict[str, str] = {"Bucket": location.bucket, "Key": location.key}
        if location.version_id:
            params["VersionId"] = location.version_id
        url = _get_object_url(client, params)
        credentials = session.get_credentials()
    except BotoCoreError as exc:  # ProfileNotFound, bad config, bad endpoint URL...
        raise ProgrammingError(f"cannot set up S3 access to {location.display_url}: {exc}") from None
    signing_region = client.meta.region_name or "us-east-1"
    if signing_region == "aws-global":
        signing_region = "us-east-1"
    return url, signing_region, credentials


class S3Source(HttpRangeSource):
    """A ``PageSource`` over an S3 object (see the module rules). Options as
    ``HttpRangeSource`` plus ``endpoint_url``, ``region`` and ``profile``."""

    def __init__(self, url: str, *, endpoint_url: Optional[str] = None, region: Optional[str] = None,
                 profile: Optional[str] = None, **kwargs: Any):
        location = parse_s3_url(url)
        if location is None:
            raise ProgrammingError(f"not an S3 URL: {url.split('?')[0]}")
        if kwargs.get("auth_token") is not None:
            raise ProgrammingError("auth_token does not apply to S3: requests are signed with the "
                                   "AWS credentials (env vars, profile, config files)")
        object_url, signing_region, credentials = resolve(
            location, endpoint_url=endpoint_url, region=region, profile=profile)
        self.location = location
        self.region = signing_region
        self.signed = credentials is not None
        sign = _SigV4(credentials, signing_region) if credentials is not None else None
        kwargs.setdefault("max_ranges", 1)  # (4)
        super().__init__(object_url, sign=sign, explain=self._explain, **kwargs)
        self.display_url = location.display_url

    def _explain(self, reply: Reply) -> Optional[str]:
        advice = _explain(reply)
        if not self.signed and reply.status in (401, 403):
            advice = (advice + "; " if advice else "") + (
                "no AWS credentials were found, so the request was not signed: set "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or pass profile=...")
        return advice

    @classmethod
    def from_options(cls, url: str, options: Mapping[str, Any], **extra: Any) -> HttpRangeSource:
        for key in ("endpoint_url", "region", "profile"):
            if options.get(key) is not None:
                extra.setdefault(key, options[key])
        return super().from_options(url, options, **extra)

    def _pinned_url(self, validators: Validators) -> Optional[str]:
        """(3) A versioned bucket's object: every read names the pinned version."""
        version = validators.s3_version
        if not version or version == "null" or self.location.version_id:
            return None  # unversioned ("null"): the ETag pins it; or the URL pins it already
        parts = urlsplit(self._http.url)
        query = parse_qsl(parts.query, keep_blank_values=True) + [("versionId", version)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def __repr__(self) -> str:
        return f"<S3Source {self.display_url} region={self.region} version={self.version or '-'}>"
