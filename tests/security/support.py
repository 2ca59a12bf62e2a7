"""Helpers for the attack tests: a raw HTTP client that sends only part of a body.

A server that admits before reading answers after the few bytes sent; one that reads
first waits for the rest, and the read times out: the test can tell which happened.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson


@dataclass
class RawReply:
    status: int
    body: bytes
    headers: dict[str, str]

    def error(self) -> dict[str, object]:
        envelope: dict[str, object] = orjson.loads(self.body)["error"]
        return envelope


def send_partial(
    base_url: str,
    path: str,
    headers: dict[str, str],
    first_bytes: bytes,
    *,
    timeout_s: float = 15.0,
) -> RawReply:
    """POST with the given headers (Content-Length included) but only ``first_bytes`` of the
    body, then wait for an answer; raises ``TimeoutError`` if the server waits for more."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(head.encode() + b"\r\n" + first_bytes)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_raw, _, rest = data.partition(b"\r\n\r\n")
        lines = head_raw.decode("latin-1").split("\r\n")
        reply_headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            reply_headers[name.strip().lower()] = value.strip()
        length = int(reply_headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return RawReply(int(lines[0].split()[1]), rest[:length], reply_headers)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
