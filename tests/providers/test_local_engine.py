"""The ``local`` provider end to end: a tiny Stable Diffusion pipeline built offline, saved
to disk and served by a real gateway process (CPU, 64x64, a few steps).

Batching, queueing and cancellation are observed from outside through ``/healthz``
(each local provider reports its queue and batch sizes there), never by timing.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from gateway import RunningGateway, run_gateway
from request_support import image_request
from tiny_diffusion import build_tiny_pipeline

pytest.importorskip("diffusers")

SIZE = 64
COMMON = "device: cpu, steps: 3, guidance_scale: 2.0"
CONFIG = """
providers:
  - {{id: solo, type: local, {common}, max_batch_size: 1, max_wait_ms: 0}}
  # These three wait (practically) forever for companions: a batch runs only once full.
  - {{id: batch, type: local, {common}, max_batch_size: 4, max_wait_ms: 600000}}
  - {{id: queue, type: local, {common}, max_batch_size: 4, max_wait_ms: 600000, max_queue: 4}}
  - {{id: cancel, type: local, {common}, max_batch_size: 4, max_wait_ms: 600000}}
models:
{models}
"""
MODEL = """  - id: local/{pid}
    operations: [generate, edit, variation]
    free_size: {{min_side: 64, max_side: 256, multiple_of: 8}}
    default_size: 64x64
    endpoints:
      - {{provider: {pid}, upstream_model: "{path}", pricing: {{free: true}}}}
"""


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)  # for the in-process unit test, as OMP_NUM_THREADS for the gateway
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "model")


@pytest.fixture(scope="module")
def gw(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    models = "".join(
        MODEL.format(pid=pid, path=tiny_model) for pid in ("solo", "batch", "queue", "cancel")
    )
    config = CONFIG.format(common=COMMON, models=models)
    # One torch thread: on a small shared CPU more threads only contend (10x slower here).
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with run_gateway(tmp_path_factory.mktemp("local-gw"), config, env) as running:
        yield running


def post(gw: RunningGateway, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.admin_key}"}
    return httpx.post(f"{gw.v1}{path}", headers=headers, timeout=120, **kwargs)


def generate(gw: RunningGateway, model: str, **body: Any) -> list[Image.Image]:
    response = post(gw, "/images/generations", json={"model": model, "size": "64x64", **body})
    assert response.status_code == 200, response.text
    return [_image(item["b64_json"]) for item in response.json()["data"]]


def _image(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def queue_of(gw: RunningGateway, pid: str) -> dict[str, Any]:
    health = httpx.get(f"{gw.url}/healthz", timeout=10).json()
    return health["providers"][pid].get("queue") or {}


def wait_until(
    check: Callable[[], bool], what: str, gw: RunningGateway | None = None, limit_s: float = 60
) -> None:
    """Poll ``check`` (a deadline guards against hangs; nothing here asserts a duration)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    log = gw.log()[-4000:] if gw is not None else ""
    raise AssertionError(f"timed out waiting for: {what}\n{log}")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def gradient(width: int = SIZE, height: int = SIZE) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(255, 0, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], axis=-1), "RGB")


# -- generation ------------------------------------------------------------------------


def test_text_to_image_and_seeds(gw: RunningGateway) -> None:
    first = generate(gw, "local/solo", prompt="a red fox", seed=7, n=2)
    again = generate(gw, "local/solo", prompt="a red fox", seed=7, n=2)
    alone = generate(gw, "local/solo", prompt="a red fox", seed=7)
    other = generate(gw, "local/solo", prompt="a red fox", seed=8)
    assert [img.size for img in first] == [(SIZE, SIZE), (SIZE, SIZE)]
    assert first[0].format == "PNG"
    # Same request and seed, same images, to the pixel.
    assert [pixels(img).tolist() for img in first] == [pixels(img).tolist() for img in again]
    # Image 1 of n uses seed + 1. Across batch sizes CPU kernels may round differently
    # (another batch shape, another blocking of the same sums), so "the same" is to a pixel.
    assert np.abs(pixels(first[0]) - pixels(alone[0])).mean() < 2
    assert np.abs(pixels(first[1]) - pixels(other[0])).mean() < 2
    assert np.abs(pixels(first[0]) - pixels(first[1])).mean() > 5
    # A real image, not a flat fill.
    assert pixels(first[0]).std() > 5


