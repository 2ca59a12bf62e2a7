"""What a request costs: the catalog's ``pricing:`` forms, holds and settlement.

Money is computed in ``Decimal`` USD and turned into integer micro-USD exactly once per
request: a hold (``max_cost_micro``) rounds up, a settlement (``cost_micro``) rounds half
up. Both start from the same exact figures, so for the same parameters the settlement can
never exceed the hold (per-token settlement excepted when the upstream reports more tokens
than were estimated; per-image and per-megapixel settlement is capped at the hold).

Forms (one per endpoint; see docs/pricing.md)::

    per_image: 0.04                                   # flat
    per_image: {"1024x1024": {low: 0.011, high: 0.167}, "*": 0.05}   # size x quality
    per_megapixel: 0.025                              # + megapixel, megapixel_rounding
    per_million_tokens: {text_input: 5, image_input: 10, image_output: 40}
    output_tokens: {"1024x1024": {low: 272, high: 4160}}            # for the hold
    free: true

Parameters that change what the provider bills (any form but tokens)::

    default_steps: 4        # a caller's `steps` scales the image price by steps / 4
    per_input_image: 0.002  # each input image of an edit is billed too
    unpriced: [steps, image] # this price does not cover these: requests carrying them
                             # skip the endpoint (refused when no endpoint is left)
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

from imagegate.core.errors import InvalidRequest
from imagegate.core.size import Size
from imagegate.core.types import ImageRequest, ImageResult

MICRO = Decimal("0.000001")
MILLION = Decimal(1_000_000)
PARTIAL_IMAGE_TOKENS = 100  # OpenAI bills each streamed partial image as 100 output tokens
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A size within 10% above a listed size is priced as that size: providers' nominal tiers
# (e.g. Gemini's "1K") vary by a few percent in pixel count with the aspect ratio.
_TIER_SLACK = Decimal("1.1")
_KEYS = {
    "free",
    "source",
    "as_of",
    "per_image",
    "default_quality",
    "per_megapixel",
    "megapixel",
    "megapixel_rounding",
    "per_million_tokens",
    "output_tokens",
    "input_image_tokens",
    "default_steps",
    "per_input_image",
    "unpriced",
}
UNPRICEABLE = ("steps", "image")  # what ``unpriced`` may name
_TOKEN_RATES = ("text_input", "image_input", "image_output")

Err = Callable[[str, str], Exception]


@dataclass(frozen=True, slots=True)
class SizeTable:
    """Values by output size, then by quality; ``*`` matches any size or quality."""

    rows: tuple[tuple[str, tuple[tuple[str, Decimal], ...]], ...]

    def lookup(self, width: int, height: int, quality: str | None, any_size: bool) -> Decimal:
        """The value for this size and quality; the highest where either is open."""
        rows = [r for _, r in self.rows] if any_size else [self._row(width, height)]
        return max(_pick(row, quality) for row in rows)

    def _row(self, width: int, height: int) -> tuple[tuple[str, Decimal], ...]:
        by_key = dict(self.rows)
        exact = by_key.get(str(Size(width, height)))
        if exact is not None:
            return exact
        if "*" in by_key:
            return by_key["*"]
        sized = sorted((_pixels(k), row) for k, row in self.rows)
        wanted = Decimal(width * height)
        for pixels, row in sized:
            if pixels * _TIER_SLACK >= wanted:
                return row
        return sized[-1][1]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for size, row in self.rows:
            values = {q: float(v) for q, v in row}
            out[size] = values["*"] if list(values) == ["*"] else values
        return out


def _pick(row: tuple[tuple[str, Decimal], ...], quality: str | None) -> Decimal:
    values = dict(row)
    if quality is not None and quality in values:
        return values[quality]
    if "*" in values:
        return values["*"]
    return max(values.values())


def _pixels(size: str) -> Decimal:
    parsed = Size.parse(size)
    assert parsed is not None  # validated at parse time
    return Decimal(parsed.pixels)


@dataclass(frozen=True, slots=True)
class TokenRates:
    """USD per million tokens, and the token counts used to estimate a hold."""

    text_input: Decimal
    image_input: Decimal
    image_output: Decimal
    output_tokens: SizeTable
    input_image_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Pricing:
    """One endpoint's price, parsed from its ``pricing:`` mapping."""

    free: bool = False
    source: str | None = None
    as_of: str | None = None
    per_image: SizeTable | None = None
    default_quality: str | None = None
    per_megapixel: Decimal | None = None
    megapixel: int = 1_048_576
    round_megapixels: bool = True
    tokens: TokenRates | None = None
    default_steps: int | None = None
    per_input_image: Decimal | None = None
    unpriced: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        """Free, or some price present: only then may the endpoint be routed to."""
        return self.free or any(
            p is not None for p in (self.per_image, self.per_megapixel, self.tokens)
        )

    @property
    def form(self) -> str | None:
        if self.free:
            return "free"
        if self.tokens is not None:
            return "per_token"
        if self.per_megapixel is not None:
            return "per_megapixel"
        return "per_image" if self.per_image is not None else None

    def unpriced_fields(self, req: ImageRequest) -> list[str]:
        """The request's parameters this price cannot account for (``unpriced``)."""
        carried = {"steps": "steps" in req.extra, "image": bool(req.images)}
        return [name for name in self.unpriced if carried.get(name)]

    def unit_price_usd(self, req: ImageRequest) -> float | None:
        """Worst-case price of ONE image for these parameters (router: max_price, sort)."""
        if not self.configured:
            return None
        if self.free:
            return 0.0
        return float(self._image_worst(req) + self._input_estimate(req) + self._inputs(req))

    def max_cost_micro(self, req: ImageRequest) -> int:
        """Worst-case cost of the whole request in micro-USD (the credit hold), rounded up."""
        if self.free or not self.configured:
            return 0
        total = self._image_worst(req) * max(req.n, 1) + self._input_estimate(req)
        return _micro(total + self._inputs(req), ROUND_CEILING)

    def cost_micro(self, req: ImageRequest, result: ImageResult) -> int:
        """What was produced, in micro-USD, rounded half up once for the whole request."""
        if self.free or not self.configured or not result.images:
            return 0
        quality = result.quality or self._quality(req)
        tokens = self.tokens
        if tokens is not None and result.usage is not None:
            return _micro(self._usage_cost(tokens, req, result), ROUND_HALF_UP)
        total = sum(
            (self._image_cost(req, img.width, img.height, quality) for img in result.images),
            Decimal(0),
        )
        if tokens is not None:
            total += self._input_estimate(req)
        total += self._inputs(req)
        return min(_micro(total, ROUND_HALF_UP), self.max_cost_micro(req))

    def to_json(self) -> dict[str, Any]:
        """The compact form shown by ``GET /v1/models``."""
        out: dict[str, Any] = {"form": self.form}
        if self.per_image is not None:
            out["per_image"] = self.per_image.to_json()
        if self.per_megapixel is not None:
            out["per_megapixel"] = float(self.per_megapixel)
            out["megapixel"] = self.megapixel
            out["megapixel_rounding"] = "up" if self.round_megapixels else "none"
        if self.tokens is not None:
            t = self.tokens
            out["per_million_tokens"] = {r: float(getattr(t, r)) for r in _TOKEN_RATES}
            out["output_tokens"] = t.output_tokens.to_json()
        if self.default_steps is not None:
            out["default_steps"] = self.default_steps
        if self.per_input_image is not None:
            out["per_input_image"] = float(self.per_input_image)
        if self.unpriced:
            out["unpriced"] = list(self.unpriced)
        if self.source:
            out["source"] = self.source
        if self.as_of:
            out["as_of"] = self.as_of
        return out

    # -- internals ---------------------------------------------------------------------

    def _quality(self, req: ImageRequest) -> str | None:
        quality = req.quality
        if quality is None:
            return self.default_quality
        return None if quality == "auto" else quality

    def _image_worst(self, req: ImageRequest) -> Decimal:
        """One output image at the highest price these parameters can cost."""
        width, height = req.width, req.height
        if req.operation != "generate" and self.per_megapixel is not None:
            # outputs may follow the input image's size (image-to-image, inpainting)
            for image in [*req.images, *([req.mask] if req.mask else [])]:
                if image.width * image.height > width * height:
                    width, height = image.width, image.height
        any_size = req.size == "auto"
        return self._image_cost(req, width, height, self._quality(req), any_size=any_size)

    def _image_cost(
        self,
        req: ImageRequest,
        width: int,
        height: int,
        quality: str | None,
        any_size: bool = False,
    ) -> Decimal:
        if width <= 0 or height <= 0:
            width, height = req.width, req.height
        if self.tokens is not None:
            tokens = self.tokens.output_tokens.lookup(width, height, quality, any_size)
            tokens += PARTIAL_IMAGE_TOKENS * (req.partial_images or 0)
            return tokens * self.tokens.image_output / MILLION
        if self.per_megapixel is not None:
            mp = Decimal(width * height) / self.megapixel
            if self.round_megapixels:
                mp = Decimal(math.ceil(mp))
            return mp * self.per_megapixel * self._steps_factor(req)
        assert self.per_image is not None
        return self.per_image.lookup(width, height, quality, any_size) * self._steps_factor(req)

    def _steps_factor(self, req: ImageRequest) -> Decimal:
        """steps / default_steps when the caller sets ``steps`` and the price scales with
        it (Together bills FLUX per megapixel x steps / default steps)."""
        steps = req.extra.get("steps")
        if self.default_steps is None or steps is None:
            return Decimal(1)
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
            raise InvalidRequest(
                "'steps' must be an integer from 1 to 1000.", param="steps", code="invalid_value"
            )
        return Decimal(steps) / self.default_steps

    def _inputs(self, req: ImageRequest) -> Decimal:
        """What the provider bills for the input images themselves (``per_input_image``)."""
        if self.per_input_image is None:
            return Decimal(0)
        return self.per_input_image * len(req.images)

    def _input_estimate(self, req: ImageRequest) -> Decimal:
        """Upper bound of a per-token request's input: one token per prompt byte at most."""
        tokens = self.tokens
        if tokens is None:
            return Decimal(0)
        text = len((req.prompt or "").encode())
        images = len(req.images) + (1 if req.mask is not None else 0)
        return (
            text * tokens.text_input + images * tokens.input_image_tokens * tokens.image_input
        ) / MILLION

    def _usage_cost(self, tokens: TokenRates, req: ImageRequest, result: ImageResult) -> Decimal:
        usage = result.usage
        assert usage is not None
        details = usage.input_tokens_details or {}
        text = int(details.get("text_tokens", 0))
        image = int(details.get("image_tokens", 0))
        rest = max(usage.input_tokens - text - image, 0)
        if req.images or req.mask is not None:
            image += rest  # unclassified input of an edit: charge at the image rate
        else:
            text += rest
        return (
            text * tokens.text_input
            + image * tokens.image_input
            + usage.output_tokens * tokens.image_output
        ) / MILLION


