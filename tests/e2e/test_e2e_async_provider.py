"""An async-polling provider (BFL) behind a real gateway process, driven by the openai SDK,
plus the generated providers doc staying in step with the code."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import urlsplit

from openai import OpenAI

from e2e_support import open_image
from fakes.bfl import FakeBFL, serve_fake
from gateway import run_gateway
from imagegate.tools.provider_table import render
from repo_root import REPO

CONFIG = """
providers:
  - id: bfl
    type: bfl
    base_url: "{url}"
    api_key: bfl-fake
    poll_interval_s: 0.01
    result_hosts: ["{delivery}"]
"""


def test_bfl_generation_through_the_gateway(tmp_path: Path) -> None:
    with serve_fake(FakeBFL()) as fake:
        config = CONFIG.format(url=fake.url, delivery=urlsplit(fake.delivery_url).netloc)
        with run_gateway(tmp_path, config) as gateway:
            client = OpenAI(base_url=gateway.v1, api_key=gateway.admin_key, max_retries=0)
            result = client.images.generate(
                model="flux-1.1-pro",
                prompt="a fox",
                n=2,
                size="512x384",
                extra_body={"meta": True, "seed": 3},
            )
    assert len(fake.submissions) == 2  # one image per BFL task: n fans out
    assert result.data is not None
    assert sorted(s.body["seed"] for s in fake.submissions) == [3, 4]
    images = [open_image(base64.b64decode(item.b64_json or "")) for item in result.data]
    assert [img.size for img in images] == [(512, 384), (512, 384)]
    meta = result.model_extra["meta"] if result.model_extra else {}
    assert meta["provider"] == "bfl" and meta["upstream_model"] == "flux-pro-1.1"
    assert all(fake.delivery_url not in (item.url or "") for item in result.data)


def test_providers_doc_is_generated_from_code() -> None:
    doc = REPO / "docs" / "providers.md"
    assert doc.read_text() == render(), (
        "run: python -m imagegate.tools.provider_table > docs/providers.md"
    )
