"""What the generated request models (``generated_models``) share: their JSON and the image
input type. Hand-written, since it is behaviour rather than shape."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, ClassVar

# What an edit or variation accepts as an image: a path, raw bytes, an open binary file,
# or a string that is an http(s) URL, a data URL or a path.
ImageInput = str | Path | bytes | bytearray | IO[bytes]


@dataclass
class JsonObject:
    """A JSON object of optional fields: ``None`` ones are left out."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(kw_only=True)
class Request:
    """An Images request: ``None`` fields are left out of its JSON, and ``extra`` is merged
    in so fields this SDK does not know yet still reach the upstream."""

    extra: dict[str, Any] = field(default_factory=dict)

    _FILE_FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON fields except the image inputs (which travel as files or URLs)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("extra", *self._FILE_FIELDS) or f.name.startswith("_"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, JsonObject):
                value = value.to_dict()
            if value is not None:
                out[f.name] = value
        out.update(self.extra)
        return out

    @property
    def streaming(self) -> bool:
        return bool(getattr(self, "stream", False) or self.extra.get("stream"))
