"""Start the fake upstream and one gateway, and keep them up for ``drive.py`` (A/B runs and
profiles without restarting the gateway for every cell).

    PYTHONPATH=<checkout>/src bench/gateways/.env/py/bin/python bench/gateways/hold.py imagegate DIR

``DIR/info.json`` gets the gateway's pid and each route's URL, headers and body; ``touch
DIR/stop`` stops both. Environment: ``LEASE_USD=5`` adds ``credits: {lease_usd: 5}`` to
imagegate's config, ``WORKERS=2`` runs ``serve --workers 2``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateways
import run
import upstream


def main() -> None:
    name, out = sys.argv[1], Path(sys.argv[2])
    if os.environ.get("LEASE_USD"):
        gateways.IMAGEGATE_CONFIG += f"credits:\n  lease_usd: {os.environ['LEASE_USD']}\n"
    workers = int(os.environ.get("WORKERS", "1"))
    run.raise_fd_limit()
    rundir = out / "run"
    rundir.mkdir(parents=True, exist_ok=True)
    files = gateways.ENV / "fixtures"
    upstream.write_fixtures(files)
    port = gateways.free_port()
    nginx = upstream.start_nginx(rundir / "nginx", files, port)
    base = f"http://127.0.0.1:{port}"
    starters = {
        "imagegate": functools.partial(gateways.start_imagegate, workers=workers),
        "portkey": gateways.start_portkey,
        "direct": lambda b, r: gateways.direct(b),
    }
    gw = starters[name](base, rundir)
    info: dict[str, object] = {"pid": gw.process.pid if gw.process else nginx.pid}
    targets = {}
    for route in gateways.ROUTES:
        url, headers = gw.target(route)
        payload = {"model": gw.model(route), "prompt": "a lighthouse at dusk, benchmark"}
        payload |= {"size": "1024x1024", "n": 1}
        targets[route] = {"url": url, "headers": headers, "body": json.dumps(payload)}
    info["targets"] = targets
    (out / "info.json").write_text(json.dumps(info))
    print("ready", info["pid"], flush=True)
    try:
        while not (out / "stop").exists():
            time.sleep(0.5)
    finally:
        gw.stop()
        nginx.terminate()
        nginx.wait(10)


if __name__ == "__main__":
    main()
