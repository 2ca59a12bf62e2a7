"""Start imagegate, LiteLLM's proxy and Portkey's gateway in front of the fake upstream.

Each gateway is configured with three routes, one per upstream path (``small``, ``large``,
``slow``), and reached with the same request body; only the URL and headers differ.

- imagegate: default config (auth, in-process rate limits, credit ledger, SQLite), a key with
  credits and rpm/ipm limits far above what the bench sends.
- LiteLLM: ``litellm --config`` with a ``master_key`` (its only auth without a database), one
  worker, the local model cost map (no network).
- Portkey: ``start-server.js --headless``, routed per request with ``x-portkey-provider`` and
  ``x-portkey-custom-host`` (its documented way to reach a self-hosted OpenAI-compatible server).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENV = HERE / ".env"
ROUTES = ("small", "large", "slow")
UPSTREAM_KEY = "sk-upstream-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gateway:
    name: str
    url: str  # full URL of the generations endpoint, with {route} to fill in
    headers: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    route_headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def target(self, route: str) -> tuple[str, dict[str, str]]:
        """URL and headers that reach ``route`` of the upstream through this gateway."""
        return self.url.format(route=route), {**self.headers, **self.route_headers.get(route, {})}

    def model(self, route: str) -> str:
        return f"bench/{route}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers; auth on the health route is fine
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{log.name}: not ready after {seconds}s:\n{log.read_text()[-3000:]}")


def _environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the caller's IMAGEGATE_* settings (the bench sets its own)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    return {**base, **(extra or {})}


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_environ(env))


def direct(upstream: str) -> Gateway:
    return Gateway("direct", f"{upstream}/{{route}}/v1/images/generations", {})


IMAGEGATE_CONFIG = """\
providers:
{providers}
models:
{models}
"""


_KEY_CREATE = ["keys", "create", "--name", "bench", "--credits", "1000000", "--rpm", "100000000"]
_KEY_CREATE += ["--ipm", "100000000"]


def start_imagegate(upstream: str, run: Path, workers: int = 1, server: str = "uvicorn") -> Gateway:
    """``server="granian"``: the same app under granian (``pip install granian`` into the
    project's .venv first), started from the worker factory after ``imagegate migrate``."""
    name = "imagegate" if workers == 1 else f"imagegate-{workers}w"
    name += "-granian" if server == "granian" else ""
    data = run / f"{name}-data"
    run.mkdir(parents=True, exist_ok=True)
    providers = "\n".join(
        f"  - {{id: bench-{r}, type: openai_compatible, base_url: {upstream}/{r}/v1,"
        f" api_key: {UPSTREAM_KEY}, timeout_s: 60}}"
        for r in ROUTES
    )
    models = "\n".join(
        f"  - id: bench/{r}\n    operations: [generate]\n    sizes: [1024x1024]\n"
        f"    endpoints:\n      - provider: bench-{r}\n        upstream_model: gpt-image-1\n"
        f"        pricing: {{per_image: 0.001}}"
        for r in ROUTES
    )
    config = run / f"{name}.yaml"
    config.write_text(IMAGEGATE_CONFIG.format(providers=providers, models=models))
    port = free_port()
    env = {"IMAGEGATE_DATA_DIR": str(data), "IMAGEGATE_CONFIG": str(config)}
    binary = str(REPO / ".venv/bin/imagegate")
    log = run / f"{name}.log"
    serve = [binary, "serve", "--port", str(port), "--config", str(config)]
    if server == "granian":
        subprocess.run([binary, "migrate"], env=_environ(env), check=True, capture_output=True)
        env |= {"IMAGEGATE_LOG_LEVEL": "INFO", "IMAGEGATE_NO_MIGRATE": "1"}
        factory = "imagegate.app:create_app_from_env"
        granian = [str(REPO / ".venv/bin/granian"), "--interface", "asgi", "--factory"]
        granian += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        granian += ["--no-ws", "--loop", "uvloop", factory]
        proc = _spawn(granian, log, env)
    else:
        proc = _spawn([*serve, "--workers", str(workers)], log, env)
    _wait(f"http://127.0.0.1:{port}/healthz", proc, log)
    created = subprocess.run(  # a key with credits, rpm/ipm far above what the bench sends
        [binary, *_KEY_CREATE, "--config", str(config)],
        capture_output=True,
        text=True,
        env=_environ(env),
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{port}/v1/images/generations"
    return Gateway(name, url, headers, proc, log)


LITELLM_MASTER_KEY = "sk-litellm-bench"


def start_litellm(upstream: str, run: Path) -> Gateway:
    model_list = [
        {
            "model_name": f"bench/{r}",
            "litellm_params": {
                "model": "openai/gpt-image-1",
                "api_base": f"{upstream}/{r}/v1",
                "api_key": UPSTREAM_KEY,
            },
        }
        for r in ROUTES
    ]
    config = run / "litellm.json"  # YAML is a superset of JSON
    settings = {
        "model_list": model_list,
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
        # gpt-image-1 refuses `response_format`; dropping it is how LiteLLM is told to go on.
        "litellm_settings": {"drop_params": True},
    }
    config.write_text(json.dumps(settings))
    port = free_port()
    log = run / "litellm.log"
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
    cmd = [str(ENV / "py/bin/litellm"), "--config", str(config), "--host", "127.0.0.1"]
    proc = _spawn([*cmd, "--port", str(port)], log, env)
    _wait(f"http://127.0.0.1:{port}/health/liveliness", proc, log)
    headers = {"Authorization": f"Bearer {LITELLM_MASTER_KEY}", "Content-Type": "application/json"}
    return Gateway("litellm", f"http://127.0.0.1:{port}/v1/images/generations", headers, proc, log)


def start_portkey(upstream: str, run: Path) -> Gateway:
    port = free_port()
    log = run / "portkey.log"
    script = ENV / "node/node_modules/@portkey-ai/gateway/build/start-server.js"
    proc = _spawn(["node", str(script), f"--port={port}", "--headless"], log)
    _wait(f"http://127.0.0.1:{port}/", proc, log)
    headers = {
        "Authorization": f"Bearer {UPSTREAM_KEY}",
        "Content-Type": "application/json",
        "x-portkey-provider": "openai",
    }
    routes = {r: {"x-portkey-custom-host": f"{upstream}/{r}/v1"} for r in ROUTES}
    url = f"http://127.0.0.1:{port}/v1/images/generations"
    return Gateway("portkey", url, headers, proc, log, routes)


def versions() -> dict[str, str]:
    """Versions of what the bench ran, for the results file."""
    found: dict[str, str] = {}
    package = ENV / "node/node_modules/@portkey-ai/gateway/package.json"
    if package.exists():
        found["portkey"] = json.loads(package.read_text())["version"]
    try:
        from importlib.metadata import version

        found["litellm"] = version("litellm")
    except Exception:
        pass
    for tool, flag in (("nginx", "-v"), ("wrk", "-v")):
        out = subprocess.run([tool, flag], capture_output=True, text=True)
        found[tool] = (out.stdout + out.stderr).strip().splitlines()[0]
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and all its descendants, in s."""
    total = 0
    for current in _tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB (from /proc)."""
    total_kb = 0
    for current in _tree(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024