def _micro(usd: Decimal, rounding: str) -> int:
    return int((usd / MICRO).quantize(Decimal(1), rounding=rounding))


# -- parsing ---------------------------------------------------------------------------


def parse_pricing(raw: Any, err: Err, where: str) -> Pricing:
    """Validate an endpoint's ``pricing:`` mapping; errors name the field."""
    if raw is None:
        return Pricing()
    if not isinstance(raw, dict):
        raise err(where, "must be a mapping")
    for key in raw:
        if key not in _KEYS:
            raise err(
                f"{where}.{key}", f"unknown pricing field (known: {', '.join(sorted(_KEYS))})"
            )
    free = raw.get("free", False)
    if not isinstance(free, bool):
        raise err(f"{where}.free", "must be true or false")
    forms = [k for k in ("per_image", "per_megapixel", "per_million_tokens") if k in raw]
    if len(forms) > 1 or (forms and free):
        raise err(where, f"give one price form, not {' and '.join(forms + ['free'] * free)}")
    pricing = Pricing(
        free=free,
        source=_source(raw.get("source"), err, f"{where}.source"),
        as_of=_as_of(raw.get("as_of"), err, f"{where}.as_of"),
        default_quality=_opt_str(raw.get("default_quality"), err, f"{where}.default_quality"),
        **_billed_parameters(raw, err, where),
    )
    if "per_image" in raw:
        table = _table(raw["per_image"], err, f"{where}.per_image", _price)
        return _replace(pricing, per_image=table)
    if "per_megapixel" in raw:
        rounding = raw.get("megapixel_rounding", "up")
        if rounding not in ("up", "none"):
            raise err(f"{where}.megapixel_rounding", "must be 'up' or 'none'")
        megapixel = raw.get("megapixel", 1_048_576)
        if not isinstance(megapixel, int) or isinstance(megapixel, bool) or megapixel <= 0:
            raise err(f"{where}.megapixel", "must be a positive integer (pixels in one MP)")
        return _replace(
            pricing,
            per_megapixel=_price(raw["per_megapixel"], err, f"{where}.per_megapixel"),
            megapixel=megapixel,
            round_megapixels=rounding == "up",
        )
    if "per_million_tokens" in raw:
        return _replace(pricing, tokens=_tokens(raw, err, where))
    for key in ("output_tokens", "input_image_tokens", "megapixel", "megapixel_rounding"):
        if key in raw:
            raise err(f"{where}.{key}", "only applies with a price form that uses it")
    return pricing


