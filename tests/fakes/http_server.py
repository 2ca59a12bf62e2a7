"""A tiny threaded HTTP(S) server on loopback for tests: canned replies, recorded requests.

    with serve_http({"/img": Reply(body=b"...")}) as server:
        ...fetch f"{server.url}/img"...
        assert server.paths == ["/img"]

Routes may be added after start (``server.routes[...] = ...``), e.g. a redirect that needs
the server's own port. Unknown paths get a 404.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the server answers. ``chunked`` sends the body in ``chunk_size`` pieces with
    ``Transfer-Encoding: chunked`` (no Content-Length), pausing ``chunk_delay_s`` between
    them; ``delay_s`` waits before the status line."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    chunk_size: int = 1024
    chunk_delay_s: float = 0.0
    delay_s: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]


Route = Reply | Callable[[Received], Reply]


@dataclass
class FakeHTTPServer:
    url: str
    port: int
    routes: dict[str, Route]
    requests: list[Received] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        """The request paths received so far, in order."""
        return [r.path for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        received = Received(self.command, self.path, dict(self.headers.items()))
        fake.requests.append(received)
        route = fake.routes.get(self.path.split("?", 1)[0])
        if route is None:
            reply = Reply(status=404, body=b"not found")
        else:
            reply = route(received) if callable(route) else route
        time.sleep(reply.delay_s)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if not reply.chunked:
            self.wfile.write(reply.body)
            return
        for start in range(0, len(reply.body), reply.chunk_size):
            piece = reply.body[start : start + reply.chunk_size]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()
            time.sleep(reply.chunk_delay_s)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeHTTPServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (timeouts, size caps) are expected here


@contextmanager
def serve_http(
    routes: Mapping[str, Route] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[FakeHTTPServer]:
    """Serve ``routes`` on ``host`` (a loopback literal, v4 or v6); ``port=0`` picks a free one."""
    server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    server = (server_cls if ":" in host else _Server)((host, port), _Handler)
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    scheme = "https" if ssl_context is not None else "http"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server.fake = FakeHTTPServer(url=f"{scheme}://{netloc}", port=port, routes=dict(routes or {}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server.fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port with nothing listening on it (for connection-refused tests)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
