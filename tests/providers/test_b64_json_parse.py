"""``b64json.loads``: an upstream's JSON with its long ``b64_json`` strings copied out, not
parsed. Whatever the body, it returns what ``orjson.loads`` returns, or raises where it
raises; and it does take the fast path for the bodies that should take it."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegate.providers._shared import b64json

LONG = base64.b64encode(random.Random(7).randbytes(3 * b64json.SPLICE_MIN // 4 + 300)).decode()
OTHER = base64.b64encode(random.Random(8).randbytes(3 * b64json.SPLICE_MIN // 4 + 99)).decode()


def same_as_orjson(raw: bytes | str) -> Any:
    """``b64json.loads(raw)``, checked against ``orjson.loads`` (value or error)."""
    try:
        expected = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        with pytest.raises(orjson.JSONDecodeError) as info:
            b64json.loads(raw)
        assert str(info.value) == str(exc)
        return None
    got = b64json.loads(raw)
    assert got == expected
    return got


def spliced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bodies parsed with placeholders (the fast path)."""
    calls: list[int] = []
    real = b64json._with_placeholders

    def counting(body: bytes, spans: list[tuple[int, int]]) -> bytes:
        calls.append(len(spans))
        return real(body, spans)

    monkeypatch.setattr(b64json, "_with_placeholders", counting)
    return calls


def images(*texts: str, ensure_ascii: bool = True, **top: Any) -> bytes:
    body = {"created": 1, "data": [{"b64_json": t, "revised_prompt": "p"} for t in texts], **top}
    return json.dumps(body, ensure_ascii=ensure_ascii).encode()


def test_an_images_response_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spliced(monkeypatch)
    raw = images(LONG, OTHER, usage={"input_tokens": 3, "input_tokens_details": {"a": 1}})
    got = same_as_orjson(raw)
    assert [item["b64_json"] for item in got["data"]] == [LONG, OTHER]
    assert calls == [2]
    assert same_as_orjson(raw.decode())["data"][1]["b64_json"] == OTHER  # str bodies (SSE)
    compact = orjson.dumps({"data": [{"b64_json": LONG}]})
    assert same_as_orjson(compact) == {"data": [{"b64_json": LONG}]}
    spaced = (
        b'{"type": "image_generation.completed",\n "b64_json"\t :\r\n "' + LONG.encode() + b'"}'
    )
    assert same_as_orjson(spaced)["b64_json"] == LONG
    assert calls == [2, 2, 1, 1]


@pytest.mark.parametrize(
    "raw",
    [
        images(LONG.replace("/", "\\/")),  # escaped slashes: the parser unescapes them
        images(LONG[:5000] + "\n" + LONG[5000:]).replace(b"\\n", b"\n"),  # raw line break
        images(LONG[:5000] + "\t" + LONG[5000:]).replace(b"\\t", b"\t"),
        images(LONG[:5000] + "é" + LONG[5000:], ensure_ascii=False),  # not ASCII
        images(LONG[: b64json.SPLICE_MIN - 1]),  # short: parsed
    ],
    ids=["escaped-slash", "newline", "tab", "non-ascii", "short"],
)
def test_bodies_the_cut_would_change_are_parsed_whole(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = spliced(monkeypatch)
    same_as_orjson(raw)
    assert calls == []


@pytest.mark.parametrize(
    "raw",
    [
        # The key's text inside another key: the placeholder lands under that key.
        b'{"\\"b64_json": "' + LONG.encode() + b'", "data": []}',
        # A placeholder-like string the upstream sent, beside a real long image.
        json.dumps({"data": [{"b64_json": "\x00imagegate-b64:0"}, {"b64_json": LONG}]}).encode(),
        json.dumps({"data": [{"b64_json": LONG}], "x": ["\x00imagegate-b64:0"]}).encode(),
        json.dumps({"data": [{"b64_json": LONG}], "x": "\x00imagegate-b64:7"}).encode(),
        # The key as a value, then a long string value of another key.
        json.dumps({"a": "b64_json", "b": LONG}).encode(),
        # A long b64_json that is not a string.
        b'{"b64_json": ["' + LONG.encode() + b'"]}',
    ],
    ids=["key-in-key", "marker-under-key", "marker-in-list", "marker-elsewhere", "value", "list"],
)
def test_misplaced_or_lookalike_values_give_what_the_parser_gives(raw: bytes) -> None:
    same_as_orjson(raw)


def test_truncated_and_malformed_bodies_raise_as_the_parser_does() -> None:
    raw = images(LONG, OTHER)
    start = raw.index(LONG.encode())
    for cut in (1, 50, start, start + 1, start + 30_000, start + len(LONG), len(raw) - 1):
        assert same_as_orjson(raw[:cut]) is None
    assert same_as_orjson(raw.replace(b'"data"', b'"data" x', 1)) is None  # junk before
    assert same_as_orjson(raw + b"}") is None  # junk after
    assert same_as_orjson(raw.replace(b'"revised_prompt": "p"}', b'"revised_prompt": "p"')) is None
    unquoted = raw.replace(b'": "' + LONG[:10].encode(), b'": ' + LONG[:10].encode())
    assert same_as_orjson(unquoted) is None
    assert same_as_orjson(b'{"b64_json": "' + LONG.encode()) is None  # no closing quote


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.text(max_size=20)
        | st.just(LONG),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["b64_json", "data", "x", "b64_json "]), inner)
        ),
        max_leaves=8,
    ),
    st.integers(min_value=0, max_value=2**31),
)
def test_any_document_and_any_truncation_of_it_match_the_parser(doc: Any, cut: int) -> None:
    raw = orjson.dumps(doc) + b" " * (b64json.SPLICE_MIN if LONG not in str(doc) else 0)
    same_as_orjson(raw)
    same_as_orjson(raw[: cut % (len(raw) + 1)])
