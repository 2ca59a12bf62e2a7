"""Route only to endpoints whose price covers the request's parameters.

An endpoint's ``pricing.unpriced`` names parameters its price does not account for (a
caller's ``steps`` where the provider bills by steps at an unknown rate, input images
where edits are billed per input image at an unknown rate). Such a request skips that
endpoint; when no endpoint is left it is refused naming the parameter, so the caller is
never charged less, or more, than the provider bills.
"""

from __future__ import annotations

import dataclasses

from imagegate.catalog.spec import ModelSpec
from imagegate.core.errors import InvalidRequest
from imagegate.core.types import ImageRequest


def priceable(spec: ModelSpec, req: ImageRequest) -> ModelSpec:
    """``spec`` with only the endpoints that can price ``req``."""
    kept = tuple(e for e in spec.endpoints if not e.pricing.unpriced_fields(req))
    if len(kept) == len(spec.endpoints):
        return spec
    if not kept:
        field = spec.endpoints[0].pricing.unpriced_fields(req)[0]
        raise InvalidRequest(
            f"Model '{spec.id}' cannot price the parameter '{field}' on any of its "
            f"providers, so it is not accepted; leave '{field}' out or use another model.",
            param=field,
            code="unsupported_parameter",
        )
    return dataclasses.replace(spec, endpoints=kept)