def test_output_format_and_bad_size(gw: RunningGateway) -> None:
    body = {"model": "local/solo", "prompt": "x", "size": "64x64", "output_format": "jpeg"}
    response = post(gw, "/images/generations", json=body)
    assert response.status_code == 200, response.text
    assert _image(response.json()["data"][0]["b64_json"]).format == "JPEG"
    bad = post(gw, "/images/generations", json={**body, "num_inference_steps": 0})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "num_inference_steps"


def test_variation_is_image_to_image(gw: RunningGateway) -> None:
    source = gradient(72, 72)
    files = {"image": ("in.png", png(source), "image/png")}
    outs = []
    for seed in ("1", "1", "2"):
        data = {"model": "local/solo", "seed": seed}
        response = post(gw, "/images/variations", data=data, files=files)
        assert response.status_code == 200, response.text
        outs.append(_image(response.json()["data"][0]["b64_json"]))
    assert outs[0].size == (72, 72)  # size auto follows the input
    assert np.array_equal(pixels(outs[0]), pixels(outs[1]))
    assert not np.array_equal(pixels(outs[0]), pixels(outs[2]))
    assert np.abs(pixels(outs[0]) - pixels(source)).mean() > 5


def test_inpainting_changes_only_the_masked_area(gw: RunningGateway) -> None:
    source = gradient()
    mask = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, SIZE // 2, SIZE))  # left half transparent: edit there
    files = {
        "image": ("in.png", png(source), "image/png"),
        "mask": ("mask.png", png(mask), "image/png"),
    }
    data = {"model": "local/solo", "prompt": "a hat", "seed": "3", "size": "64x64"}
    response = post(gw, "/images/edits", data=data, files=files)
    assert response.status_code == 200, response.text
    out = pixels(_image(response.json()["data"][0]["b64_json"]))
    original = pixels(source)
    half = SIZE // 2
    assert np.array_equal(out[:, half:], original[:, half:])  # kept exactly
    assert np.abs(out[:, :half] - original[:, :half]).mean() > 10  # repainted


# -- batching and the queue -------------------------------------------------------------


def test_concurrent_requests_form_one_batch_matching_unbatched_results(
    gw: RunningGateway,
) -> None:
    jobs = [("a red fox", 10), ("a blue bird", 20)]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(generate, gw, "local/batch", prompt=p, seed=s, n=2) for p, s in jobs]
        batched = [f.result() for f in futures]
    stats = queue_of(gw, "batch")
    assert stats["batch_sizes"] == {"4": 1}  # both requests ran as one call of 4 images
    for (prompt, seed), images in zip(jobs, batched, strict=True):
        for i, image in enumerate(images):
            alone = generate(gw, "local/solo", prompt=prompt, seed=seed + i)[0]
            assert np.abs(pixels(image) - pixels(alone)).mean() < 2.0


def test_full_queue_is_429_with_retry_after(gw: RunningGateway) -> None:
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(generate, gw, "local/queue", prompt="one", seed=1, n=2)
        wait_until(lambda: queue_of(gw, "queue").get("queued_images") == 2, "2 images queued")
        body = {"model": "local/queue", "prompt": "too many", "size": "64x64", "n": 3}
        refused = post(gw, "/images/generations", json=body)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "queue_full"
        assert "queued" in error["message"]
        # Two more images fill the batch: both waiting requests complete together.
        second = pool.submit(generate, gw, "local/queue", prompt="two", seed=2, n=2)
        assert len(first.result()) == 2 and len(second.result()) == 2
    stats = queue_of(gw, "queue")
    assert stats["batch_sizes"] == {"4": 1} and stats["rejected"] == 1


# -- cancellation -------------------------------------------------------------------------


def _open_request(gw: RunningGateway, body: dict[str, Any]) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]), timeout=60)
    headers = {"Authorization": f"Bearer {gw.admin_key}", "Content-Type": "application/json"}
    conn.request("POST", "/v1/images/generations", json.dumps(body).encode(), headers)
    return conn


def test_disconnect_drops_a_queued_request(gw: RunningGateway) -> None:
    conn = _open_request(gw, {"model": "local/cancel", "prompt": "bye", "size": "64x64"})
    wait_until(lambda: queue_of(gw, "cancel").get("queued_images") == 1, "request queued")
    conn.close()
    wait_until(lambda: queue_of(gw, "cancel").get("queued_images") == 0, "request dropped")
    stats = queue_of(gw, "cancel")
    assert stats["cancelled"] == {"queued": 1}
    assert stats["batches"] == 0
    # The provider still serves: a full batch runs alone, without the dropped request.
    assert len(generate(gw, "local/cancel", prompt="hi", seed=1, n=4)) == 4
    assert queue_of(gw, "cancel")["batch_sizes"] == {"4": 1}


