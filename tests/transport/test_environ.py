"""The environment's proxy settings still apply although they are read once per host
(transport/environ.py): HTTP_PROXY routes a request, NO_PROXY exempts its host, and a
change after the first request to a host is not seen by that client (the documented
trade), while a new client sees it."""

from __future__ import annotations

import pytest
from support.nginx import free_port

from turso_dbapi.errors import RemoteError
from turso_dbapi.transport.http import HttpClient, Retry

NONE = Retry(total=0)


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_proxy_from_the_environment_is_used_and_no_proxy_exempts_a_host(nginx, no_proxy_env):
    nginx.place("env.txt", b"hello")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request through it fails
    no_proxy_env.setenv("HTTP_PROXY", dead)
    client = HttpClient(nginx.url("env.txt"), retry=NONE)
    with pytest.raises(RemoteError):
        client.request("GET")  # went to the proxy
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    assert HttpClient(nginx.url("env.txt"), retry=NONE).request("GET").body == b"hello"


def test_the_environment_is_read_once_per_client_and_host(nginx, no_proxy_env):
    nginx.place("env.txt", b"hello")
    client = HttpClient(nginx.url("env.txt"), retry=NONE)
    assert client.request("GET").body == b"hello"
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    assert client.request("GET").body == b"hello"  # this client's hosts keep their settings
    with pytest.raises(RemoteError):
        HttpClient(nginx.url("env.txt"), retry=NONE).request("GET")  # a new client reads anew
