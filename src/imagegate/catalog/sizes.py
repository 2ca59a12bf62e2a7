"""Size rules for configured models that declare none.

An operator's first model entry usually names an upstream and nothing else. Rather than
accept only ``auto`` (the old behaviour), such a model takes the rule that fits what
serves it: a built-in model with the same upstream id lends its rules (the operator
re-exposed a model the catalog already knows); a ``local`` diffusion pipeline makes any
size that is a multiple of 8 within bounds it can hold in memory; the sandbox takes its
own 64-4096 range; every other (pass-through) upstream gets the caller's size as sent
and decides itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from imagegate.catalog.spec import FreeSizeRule, ModelSpec

LOCAL_SIZES = FreeSizeRule(min_side=64, max_side=2048, multiple_of=8)
SANDBOX_SIZES = FreeSizeRule(min_side=64, max_side=4096)
PASS_THROUGH_SIZES = FreeSizeRule(min_side=1, max_side=16384)


def has_size_rule(spec: ModelSpec) -> bool:
    return bool(spec.sizes) or spec.free_size is not None


def fill_size_rule(
    spec: ModelSpec, builtin: Iterable[ModelSpec], provider_types: Mapping[str, str]
) -> ModelSpec:
    """``spec`` unchanged if it has a size rule, else with the rule its endpoints imply."""
    if has_size_rule(spec):
        return spec
    known = _builtin_for(spec, builtin)
    if known is not None:
        return replace(
            spec,
            sizes=known.sizes,
            free_size=known.free_size,
            auto_size=known.auto_size,
            default_size=known.default_size,
        )
    types = {provider_types.get(e.provider) for e in spec.endpoints}
    if "local" in types:
        return replace(spec, free_size=LOCAL_SIZES)
    if types == {"sandbox"}:
        return replace(spec, free_size=SANDBOX_SIZES)
    return replace(spec, free_size=PASS_THROUGH_SIZES)


def _builtin_for(spec: ModelSpec, builtin: Iterable[ModelSpec]) -> ModelSpec | None:
    """The built-in model one of ``spec``'s endpoints serves (by upstream id or alias)."""
    wanted = {e.upstream_model for e in spec.endpoints}
    for model in builtin:
        if not has_size_rule(model):
            continue
        names = {model.id, *model.aliases, *(e.upstream_model for e in model.endpoints)}
        if wanted & names:
            return model
    return None
