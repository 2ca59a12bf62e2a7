"""Memory and admission under abuse (issue 12): what hostile uploads cost the gateway.

Usage:
    .venv/bin/python bench/abuse.py [--src DIR] [--parallel 12] [--json out.json]

Starts ``imagegate serve`` on a loopback port (``--src`` puts another checkout's ``src``
first on PYTHONPATH, to measure an older version), then runs, one after another:

1. ``oversized-json``: a valid 60 MB JSON body (a long array in an unknown field) to
   generations;
2. ``multipart-270mb``: one multipart edit of six 45 MB image parts;
3. ``parallel-uploads``: ``--parallel`` keys each sending a 45 MB edit at once;
4. ``rate-limited``: a key with ``rpm: 1`` that has used its request sends five 45 MB edits.

For each it reports the statuses, the bytes the client got into the socket before the
answer came (an upper bound of what the server read; the socket buffers are shrunk to
64 KB), the gateway's RSS before and its peak (VmHWM, reset before each attack where the
kernel allows), and the worst latency of a small generation sent by an ordinary key every
100 ms meanwhile (and whether any of those failed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import orjson

MB = 1024 * 1024
ADMIN = "ig_benchadmin01_" + "b" * 43
BOUNDARY = "abuseBOUNDARY"
CHUNK = 64 * 1024


@dataclass
class Upload:
    status: int
    sent: int


@dataclass
class Attack:
    name: str
    statuses: dict[str, int] = field(default_factory=dict)
    max_sent_mb: float = 0.0
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    seconds: float = 0.0
    probe_max_ms: float = 0.0
    probe_failures: int = 0


def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):  # Linux >= 4.0: 5 resets VmHWM to the current RSS
        Path(f"/proc/{pid}/clear_refs").write_text("5")


Segment = bytes | tuple[bytes, int]  # literal bytes, or (pattern, total length)


def body_length(segments: list[Segment]) -> int:
    return sum(len(s) if isinstance(s, bytes) else s[1] for s in segments)


def body_chunks(segments: list[Segment]) -> Iterator[bytes]:
    for seg in segments:
        if isinstance(seg, bytes):
            yield seg
            continue
        pattern, length = seg
        block = pattern * (CHUNK // len(pattern))
        while length > 0:
            piece = block[: min(len(block), length)]
            length -= len(piece)
            yield piece


def upload(port: int, path: str, headers: dict[str, str], segments: list[Segment]) -> Upload:
    """Send the body; stop as soon as an answer arrives."""
    total = body_length(segments)
    chunks = body_chunks(segments)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
    sock.connect(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {total}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode())
    pending, sent = b"", 0
    sock.setblocking(False)
    answer = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            want_write = [sock] if sent < total else []
            readable, writable, _ = select.select([sock], want_write, [], 1.0)
            if readable:
                data = sock.recv(65536)
                answer += data
                if not data or b"\r\n" in answer:
                    break
            if writable:
                pending = pending or next(chunks, b"")
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += n
                pending = pending[n:]
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    except (ConnectionResetError, OSError):
        status = 0
    finally:
        sock.close()
    return Upload(status, sent)


def multipart(parts: int, part_bytes: int) -> list[Segment]:
    """A prompt and ``parts`` image parts of ``part_bytes`` each (PNG magic, then zeros)."""
    segments: list[Segment] = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n'.encode()
    ]
    for _ in range(parts):
        segments.append(
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image[]"; '
                'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + b"\x89PNG\r\n\x1a\n"
        )
        segments.append((b"\0", part_bytes - 8))
        segments.append(b"\r\n")
    segments.append(f"--{BOUNDARY}--\r\n".encode())
    return segments


def long_json(total: int) -> list[Segment]:
    """A valid JSON body of about ``total`` bytes: a long array in an unknown field."""
    head, tail = b'{"prompt": "x", "junk": [', b"1]}"
    return [head, (b"1,", total - len(head) - len(tail)), tail]


def _headers(key: str, kind: str) -> dict[str, str]:
    ctype = "application/json" if kind == "json" else f"multipart/form-data; boundary={BOUNDARY}"
    return {"Authorization": f"Bearer {key}", "Content-Type": ctype}


class Probe:
    """A well-behaved client generating small images every 100 ms during an attack."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.worst_ms, self.failures = 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while True:  # at least once, even when the attack is over at once
                started = time.perf_counter()
                try:
                    reply = client.post(
                        f"{self.url}/v1/images/generations",
                        json={"model": "sandbox", "prompt": "ok", "size": "64x64"},
                        headers={"Authorization": f"Bearer {self.key}"},
                    )
                    if reply.status_code != 200:
                        self.failures += 1
                except httpx.HTTPError:
                    self.failures += 1
                self.worst_ms = max(self.worst_ms, (time.perf_counter() - started) * 1000)
                if self._stop.wait(0.1):
                    return

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _key(url: str, **fields: object) -> str:
    reply = httpx.post(
        f"{url}/v1/admin/keys",
        json={"name": "abuse", **fields},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    reply.raise_for_status()
    key: str = reply.json()["key"]
    return key


def run_attack(name: str, pid: int, url: str, probe_key: str, work: object) -> Attack:
    attack = Attack(name)
    time.sleep(0.5)
    attack.rss_before_mb = _status_kb(pid, "VmRSS") / 1024
    _reset_peak(pid)
    started = time.perf_counter()
    with Probe(url, probe_key) as probe:
        uploads: list[Upload] = work()  # type: ignore[operator]
    attack.seconds = round(time.perf_counter() - started, 2)
    attack.rss_peak_mb = _status_kb(pid, "VmHWM") / 1024
    for up in uploads:
        attack.statuses[str(up.status)] = attack.statuses.get(str(up.status), 0) + 1
    attack.max_sent_mb = round(max(up.sent for up in uploads) / MB, 3)
    attack.probe_max_ms, attack.probe_failures = round(probe.worst_ms, 1), probe.failures
    attack.rss_before_mb = round(attack.rss_before_mb, 1)
    attack.rss_peak_mb = round(attack.rss_peak_mb, 1)
    return attack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", help="another checkout's src directory to run instead")
    parser.add_argument("--parallel", type=int, default=12)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir = Path(tempfile.mkdtemp(prefix="imagegate-abuse-"))
    env = {**os.environ, "IMAGEGATE_DATA_DIR": str(data_dir), "IMAGEGATE_ADMIN_KEY": ADMIN}
    env.pop("IMAGEGATE_CONFIG", None)
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    log = (data_dir / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagegate", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        results = attacks(proc.pid, port, url, args.parallel)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"{'attack':<18} {'statuses':<22} {'sent MB':>8} {'RSS MB':>14} {'probe ms':>9}")
    for a in results:
        rss = f"{a.rss_before_mb:.0f}->{a.rss_peak_mb:.0f}"
        statuses = ",".join(f"{k}x{v}" for k, v in sorted(a.statuses.items()))
        print(
            f"{a.name:<18} {statuses:<22} {a.max_sent_mb:>8.2f} {rss:>14} "
            f"{a.probe_max_ms:>7.0f}{'!' if a.probe_failures else ' '}"
        )
    if args.json:
        Path(args.json).write_bytes(orjson.dumps([asdict(a) for a in results]))


def attacks(pid: int, port: int, url: str, parallel: int) -> list[Attack]:
    probe_key = _key(url)
    plain = _key(url)
    limited = _key(url, rpm=1)
    httpx.post(
        f"{url}/v1/images/generations",
        json={"model": "sandbox", "prompt": "x", "size": "64x64"},
        headers={"Authorization": f"Bearer {limited}"},
        timeout=30,
    )
    results = [
        run_attack(
            "oversized-json",
            pid,
            url,
            probe_key,
            lambda: [
                upload(port, "/v1/images/generations", _headers(plain, "json"), long_json(60 * MB))
            ],
        ),
        run_attack(
            "multipart-270mb",
            pid,
            url,
            probe_key,
            lambda: [
                upload(
                    port,
                    "/v1/images/edits",
                    _headers(plain, "multipart"),
                    multipart(6, 45 * MB),
                )
            ],
        ),
    ]
    keys = [_key(url) for _ in range(parallel)]

    def parallel_uploads() -> list[Upload]:
        with ThreadPoolExecutor(parallel) as pool:
            return list(
                pool.map(
                    lambda k: upload(
                        port,
                        "/v1/images/edits",
                        _headers(k, "multipart"),
                        multipart(1, 45 * MB),
                    ),
                    keys,
                )
            )

    results.append(run_attack("parallel-uploads", pid, url, probe_key, parallel_uploads))
    results.append(
        run_attack(
            "rate-limited",
            pid,
            url,
            probe_key,
            lambda: [
                upload(
                    port,
                    "/v1/images/edits",
                    _headers(limited, "multipart"),
                    multipart(1, 45 * MB),
                )
                for _ in range(5)
            ],
        )
    )
    return results


if __name__ == "__main__":
    main()
