"""The SDK installs alone: `pip install ./clients/python` into a fresh venv brings httpx and
nothing of the server (no FastAPI, SQLAlchemy, Alembic, uvicorn or Pillow).

One test, one venv: pip installs into it from outside (``pip --python``), so the venv needs no
pip of its own, and wheels come from pip's cache after the first run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

from repo_root import REPO

ROOT = REPO
CLIENT = ROOT / "clients" / "python"
SERVER_ONLY = {"fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn", "pillow", "imagegate"}

PROBE = """
import json, importlib.metadata as md
import imagegate_client
from imagegate_client import ApiClient, Configuration, ImagesApi
api = ImagesApi(ApiClient(Configuration(host="http://127.0.0.1:9/v1", access_token="k")))
print(json.dumps({
    "file": imagegate_client.__file__,
    "dists": sorted({d.metadata["Name"].lower() for d in md.distributions()}),
    "api": type(api).__name__,
}))
"""


def test_client_installs_alone_with_httpx_only(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(CLIENT)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    probe = subprocess.run(
        [str(python), "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert Path(found["file"]).is_relative_to(env_dir)  # the installed copy, not the checkout
    assert found["api"] == "ImagesApi"
    assert {"imagegate-client", "httpx"} <= set(found["dists"])
    assert not SERVER_ONLY & set(found["dists"])


def test_imagegate_client_re_exports_the_sdk() -> None:
    import imagegate_client
    from imagegate import client
    from imagegate.client.configuration import DEFAULT_HOST, local_admin_key
    from imagegate.client.images_api import HttpInfo

    assert client.__all__ == imagegate_client.__all__
    for name in imagegate_client.__all__:
        assert getattr(client, name) is getattr(imagegate_client, name), name
    assert DEFAULT_HOST == imagegate_client.configuration.DEFAULT_HOST
    assert local_admin_key is imagegate_client.configuration.local_admin_key
    assert HttpInfo is imagegate_client.images_api.HttpInfo
