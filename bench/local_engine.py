"""Images/s of the ``local`` engine: one request at a time vs dynamic batching.

Usage:
    .venv/bin/python bench/local_engine.py                     # tiny random SD pipeline, CPU
    .venv/bin/python bench/local_engine.py --model DIR --device cuda --size 512 --steps 20

For each batch size B it serves ``--images`` single-image requests through the provider
(scheduler, worker thread, pipeline, PNG encoding: everything but HTTP) twice:
sequentially (each awaited before the next is sent, so every call holds one image) and
all at once with ``max_batch_size=B`` (the scheduler groups them into calls of B images).
Prints a markdown table. Without ``--model`` it builds the tests' tiny pipeline offline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

from imagegate.core.provider_config import ProviderConfig
from imagegate.core.types import ImageRequest
from imagegate.providers.base import ProviderContext
from imagegate.providers.local import LocalProvider


async def _no_fetch(url: str) -> bytes:
    raise RuntimeError(f"the bench fetches nothing ({url})")


def _request(size: int, seed: int) -> ImageRequest:
    return ImageRequest(
        operation="generate",
        model="bench/local",
        prompt="a lighthouse at dusk",
        size=f"{size}x{size}",
        width=size,
        height=size,
        seed=seed,
    )


async def _rate(args: argparse.Namespace, model: str, batch: int, concurrent: bool) -> float:
    options = {
        "device": args.device,
        "steps": args.steps,
        "guidance_scale": 5.0,
        "max_batch_size": batch,
        "max_wait_ms": 50,
        "max_queue": 10_000,
    }
    async with httpx.AsyncClient() as client:
        provider = LocalProvider(
            ProviderConfig(id=f"bench-{batch}", type="local", options=options),
            ProviderContext(http=client, fetch_url=_no_fetch),
        )
        await provider.generate(_request(args.size, 0), model)  # load and warm up
        started = time.perf_counter()
        if concurrent:
            calls = [provider.generate(_request(args.size, s), model) for s in range(args.images)]
            await asyncio.gather(*calls)
        else:
            for seed in range(args.images):
                await provider.generate(_request(args.size, seed), model)
        elapsed = time.perf_counter() - started
        await provider.aclose()
    return args.images / elapsed


async def _main(args: argparse.Namespace) -> None:
    model = args.model
    if model is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_diffusion import build_tiny_pipeline

        model = str(build_tiny_pipeline(Path(tempfile.mkdtemp()) / "tiny-sd"))
    print(
        f"model: {args.model or 'tiny random SD (tests/tiny_diffusion.py)'}, device: "
        f"{args.device}, {args.size}x{args.size}, {args.steps} steps, {args.images} images\n"
    )
    print("| batch size | sequential images/s | batched images/s | speedup |")
    print("|---:|---:|---:|---:|")
    sequential = await _rate(args, model, 1, concurrent=False)
    for batch in args.batches:
        batched = await _rate(args, model, batch, concurrent=True)
        print(f"| {batch} | {sequential:.2f} | {batched:.2f} | {batched / sequential:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="diffusers model directory or hub id")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
