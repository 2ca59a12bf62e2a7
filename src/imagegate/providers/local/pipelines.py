"""Diffusers pipelines: loading, device and dtype choice, and running one batch.

torch and diffusers are imported inside functions only, so importing this module (and
so the gateway) works without them; they load when a ``local`` provider first serves.
A model directory is loaded from disk; a hub id goes through huggingface_hub, which
honours ``HF_HUB_OFFLINE`` (we also pass ``local_files_only`` then, so nothing is fetched).

Text-to-image uses the pipeline as loaded; image-to-image and inpainting are derived with
``AutoPipelineFor*.from_pipe``, which shares the loaded weights instead of loading again.
Every image has its own CPU ``torch.Generator`` seeded with its seed, so an image is the
same whether it ran alone or in a batch, and on any device.

Partial images are real decodes of the intermediate latents through the pipeline's VAE
(``callback_on_step_end``), taken at evenly spaced steps before the last one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from PIL import Image

from imagegate.providers.local.scheduler import BatchOutcome, Job
from imagegate.providers.local.settings import LocalOptions

Mode = Literal["text2img", "img2img", "inpaint"]


class BatchKey(NamedTuple):
    """Requests with equal keys can share one pipeline call."""

    model: str
    mode: Mode
    width: int
    height: int
    steps: int
    guidance_scale: float
    strength: float


@dataclass(slots=True)
class Work:
    """One request's images: its prompt, one seed per image and its input pictures."""

    prompt: str
    seeds: list[int]
    negative_prompt: str | None = None
    image: Image.Image | None = None  # RGB, already at the output size
    mask: Image.Image | None = None  # "L", white = repaint (diffusers' convention)
    partial_steps: tuple[int, ...] = ()  # loop steps after which a preview is sent


class ModelLoadError(RuntimeError):
    """The model directory or hub id could not be loaded."""


class UnsupportedMode(RuntimeError):
    """The loaded pipeline has no image-to-image or inpainting variant."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


class Engine:
    """The pipelines of one provider, keyed by upstream model. Runs in its device thread."""

    def __init__(self, options: LocalOptions) -> None:
        self.device = resolve_device(options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        self._pipes: dict[tuple[str, Mode], Any] = {}
        self._lock = threading.Lock()

    def loaded(self, model: str) -> bool:
        return (model, "text2img") in self._pipes

    def load(self, model: str) -> None:
        """Load ``model`` (a directory or hub id) once; later calls return at once."""
        with self._lock:
            if (model, "text2img") in self._pipes:
                return
            from diffusers import DiffusionPipeline

            directory = Path(model).expanduser()
            is_dir = directory.is_dir()
            try:
                pipe = DiffusionPipeline.from_pretrained(
                    str(directory) if is_dir else model,
                    torch_dtype=self.dtype,
                    local_files_only=is_dir or _offline(),
                )
            except Exception as exc:  # diffusers raises OSError, ValueError, HF errors...
                raise ModelLoadError(f"cannot load diffusers model '{model}': {exc}") from exc
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[(model, "text2img")] = pipe

    def pipeline(self, model: str, mode: Mode) -> Any:
        pipe = self._pipes.get((model, mode))
        if pipe is not None:
            return pipe
        self.load(model)
        base = self._pipes[(model, "text2img")]
        if mode == "text2img":
            return base
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        auto = AutoPipelineForImage2Image if mode == "img2img" else AutoPipelineForInpainting
        try:
            pipe = auto.from_pipe(base)
        except ValueError as exc:
            raise UnsupportedMode(f"'{model}' has no {mode} pipeline: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        self._pipes[(model, mode)] = pipe
        return pipe

    def run(self, jobs: Sequence[Job[Work]]) -> BatchOutcome:
        """One pipeline call for every image of ``jobs`` (all with the same key)."""
        import torch

        key: BatchKey = jobs[0].key  # type: ignore[assignment]
        pipe = self.pipeline(key.model, key.mode)
        works = [job.payload for job in jobs]
        kwargs: dict[str, Any] = {
            "prompt": [w.prompt for w in works for _ in w.seeds],
            "num_inference_steps": key.steps,
            "guidance_scale": key.guidance_scale,
            "generator": [torch.Generator("cpu").manual_seed(s) for w in works for s in w.seeds],
            "num_images_per_prompt": 1,
            "output_type": "pil",
        }
        if any(w.negative_prompt for w in works):
            kwargs["negative_prompt"] = [w.negative_prompt or "" for w in works for _ in w.seeds]
        if key.mode == "text2img":
            kwargs.update(width=key.width, height=key.height)
        else:
            kwargs.update(image=[w.image for w in works for _ in w.seeds], strength=key.strength)
        if key.mode == "inpaint":
            kwargs.update(
                mask_image=[w.mask for w in works for _ in w.seeds],
                width=key.width,
                height=key.height,
            )
        interrupted = False

        def on_step(p: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal interrupted
            if all(job.cancelled for job in jobs):
                p._interrupt = True  # diffusers skips the remaining steps
                interrupted = True
                return tensors
            _send_partials(p, step, tensors["latents"], jobs)
            return tensors

        kwargs["callback_on_step_end"] = on_step
        kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
        with torch.inference_mode():
            images = list(pipe(**kwargs).images)
        outputs: list[list[Any]] = []
        for w in works:
            outputs.append(images[: len(w.seeds)])
            images = images[len(w.seeds) :]
        return BatchOutcome(outputs, interrupted=interrupted)


def _send_partials(pipe: Any, step: int, latents: Any, jobs: Sequence[Job[Work]]) -> None:
    offset = 0
    for job in jobs:
        count = len(job.payload.seeds)
        wanted = job.on_partial is not None and not job.cancelled
        if wanted and step in job.payload.partial_steps:
            previews = decode_latents(pipe, latents[offset : offset + count])
            partial_index = job.payload.partial_steps.index(step)
            for i, preview in enumerate(previews):
                job.on_partial(i, partial_index, preview)  # type: ignore[misc]
        offset += count


def decode_latents(pipe: Any, latents: Any) -> list[Image.Image]:
    """Intermediate latents to RGB through the pipeline's own VAE."""
    vae = pipe.vae
    scaled = latents.to(vae.dtype) / vae.config.scaling_factor
    decoded = vae.decode(scaled, return_dict=False)[0]
    return list(pipe.image_processor.postprocess(decoded, output_type="pil"))


def partial_steps(loop_steps: int, partials: int) -> tuple[int, ...]:
    """Evenly spaced loop steps (never the last) after which previews are decoded."""
    if partials <= 0 or loop_steps <= 1:
        return ()
    chosen = {round((p + 1) * loop_steps / (partials + 1)) - 1 for p in range(partials)}
    return tuple(sorted(s for s in chosen if 0 <= s < loop_steps - 1))
