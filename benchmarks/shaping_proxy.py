"""An HTTP/1.1 proxy that shapes replies like a real link: latency and ONE shared bandwidth.

Each request is forwarded to the upstream over its own keep-alive connection; the whole
reply is read, then held until ``latency`` seconds after the request arrived AND until the
shared link has carried it (``bytes * 8 / bandwidth`` seconds, replies queued one after
the other on the one link, whatever connection they belong to), and sent in ONE write on
a TCP_NODELAY socket. So a parallel client pays for its bytes like a serial one (a
per-connection bandwidth would flatter it), and small replies get no Nagle/delayed-ACK
stall from a header write followed by a body write (~40 ms each).

Understands Content-Length and chunked bodies (requests and replies), which covers every
client and server of the benchmarks. Counts requests and reply bytes (``stats()``).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Dict, Optional, Tuple


def _read_head(f) -> Optional[bytes]:
    lines = []
    while True:
        line = f.readline(65537)
        if not line:
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _header(head: bytes, name: bytes) -> Optional[bytes]:
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def _read_body(f, head: bytes, is_reply_to_head: bool = False) -> bytes:
    status = head.split(b" ", 2)
    if is_reply_to_head or (len(status) > 1 and status[1][:1] == b"1") or status[1:2] in ([b"204"], [b"304"]):
        return b""
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        out = []
        while True:
            size_line = f.readline()
            out.append(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    t = f.readline()
                    out.append(t)
                    if t in (b"\r\n", b"\n", b""):
                        return b"".join(out)
            out.append(f.read(size + 2))
    length = _header(head, b"content-length")
    return f.read(int(length)) if length is not None else b""


class ShapingProxy:
    """``ShapingProxy(upstream_host, upstream_port, latency=0.02, bandwidth=100e6)``;
    ``start()`` -> its port; ``url_for(path)``; ``stats()``; ``close()``."""

    def __init__(self, host: str, port: int, latency: float = 0.0, bandwidth: float = 100e6):
        self.upstream = (host, port)
        self.latency = latency
        self.bandwidth = bandwidth
        self._lock = threading.Lock()
        self._link_free = 0.0  # when the shared link has carried every reply queued so far
        self.requests = 0
        self.reply_bytes = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False

    def start(self) -> int:
        threading.Thread(target=self._accept, daemon=True).start()
        return self.port

    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {"requests": self.requests, "bytes": self.reply_bytes}

    def reset(self) -> None:
        with self._lock:
            self.requests = self.reply_bytes = 0

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _schedule(self, arrived: float, nbytes: int) -> float:
        """When the reply may leave: after the latency, and after the one link carried it."""
        with self._lock:
            start = max(arrived + self.latency, self._link_free)
            done = start + nbytes * 8 / self.bandwidth if self.bandwidth else start
            self._link_free = done
            self.requests += 1
            self.reply_bytes += nbytes
            return done

    def _serve(self, client: socket.socket) -> None:
        up: Optional[Tuple[socket.socket, object]] = None
        cf = client.makefile("rb")
        try:
            while True:
                head = _read_head(cf)
                if head is None:
                    return
                arrived = time.perf_counter()
                body = _read_body(cf, b"X 200 X\r\n" + head.split(b"\r\n", 1)[1])
                if up is None:
                    s = socket.create_connection(self.upstream)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    up = (s, s.makefile("rb"))
                up[0].sendall(head + body)
                reply_head = _read_head(up[1])
                if reply_head is None:
                    return
                is_head = head.split(b" ", 1)[0] == b"HEAD"
                reply = reply_head + _read_body(up[1], reply_head, is_head)
                leave = self._schedule(arrived, len(reply))
                wait = leave - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                client.sendall(reply)  # ONE write
                if (_header(reply_head, b"connection") or b"").lower() == b"close":
                    return
        except (OSError, ValueError):
            return
        finally:
            client.close()
            if up is not None:
                up[0].close()
