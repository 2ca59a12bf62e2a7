"""Model lifecycle: deprecation and shutdown dates announced by the providers.

A model entry (built-in or configured) may carry ``deprecated_on``, ``shutdown_on`` and
``replacement``; an endpoint may carry its own ``shutdown_on`` (one provider retiring a
model others still serve). The gateway refuses a model past its shutdown date before any
upstream call, so a retired model never reaches a provider, never trips a breaker, and the
caller learns the date and the replacement instead of a 502. Before shutdown a deprecated
model works and its responses carry ``Deprecation`` (RFC 9745) and ``Sunset`` (RFC 8594).

Refusal status: 404 ``model_not_found``, the status and code OpenAI itself answers for a
shut-down model (so OpenAI SDKs raise the same ``NotFoundError`` they would against
OpenAI), with a message naming the shutdown date and the replacement.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
from email.utils import formatdate
from typing import Any

from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import NotFound

# How close a shutdown counts as "near" for ``imagegate models --check-lifecycle``.
NEAR_DAYS = 30


def today() -> dt.date:
    """The current UTC date (lifecycle dates are calendar days, as providers announce them)."""
    return dt.datetime.now(dt.UTC).date()


def is_retired(spec: ModelSpec, on: dt.date | None = None) -> bool:
    return spec.shutdown_on is not None and (on or today()) >= spec.shutdown_on


def refuse_if_retired(spec: ModelSpec, on: dt.date | None = None) -> None:
    """Raise the 404 that names the shutdown date and the replacement, if ``spec`` is
    past its shutdown date."""
    if not is_retired(spec, on):
        return
    assert spec.shutdown_on is not None
    message = (
        f"The model '{spec.id}' was shut down on {spec.shutdown_on.isoformat()} and is no "
        "longer served."
    )
    if spec.replacement:
        message += f" Use '{spec.replacement}' instead."
    raise NotFound(message, param="model", code="model_not_found")


def live_endpoints(spec: ModelSpec, on: dt.date | None = None) -> ModelSpec:
    """``spec`` without the endpoints whose own ``shutdown_on`` has passed (one provider
    retired the model); the same object when none has."""
    day = on or today()
    live = tuple(e for e in spec.endpoints if e.shutdown_on is None or day < e.shutdown_on)
    if len(live) == len(spec.endpoints):
        return spec
    return dataclasses.replace(spec, endpoints=live)


def headers(spec: ModelSpec, on: dt.date | None = None) -> dict[str, str]:
    """``Deprecation`` / ``Sunset`` response headers for a deprecated, still-live model."""
    day = on or today()
    if is_retired(spec, day):
        return {}
    out: dict[str, str] = {}
    if spec.deprecated_on is not None:
        out["Deprecation"] = f"@{_epoch(spec.deprecated_on)}"
    if spec.shutdown_on is not None:
        out["Sunset"] = formatdate(_epoch(spec.shutdown_on), usegmt=True)
    if spec.replacement and out:
        out["x-imagegate-model-replacement"] = spec.replacement
    return out


def model_fields(spec: ModelSpec) -> dict[str, Any]:
    """Lifecycle fields of a model object (``GET /v1/models``): ``shutdown_date`` as
    OpenAI's models endpoint gives it (``YYYY-MM-DD`` or null), plus ours."""
    return {
        "shutdown_date": _iso(spec.shutdown_on),
        "deprecated_on": _iso(spec.deprecated_on),
        "replacement": spec.replacement,
    }


def check(models: list[ModelSpec], on: dt.date | None = None) -> list[tuple[str, ModelSpec]]:
    """Models past shutdown (``retired``), shutting down within ``NEAR_DAYS``
    (``shutdown-soon``) or announced as deprecated (``deprecated``), soonest first."""
    day = on or today()
    found: list[tuple[str, ModelSpec]] = []
    for model in models:
        for endpoint in model.endpoints:  # one provider retiring a model others still serve
            if endpoint.shutdown_on is not None and model.shutdown_on is None:
                shown = f"{model.id} on {endpoint.provider}"
                found += _judge(dataclasses.replace(model, id=shown, **_ends(endpoint)), day)
        found += _judge(model, day)
    return sorted(found, key=lambda item: item[1].shutdown_on or dt.date.max)


def _ends(endpoint: Any) -> dict[str, Any]:
    return {"shutdown_on": endpoint.shutdown_on, "deprecated_on": None, "replacement": None}


def _judge(spec: ModelSpec, day: dt.date) -> list[tuple[str, ModelSpec]]:
    """``[(kind, spec)]`` for a model with lifecycle dates, ``[]`` for one without."""
    if spec.shutdown_on is not None and day >= spec.shutdown_on:
        return [("retired", spec)]
    if spec.shutdown_on is not None and (spec.shutdown_on - day).days <= NEAR_DAYS:
        return [("shutdown-soon", spec)]
    if spec.deprecated_on is not None or spec.shutdown_on is not None:
        return [("deprecated", spec)]
    return []


def _epoch(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day is not None else None