def _billed_parameters(raw: dict[str, Any], err: Err, where: str) -> dict[str, Any]:
    """``default_steps``, ``per_input_image`` and ``unpriced`` (see the module docstring)."""
    out: dict[str, Any] = {}
    steps = raw.get("default_steps")
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise err(f"{where}.default_steps", "must be a positive integer")
        out["default_steps"] = steps
    if raw.get("per_input_image") is not None:
        out["per_input_image"] = _price(raw["per_input_image"], err, f"{where}.per_input_image")
    unpriced = raw.get("unpriced") or []
    if not isinstance(unpriced, list) or any(u not in UNPRICEABLE for u in unpriced):
        raise err(f"{where}.unpriced", f"must be a list of: {', '.join(UNPRICEABLE)}")
    out["unpriced"] = tuple(unpriced)
    return out


def _replace(pricing: Pricing, **changes: Any) -> Pricing:
    fields = {name: getattr(pricing, name) for name in Pricing.__dataclass_fields__}
    return Pricing(**{**fields, **changes})


def _tokens(raw: dict[str, Any], err: Err, where: str) -> TokenRates:
    rates = raw["per_million_tokens"]
    if not isinstance(rates, dict):
        raise err(f"{where}.per_million_tokens", f"must be a mapping of {', '.join(_TOKEN_RATES)}")
    for key in rates:
        if key not in _TOKEN_RATES:
            raise err(f"{where}.per_million_tokens.{key}", "unknown rate")
    parsed = {}
    for key in _TOKEN_RATES:
        if key not in rates:
            raise err(f"{where}.per_million_tokens.{key}", "is required")
        parsed[key] = _price(rates[key], err, f"{where}.per_million_tokens.{key}")
    if "output_tokens" not in raw:
        raise err(f"{where}.output_tokens", "is required with per_million_tokens (for the hold)")
    table = _table(raw["output_tokens"], err, f"{where}.output_tokens", _count)
    images = raw.get("input_image_tokens", 0)
    return TokenRates(
        output_tokens=table,
        input_image_tokens=int(_count(images, err, f"{where}.input_image_tokens")),
        **parsed,
    )


