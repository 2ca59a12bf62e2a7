"""Mechanics shared by the adapters, one place each: ``common`` (error classification,
image decoding, fan-out, masks), ``answers`` (JSON objects, failure bodies, output URLs),
``inputs`` (edit checks, headers, per-model overrides) and ``tasks`` (polling)."""
