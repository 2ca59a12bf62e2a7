"""Parse an upstream's JSON answer without running its large base64 images through the
JSON parser.

``orjson.loads`` of the 3.6 MB ``b64_json`` body of a 1024x1024 noisy PNG costs ~6 CPU ms,
almost all of it building the 3.6 MB string; finding that string's ends, checking it and
copying it out costs ~1.4 ms in all (``bench/b64_decode.py``). So each long
``"b64_json": "..."`` string value is cut out of the body, a short placeholder parsed in
its place, and the text put back into the parsed document. Nothing is decided from the
cut: whenever the cut text would not be exactly what the parser returns (an escape in it,
line breaks, non-ASCII), or the placeholders do not come back where they were cut, the
whole body goes through ``orjson.loads`` as before, so a malformed or truncated body fails
exactly as it did.
"""

from __future__ import annotations

from typing import Any

import orjson

# Strings shorter than this stay in the parser: cutting them out would not pay.
SPLICE_MIN = 64 * 1024
_KEY = "b64_json"
_KEY_TOKEN = b'"b64_json"'
_MARK = "\x00imagegate-b64:"
_JSON_SPACE = b" \t\n\r"
# Unescaped, these make a JSON string invalid; line breaks are what a base64 text may hold.
_BREAKS = (b"\n", b"\r", b"\t", b"\x00")


class _Misplaced(Exception):
    """A placeholder came back somewhere other than a ``b64_json`` value."""


def loads(raw: bytes | str) -> Any:
    """``orjson.loads(raw)``, with long ``b64_json`` strings copied out rather than parsed.

    Raises ``orjson.JSONDecodeError`` exactly when ``orjson.loads`` would.
    """
    if len(raw) < SPLICE_MIN:
        return orjson.loads(raw)
    body = raw.encode() if isinstance(raw, str) else raw
    spans = _long_values(body)
    if not spans:
        return orjson.loads(body)
    texts = _texts(body, spans)
    if texts is None:
        return orjson.loads(body)
    try:
        document = orjson.loads(_with_placeholders(body, spans))
    except orjson.JSONDecodeError:
        return orjson.loads(body)  # raises the parser's own error for the whole body
    try:
        _restore(document, texts)
    except _Misplaced:
        return orjson.loads(body)
    return document


def _long_values(body: bytes) -> list[tuple[int, int]]:
    """(opening quote, closing quote) of each long ``"b64_json": "..."`` value without a
    backslash. A match inside another string is harmless: its placeholder lands under
    another key (or the cut body does not parse), and :func:`loads` falls back."""
    spans: list[tuple[int, int]] = []
    found = body.find(_KEY_TOKEN)
    while found != -1:
        at = _value_quote(body, found + len(_KEY_TOKEN))
        if at == -1:  # not a key, or its value is no string
            found = body.find(_KEY_TOKEN, found + 1)
            continue
        end = body.find(b'"', at + 1)
        if end == -1:
            return []  # truncated: let the parser say so
        if end - at - 1 >= SPLICE_MIN and body.find(b"\\", at + 1, end) == -1:
            spans.append((at, end))
        found = body.find(_KEY_TOKEN, end + 1)
    return spans


def _value_quote(body: bytes, at: int) -> int:
    """Where the string value of a key ending just before ``at`` opens, else -1."""
    at = _skip_space(body, at)
    if body[at : at + 1] != b":":
        return -1
    at = _skip_space(body, at + 1)
    return at if body[at : at + 1] == b'"' else -1


def _skip_space(body: bytes, at: int) -> int:
    while body[at : at + 1] and body[at] in _JSON_SPACE:
        at += 1
    return at


def _texts(body: bytes, spans: list[tuple[int, int]]) -> list[str] | None:
    """The cut strings, or None where the parser would not return them byte for byte."""
    view = memoryview(body)
    texts = []
    for start, end in spans:
        if any(body.find(c, start + 1, end) != -1 for c in _BREAKS):
            return None
        try:
            texts.append(str(view[start + 1 : end], "ascii"))
        except UnicodeDecodeError:
            return None
    return texts


def _with_placeholders(body: bytes, spans: list[tuple[int, int]]) -> bytes:
    parts = []
    position = 0
    for index, (start, end) in enumerate(spans):
        parts.append(body[position:start])
        parts.append(orjson.dumps(f"{_MARK}{index}"))
        position = end + 1
    parts.append(body[position:])
    return b"".join(parts)


def _restore(document: Any, texts: list[str]) -> None:
    """Put each cut string back where its placeholder is; every one exactly once, and
    only as a ``b64_json`` value."""
    restored: set[int] = set()
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and value.startswith(_MARK):
                    index = _index(value, len(texts))
                    if key != _KEY or index in restored:
                        raise _Misplaced
                    restored.add(index)
                    node[key] = texts[index]  # same key: the dict's size does not change
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            for value in node:
                if isinstance(value, str) and value.startswith(_MARK):
                    raise _Misplaced
                if isinstance(value, dict | list):
                    stack.append(value)
    if len(restored) != len(texts):
        raise _Misplaced


def _index(placeholder: str, count: int) -> int:
    digits = placeholder[len(_MARK) :]
    if not digits.isdigit() or int(digits) >= count:
        raise _Misplaced
    return int(digits)