def _table(value: Any, err: Err, where: str, number: Callable[..., Decimal]) -> SizeTable:
    if not isinstance(value, dict):
        return SizeTable(rows=(("*", (("*", number(value, err, where)),)),))
    if not value:
        raise err(where, "must not be empty")
    rows = []
    for size, cell in value.items():
        here = f"{where}.{size}"
        if not isinstance(size, str) or (size != "*" and Size.parse(size) is None):
            raise err(here, "size keys are 'WIDTHxHEIGHT' or '*'")
        if isinstance(cell, dict):
            if not cell:
                raise err(here, "must not be empty")
            qualities = tuple(
                (str(q), number(v, err, f"{here}.{q}")) for q, v in _items(cell, err, here)
            )
        else:
            qualities = (("*", number(cell, err, here)),)
        rows.append((size, qualities))
    return SizeTable(rows=tuple(rows))


def _items(cell: dict[Any, Any], err: Err, where: str) -> Iterable[tuple[str, Any]]:
    for quality, value in cell.items():
        if not isinstance(quality, str):
            raise err(f"{where}.{quality}", "quality keys must be strings")
        yield quality, value


def _price(value: Any, err: Err, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise err(where, "must be a number >= 0 (USD)")
    if isinstance(value, float) and not math.isfinite(value):
        raise err(where, "must be a finite number")
    return Decimal(str(value))


def _count(value: Any, err: Err, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise err(where, "must be an integer >= 0 (tokens)")
    return Decimal(value)


def _source(value: Any, err: Err, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise err(where, "must be a non-empty string (where the price comes from)")
    return value


def _as_of(value: Any, err: Err, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime.date):
        return value.isoformat()
    if not isinstance(value, str) or not _DATE.match(value):
        raise err(where, "must be a date YYYY-MM-DD")
    try:
        datetime.date.fromisoformat(value)
    except ValueError as exc:
        raise err(where, "must be a date YYYY-MM-DD") from exc
    return value


def _opt_str(value: Any, err: Err, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise err(where, "must be a string")
    return value
