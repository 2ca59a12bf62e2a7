"""API-key rules with two keys wherever a lookup picks one: a secret opens only its own
key, a revocation closes only its own key, and every refusal names its field."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagegate.accounts.keys import (
    INCORRECT_KEY_MESSAGE,
    REVOKED_KEY_MESSAGE,
    ApiKey,
    KeyStore,
    bearer_token,
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


def test_keys_are_listed_oldest_first_whatever_their_ids(store: KeyStore) -> None:
    for key_id in ("zzz", "mmm", "aaa"):
        store.create(key_id, plaintext=f"ig_{key_id}_secret")
    assert [k.id for k in store.list()] == ["zzz", "mmm", "aaa"]


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


def test_generated_keys_differ_and_carry_256_bits_of_secret(store: KeyStore) -> None:
    (a, token_a), (b, token_b) = store.create("a"), store.create("b")
    assert a.id != b.id and token_a != token_b
    assert a.id.isalnum() and a.id == a.id.lower()
    assert len(token_a.split("_", 2)[2]) == 43  # token_urlsafe(32)


def test_a_token_with_unencodable_characters_is_401_not_a_crash(store: KeyStore) -> None:
    a, _ = store.create("a")
    for token in (f"ig_{a.id}_bad\udcffsecret", "foreign-\udcff-token"):
        assert unauthorized(store, token) == INCORRECT_KEY_MESSAGE


def test_a_given_key_in_another_format_keeps_the_id_earlier_versions_gave_it(
    store: KeyStore,
) -> None:
    key, _ = store.create("env", plaintext="my-own-admin-token-123")
    # sha256(b"imagegate-key-id\0" + token)[:12]: changing it would lose stored keys
    assert key.id == "bcf7ddb66292"


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        ({"name": "x" * 201}, "name", "name must be 1 to 200 characters."),
        ({"ipm": 0}, "ipm", "ipm must be a positive integer."),
        ({"max_concurrent": -1}, "max_concurrent", "max_concurrent must be a positive integer."),
        ({"rpm": True}, "rpm", "rpm must be a positive integer."),
        ({"models": [" "]}, "models", "models must not contain empty ids."),
        (
            {"plaintext": "tab\there"},
            "key",
            "an API key must be 1 to 512 characters without whitespace.",
        ),
        ({"credits_usd": float("inf")}, "credits", "credits must be a non-negative amount of USD."),
    ],
)
def test_a_bad_setting_is_refused_naming_it(
    store: KeyStore, kwargs: dict[str, object], param: str, message: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        store.create(**{"name": "valid", **kwargs})  # type: ignore[arg-type]
    assert (info.value.param, info.value.message) == (param, message)
    assert store.list() == []


def test_limits_of_exactly_one_and_a_name_of_200_are_accepted(store: KeyStore) -> None:
    key, _ = store.create("x" * 200, rpm=1, ipm=1, max_concurrent=1)
    assert (key.rpm, key.ipm, key.max_concurrent, len(key.name)) == (1, 1, 1, 200)


def test_models_given_as_a_string_is_a_programming_error(store: KeyStore) -> None:
    with pytest.raises(TypeError) as info:
        store.create("x", models="m/a")  # a str is a Sequence[str]: only the runtime check sees it
    assert str(info.value) == "models must be a sequence of model ids, not a string"


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


def test_usd_to_micro_refuses_what_is_not_a_number() -> None:
    with pytest.raises(InvalidRequest) as info:
        usd_to_micro("lots")  # type: ignore[arg-type]
    assert (info.value.param, info.value.message) == (
        "credits",
        "credits must be a non-negative amount of USD.",
    )


@pytest.mark.parametrize(
    ("header", "token"), [("Bearer abc def", "abc def"), ("Bearer  a b c ", "a b c")]
)
def test_the_bearer_token_is_everything_after_the_scheme(header: str, token: str) -> None:
    assert bearer_token(header) == token


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


# -- the admin bootstrap -------------------------------------------------------------------


def test_the_bootstrap_admin_key_file_is_written_into_a_new_nested_directory(
    store: KeyStore, tmp_path: Path
) -> None:
    data_dir = tmp_path / "deep" / "er" / "data"
    path = store.ensure_admin(None, data_dir)
    assert path == (data_dir / "admin-key").absolute()
    key = store.authenticate(path.read_text().strip())
    assert (key.name, key.is_admin) == ("admin", True)


def test_the_bootstrap_never_writes_through_a_symlink(store: KeyStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not yours\n")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "admin-key").symlink_to(elsewhere)
    with pytest.raises(OSError):
        store.ensure_admin(None, data_dir)
    assert elsewhere.read_text() == "not yours\n"
    assert store.list() == []  # no admin key that nobody can read


def test_an_env_admin_key_is_named_admin(store: KeyStore, tmp_path: Path) -> None:
    store.ensure_admin("ig_envadmin_secret", tmp_path)
    key = store.authenticate("ig_envadmin_secret")
    assert (key.id, key.name, key.is_admin) == ("envadmin", "admin", True)


def test_an_env_admin_key_that_collides_says_how_to_fix_it(store: KeyStore, tmp_path: Path) -> None:
    user, token = store.create("user")
    with pytest.raises(ValueError) as info:
        store.ensure_admin(token, tmp_path)
    assert str(info.value) == (
        f"IMAGEGATE_ADMIN_KEY is the existing non-admin key '{user.id}'; choose a different key"
    )
    with pytest.raises(ValueError) as other:
        store.ensure_admin(f"ig_{user.id}_different", tmp_path)
    assert str(other.value) == (
        f"IMAGEGATE_ADMIN_KEY uses the id '{user.id}' of another existing key; "
        "choose a different key"
    )


def test_a_revoked_env_admin_key_is_logged_once_per_start_and_stays_revoked(
    store: KeyStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="imagegate.accounts.keys"):
        store.ensure_admin("ig_envadmin_secret", tmp_path)
        store.ensure_admin("ig_envadmin_secret", tmp_path)  # active: nothing to say
        assert caplog.records == []
        store.revoke("envadmin")
        store.ensure_admin("ig_envadmin_secret", tmp_path)
    assert [r.getMessage() for r in caplog.records] == [
        "IMAGEGATE_ADMIN_KEY (key envadmin) has been revoked; it stays revoked"
    ]
    assert unauthorized(store, "ig_envadmin_secret") == REVOKED_KEY_MESSAGE


def test_creation_and_revocation_times_read_back_in_utc_in_any_time_zone(
    store: KeyStore, tokyo_clock: None
) -> None:
    key, _ = store.create("a")
    store.revoke(key.id)
    read = store.get(key.id)
    assert read is not None and read.revoked_at is not None
    now = datetime.now(UTC)
    assert abs((now - read.created_at).total_seconds()) < 60
    assert abs((now - read.revoked_at).total_seconds()) < 60
    assert read.created_at.utcoffset() == timedelta(0)
