"""One load generator for every gateway: wrk, with a Lua script that POSTs a JSON body.

wrk counts non-2xx/3xx answers as ``errors.status``; socket errors and timeouts are counted
apart. ``done()`` prints one JSON line the bench parses, so no text scraping of wrk's report.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

_LUA = """\
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,'
    .. '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


@dataclass
class LoadResult:
    rps: float  # successful (2xx/3xx) responses per second
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx + socket errors + timeouts
    requests: int


def run_wrk(
    url: str,
    body: str,
    headers: dict[str, str],
    *,
    connections: int,
    duration_s: int,
    timeout_s: int,
    workdir: Path,
) -> LoadResult:
    lines = [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    script = workdir / "post.lua"
    script.write_text(_LUA.format(body=_lua_string(body), headers="\n".join(lines)))
    threads = min(2, connections)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")
    raw = json.loads(line.removeprefix("BENCHJSON "))
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    ok = raw["requests"] - raw["status"]
    return LoadResult(
        rps=ok / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=raw["status"] + socket_errors,
        requests=raw["requests"],
    )
