"""The ``local`` provider's options, parsed and checked once at startup.

They live under the provider entry of the config file (``ProviderConfig.options``)::

    - id: gpu0
      type: local
      device: auto            # auto | cuda | cuda:N | mps | cpu
      dtype: auto             # auto (fp16 on cuda/mps, fp32 on cpu) | float16 | bfloat16 | float32
      steps: 30               # defaults for every model ...
      guidance_scale: 7.5
      strength: 0.75          # image-to-image / inpainting strength
      models:                 # ... overridden per upstream_model
        stabilityai/sdxl-turbo: {steps: 2, guidance_scale: 0.0}
      max_batch_size: 4       # images per pipeline call
      max_wait_ms: 10         # how long the first queued request waits for companions
      max_queue: 64           # images waiting (not yet running); beyond it: 429
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass(frozen=True, slots=True)
class ModelDefaults:
    """Diffusion settings of one model (or of all, under the entry itself)."""

    steps: int = 30
    guidance_scale: float = 7.5
    strength: float = 0.75


@dataclass(frozen=True, slots=True)
class LocalOptions:
    device: str = "auto"
    dtype: str = "auto"
    defaults: ModelDefaults = ModelDefaults()
    models: dict[str, ModelDefaults] = field(default_factory=dict)
    max_batch_size: int = 4
    max_wait_ms: float = 10.0
    max_queue: int = 64

    def for_model(self, upstream_model: str) -> ModelDefaults:
        return self.models.get(upstream_model, self.defaults)


class LocalOptionsError(ValueError):
    """A bad option under a ``local`` provider entry; the message names the key."""


def parse_options(provider_id: str, raw: dict[str, Any]) -> LocalOptions:
    """Validate ``raw``; unknown keys are refused so typos do not pass silently."""
    where = f"provider '{provider_id}'"
    known = {"device", "dtype", "steps", "guidance_scale", "strength", "models"}
    known |= {"max_batch_size", "max_wait_ms", "max_queue"}
    for key in raw:
        if key not in known:
            raise LocalOptionsError(f"{where}: unknown option '{key}' for type 'local'")
    device = str(raw.get("device", "auto"))
    if device.split(":")[0] not in DEVICES:
        raise LocalOptionsError(f"{where}: device must be one of {', '.join(DEVICES)}")
    dtype = str(raw.get("dtype", "auto"))
    if dtype not in DTYPES:
        raise LocalOptionsError(f"{where}: dtype must be one of {', '.join(DTYPES)}")
    defaults = _defaults(where, raw, ModelDefaults(), strict=False)
    models_raw = raw.get("models") or {}
    if not isinstance(models_raw, dict):
        raise LocalOptionsError(f"{where}: models must be a mapping of upstream_model to options")
    models = {
        str(name): _defaults(f"{where}: models.{name}", entry or {}, defaults, strict=True)
        for name, entry in models_raw.items()
    }
    return LocalOptions(
        device=device,
        dtype=dtype,
        defaults=defaults,
        models=models,
        max_batch_size=_int(where, raw, "max_batch_size", 4, minimum=1),
        max_wait_ms=_number(where, raw, "max_wait_ms", 10.0, minimum=0.0),
        max_queue=_int(where, raw, "max_queue", 64, minimum=1),
    )


def _defaults(where: str, raw: Any, base: ModelDefaults, *, strict: bool) -> ModelDefaults:
    """Steps, guidance and strength over ``base``; ``strict`` refuses any other key."""
    if not isinstance(raw, dict):
        raise LocalOptionsError(f"{where}: must be a mapping")
    unknown = [k for k in raw if k not in ("steps", "guidance_scale", "strength")]
    if strict and unknown:
        raise LocalOptionsError(f"{where}: unknown option '{unknown[0]}'")
    strength = _number(where, raw, "strength", base.strength, minimum=0.0)
    if strength > 1:
        raise LocalOptionsError(f"{where}: strength must be between 0 and 1")
    return replace(
        base,
        steps=_int(where, raw, "steps", base.steps, minimum=1),
        guidance_scale=_number(where, raw, "guidance_scale", base.guidance_scale, minimum=0.0),
        strength=strength,
    )


def _int(where: str, raw: dict[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LocalOptionsError(f"{where}: {key} must be an integer >= {minimum}")
    return value


def _number(where: str, raw: dict[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise LocalOptionsError(f"{where}: {key} must be a number >= {minimum:g}")
    return float(value)
