"""A real S3 API for tests: moto's standalone server with authentication on (pytest plugin
+ plain class).

``MotoS3()`` starts ``python -m moto.server`` on a free loopback port (its own process, so
its work never holds the tests' GIL), creates an IAM user allowed ``s3:*`` with one access
key, then switches moto's authentication on: from then on every request must carry a valid
SigV4 signature of that key (a wrong key id is ``InvalidAccessKeyId``, a wrong secret
``SignatureDoesNotMatch``), as on AWS. ``client()`` is a boto3 client with the key;
``bucket(versioned=...)`` makes a fresh private bucket; ``put(bucket, key, data)`` returns
the object's version id (None when unversioned); ``env`` is the environment a client needs
(credentials, region, no config files of this machine, no instance metadata lookups).

Fixture ``moto_s3`` (session). Missing moto is an error that says how to install it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any, Dict, Optional

try:
    import pytest
except ImportError:  # usable from benchmarks without pytest
    pytest = None  # type: ignore[assignment]

NOT_FOUND = ("moto is not installed: the S3 tests run against moto's standalone server. "
             "Install the test extras: pip install '.[test]' (brings moto[server] and boto3)")
REGION = "us-east-1"


class MotoS3:
    def __init__(self) -> None:
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.key_id = ""
        self.secret = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> Dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> MotoS3:
        try:
            import boto3  # noqa: F401
            import moto.server  # noqa: F401
        except ImportError:
            raise RuntimeError(NOT_FOUND) from None
        from .nginx import free_port  # here: importing it at the top would pre-empt its plugin

        self.port = free_port()
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="inf")  # set-up runs without auth
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start on port {self.port}") from None
                time.sleep(0.1)
        iam = self._client("iam", "AKIAUNUSED0000000000", "unused")
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        # Authentication on: every later request needs a valid signature of that key.
        req = urllib.request.Request(self.endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()
        return self

    def _client(self, service: str, key_id: str, secret: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    def client(self) -> Any:
        return self._client("s3", self.key_id, self.secret)

    def bucket(self, *, versioned: bool = False) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        s3 = self.client()
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def put(self, bucket: str, key: str, data: bytes) -> Optional[str]:
        reply = self.client().put_object(Bucket=bucket, Key=key, Body=data)
        return reply.get("VersionId")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if pytest is not None:

    @pytest.fixture(scope="session")
    def moto_s3():
        """moto's S3 server with authentication on (see the module docstring)."""
        server = MotoS3().start()
        try:
            yield server
        finally:
            server.stop()
