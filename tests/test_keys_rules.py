"""API-key rules with two keys wherever a lookup picks one: a secret opens only its own
key, a revocation closes only its own key, and every refusal names its field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imagegate.accounts.keys import (
    INCORRECT_KEY_MESSAGE,
    REVOKED_KEY_MESSAGE,
    ApiKey,
    KeyStore,
    usd_to_micro,
)
from imagegate.core.errors import InvalidRequest, Unauthorized
from imagegate.db.session import Database


@pytest.fixture
def store(db: Database) -> KeyStore:
    return KeyStore(db)


def unauthorized(store: KeyStore, token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        store.authenticate(token)
    assert info.value.status == 401
    return info.value.message


def test_a_secret_opens_only_its_own_key(store: KeyStore) -> None:
    a, token_a = store.create("a")
    b, token_b = store.create("b")
    assert store.authenticate(token_a) == a and store.authenticate(token_b) == b
    secret_a = token_a.split("_", 2)[2]
    assert unauthorized(store, f"ig_{b.id}_{secret_a}") == INCORRECT_KEY_MESSAGE
    assert unauthorized(store, f"ig_nosuchid_{secret_a}") == INCORRECT_KEY_MESSAGE
    assert unauthorized(store, token_a + "x") == INCORRECT_KEY_MESSAGE
    assert unauthorized(store, "") == INCORRECT_KEY_MESSAGE


def test_a_token_longer_than_512_characters_is_refused_unread(store: KeyStore) -> None:
    longest = "x" * 512
    store.create("long", plaintext=longest)
    assert store.authenticate(longest).name == "long"
    assert unauthorized(store, longest + "x") == INCORRECT_KEY_MESSAGE
    with pytest.raises(InvalidRequest) as info:
        store.create("longer", plaintext=longest + "x")
    assert info.value.param == "key" and "1 to 512 characters" in info.value.message


def test_revoking_one_key_leaves_the_other_open(store: KeyStore) -> None:
    a, token_a = store.create("a")
    b, token_b = store.create("b")
    assert store.revoke(a.id) is True
    assert unauthorized(store, token_a) == REVOKED_KEY_MESSAGE
    assert store.authenticate(token_b) == b
    first = store.get(a.id)
    assert first is not None and first.revoked and first.revoked_at is not None
    assert store.revoke(a.id) is True  # twice: the first time stays
    again = store.get(a.id)
    assert again is not None and again.revoked_at == first.revoked_at
    assert store.revoke("nosuchkey") is False
    assert store.get("nosuchkey") is None
    assert [k.id for k in store.list(include_revoked=False)] == [b.id]
    assert [k.id for k in store.list()] == [a.id, b.id]


def test_a_key_keeps_every_setting_it_was_created_with(store: KeyStore) -> None:
    key, token = store.create(
        "  team  ",
        models=["m/a", " m/b ", "m/a"],
        admin=True,
        credits_usd=2.5,
        rpm=10,
        ipm=20,
        max_concurrent=3,
    )
    assert (key.name, key.models, key.is_admin, key.credits_micro) == (
        "team",
        ("m/a", "m/b"),
        True,
        2_500_000,
    )
    assert (key.rpm, key.ipm, key.max_concurrent, key.revoked) == (10, 20, 3, False)
    assert token.startswith(f"ig_{key.id}_") and len(key.id) == 12
    assert store.authenticate(token) == key == store.get(key.id)
    assert key.created_at.tzinfo is not None
    assert abs((datetime.now(UTC) - key.created_at).total_seconds()) < 60


def test_generated_keys_differ(store: KeyStore) -> None:
    (a, token_a), (b, token_b) = store.create("a"), store.create("b")
    assert a.id != b.id and token_a != token_b
    assert a.id.isalnum() and a.id == a.id.lower()


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        ({"name": "x" * 201}, "name", "name must be 1 to 200 characters."),
        ({"ipm": 0}, "ipm", "ipm must be a positive integer."),
        ({"max_concurrent": -1}, "max_concurrent", "max_concurrent must be a positive integer."),
        ({"rpm": True}, "rpm", "rpm must be a positive integer."),
        ({"models": [" "]}, "models", "models must not contain empty ids."),
        ({"plaintext": "tab\there"}, "key", "without whitespace"),
        ({"credits_usd": float("inf")}, "credits", "non-negative amount of USD"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(
    store: KeyStore, kwargs: dict[str, object], param: str, message: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        store.create(**{"name": "valid", **kwargs})  # type: ignore[arg-type]
    assert info.value.param == param and message in info.value.message
    assert store.list() == []


def test_limits_of_exactly_one_and_a_name_of_200_are_accepted(store: KeyStore) -> None:
    key, _ = store.create("x" * 200, rpm=1, ipm=1, max_concurrent=1)
    assert (key.rpm, key.ipm, key.max_concurrent, len(key.name)) == (1, 1, 1, 200)


def test_models_given_as_a_string_is_a_programming_error(store: KeyStore) -> None:
    with pytest.raises(TypeError):
        store.create("x", models="m/a")  # type: ignore[arg-type]


def test_storing_the_same_given_key_twice_is_key_exists(store: KeyStore) -> None:
    store.create("first", plaintext="ig_fixedid_secret")
    with pytest.raises(InvalidRequest) as info:
        store.create("second", plaintext="ig_fixedid_other")
    err = info.value
    assert (err.code, err.param) == ("key_exists", "key") and "'fixedid'" in err.message
    assert [k.name for k in store.list()] == ["first"]


def test_a_given_key_in_the_ig_format_keeps_its_id(store: KeyStore) -> None:
    key, token = store.create("given", plaintext="ig_abc123_s_e_c")
    assert key.id == "abc123" and token == "ig_abc123_s_e_c"
    assert store.authenticate("ig_abc123_s_e_c") == key
    odd, _ = store.create("odd", plaintext="ig_ABC_secret")  # upper case: not our format
    assert odd.id != "ABC" and len(odd.id) == 12


def test_usd_to_micro_is_exact_and_rounds_half_to_even() -> None:
    assert usd_to_micro(0.1) == 100_000
    assert usd_to_micro(1.0000005) == 1_000_000
    assert usd_to_micro(1.0000015) == 1_000_002
    assert usd_to_micro(0) == 0
    for bad in (-0.000001, float("nan"), float("-inf")):
        with pytest.raises(InvalidRequest) as info:
            usd_to_micro(bad)
        assert info.value.param == "credits"


def test_a_model_restriction_admits_ids_and_aliases_it_lists() -> None:
    key = ApiKey("k", "n", False, ("m/a",), None, None, datetime.now(UTC), None)
    assert key.allows_model("m/a")
    assert key.allows_model("vendor/m-a", aliases=["x", "m/a"])
    assert not key.allows_model("m/b", aliases=["x"])
    assert not key.revoked
