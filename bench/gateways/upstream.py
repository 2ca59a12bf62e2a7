"""The fake upstream: nginx serving canned OpenAI Images responses from disk.

A static server is the fastest upstream we can run here, so what the bench measures is the
gateway, not the fake. Three paths, each an OpenAI-compatible base URL:

- ``/small/v1/images/generations``: a ~15 KB response (a 1024x1024 PNG that compresses well);
- ``/large/v1/images/generations``: a ~3.6 MB response (a 1024x1024 noisy PNG as b64_json);
- ``/slow/v1/images/generations``: the small response after 2 s (nginx's echo module).

nginx answers POST to a static file with 405; ``error_page 405 =200 $uri`` turns that into an
internal GET of the same file, which is the usual way to serve canned POST responses.
"""

from __future__ import annotations

import base64
import io
import json
import random
import subprocess
import time
from pathlib import Path

from PIL import Image

SLOW_S = 2


def _png(noise_rows: float, seed: int) -> bytes:
    """A 1024x1024 RGB PNG: a gradient whose first ``noise_rows`` rows are noise, which sets
    how well it compresses and so its size."""
    rng = random.Random(seed)
    img = Image.new("RGB", (1024, 1024))
    pixels = bytearray()
    for y in range(1024):
        shade = y // 4
        pixels += bytes((shade, 128, 255 - shade)) * 1024
    noise = int(noise_rows * 1024 * 3)
    pixels[:noise] = rng.randbytes(noise)
    img.frombytes(bytes(pixels))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _response(png: bytes) -> bytes:
    """OpenAI's ImagesResponse as gpt-image-1 returns it."""
    body = {
        "created": 1_750_000_000,
        "background": "opaque",
        "data": [{"b64_json": base64.b64encode(png).decode()}],
        "output_format": "png",
        "quality": "high",
        "size": "1024x1024",
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
            "output_tokens": 4160,
            "total_tokens": 4170,
        },
    }
    return json.dumps(body).encode()


def write_fixtures(root: Path) -> dict[str, int]:
    """Write ``small.json`` and ``large.json`` under ``root``; returns their sizes."""
    root.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, rows in (("small", 1.5), ("large", 870)):
        path = root / f"{name}.json"
        if not path.exists():
            path.write_bytes(_response(_png(rows, seed=7)))
        sizes[name] = path.stat().st_size
    return sizes


NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {run}/body;
  proxy_temp_path {run}/proxy;
  fastcgi_temp_path {run}/fastcgi;
  uwsgi_temp_path {run}/uwsgi;
  scgi_temp_path {run}/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  default_type application/json;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {files};
    location = /small/v1/images/generations {{
      try_files /small.json =404;
      error_page 405 =200 $uri;
    }}
    location = /large/v1/images/generations {{
      try_files /large.json =404;
      error_page 405 =200 $uri;
    }}
    location = /slow/v1/images/generations {{
      echo_read_request_body;
      echo_sleep {slow};
      echo_location /small.json;
    }}
    location = /small.json {{ }}
  }}
}}
"""


def start_nginx(run: Path, files: Path, port: int) -> subprocess.Popen[bytes]:
    """Start nginx in the foreground (``daemon off``) so the bench owns and stops it."""
    run.mkdir(parents=True, exist_ok=True)
    conf = run / "nginx.conf"
    conf.write_text(NGINX_CONF.format(run=run, files=files, port=port, slow=SLOW_S))
    log = (run / "nginx.out").open("wb")
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(run)], stdout=log, stderr=subprocess.STDOUT
    )
    time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError(f"nginx exited: {(run / 'nginx.out').read_text()}")
    return proc