def test_disconnect_interrupts_a_running_batch_when_alone(gw: RunningGateway) -> None:
    # 500 steps at 128x128: far longer than it takes to notice the disconnect.
    body = {"model": "local/solo", "prompt": "slow", "size": "128x128", "num_inference_steps": 500}
    conn = _open_request(gw, body)
    wait_until(lambda: queue_of(gw, "solo").get("running_images") == 1, "batch running", gw)
    conn.close()
    wait_until(lambda: queue_of(gw, "solo").get("interrupted_batches") == 1, "interrupted", gw)
    assert queue_of(gw, "solo")["cancelled"].get("running") == 1
    assert '"interrupted":true' in gw.log()  # the batch log line
    # The engine is free again.
    assert len(generate(gw, "local/solo", prompt="after", seed=1)) == 1


# -- stream() at unit level ---------------------------------------------------------------


async def test_stream_yields_partial_images_then_the_result(tiny_model: Path) -> None:
    from imagegate.core.provider_config import ProviderConfig
    from imagegate.core.types import ImageResult, PartialImage
    from imagegate.providers.base import ProviderContext
    from imagegate.providers.local import LocalProvider

    async def no_fetch(url: str) -> bytes:
        raise AssertionError(url)

    options = {"device": "cpu", "steps": 4, "guidance_scale": 2.0, "max_wait_ms": 0}
    async with httpx.AsyncClient() as client:
        provider = LocalProvider(
            ProviderConfig(id="unit", type="local", options=options),
            ProviderContext(http=client, fetch_url=no_fetch),
        )
        request = image_request(
            operation="generate",
            model="local/unit",
            prompt="a fox",
            n=2,
            size="64x64",
            width=64,
            height=64,
            seed=5,
            stream=True,
            partial_images=2,
        )
        events = [event async for event in provider.stream(request, str(tiny_model))]
        await provider.aclose()
    partials = [e for e in events if isinstance(e, PartialImage)]
    assert isinstance(events[-1], ImageResult)
    assert all(isinstance(e, PartialImage) for e in events[:-1])
    assert sorted((p.index, p.partial_index) for p in partials) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    final = events[-1].images
    assert len(final) == 2
    for index, image in enumerate(final):
        finished = pixels(_image(base64.b64encode(image.data).decode()))
        previews = sorted((p for p in partials if p.index == index), key=lambda p: p.partial_index)
        gaps = []
        for p in previews:
            preview = _image(base64.b64encode(p.image.data).decode())
            assert preview.size == (64, 64) and preview.format == "PNG"
            gaps.append(np.abs(pixels(preview) - finished).mean())
        # Previews are earlier states of the same image: the first differs, later ones converge.
        assert gaps[0] > 1 and gaps[-1] < gaps[0]


def test_streams_read_with_the_openai_sdk(gw: RunningGateway) -> None:
    """Generations and edits stream real partial images (decoded intermediate latents)
    through the gateway, read with the official SDK's stream iterator."""
    from openai import OpenAI
    from openai.types import ImageGenPartialImageEvent

    client = OpenAI(base_url=gw.v1, api_key=gw.admin_key, max_retries=0)
    events = list(
        client.images.generate(
            model="local/solo",
            prompt="a red square",
            size="64x64",
            stream=True,
            partial_images=2,
            extra_body={"seed": 3},
        )
    )
    kinds = [e.type for e in events]
    assert kinds == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    partials = [e for e in events[:2] if isinstance(e, ImageGenPartialImageEvent)]
    assert [e.partial_image_index for e in partials] == [0, 1]
    final = _image(events[-1].b64_json)
    assert final.size == (SIZE, SIZE)
    # The last event is the finished image: the same as the unstreamed one for the seed.
    (unstreamed,) = generate(gw, "local/solo", prompt="a red square", seed=3)
    assert np.abs(pixels(final) - pixels(unstreamed)).mean() < 2

    mask = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent: repaint here
    edit_events = list(
        client.images.edit(
            model="local/solo",
            prompt="a blue circle",
            image=("in.png", png(gradient())),
            mask=("mask.png", png(mask)),
            size="64x64",
            stream=True,
            partial_images=1,
        )
    )
    assert [e.type for e in edit_events] == ["image_edit.partial_image", "image_edit.completed"]
    edited = pixels(_image(edit_events[-1].b64_json))
    original = pixels(gradient())
    outside = np.ones((SIZE, SIZE), dtype=bool)
    outside[16:48, 16:48] = False
    assert np.array_equal(edited[outside], original[outside])
