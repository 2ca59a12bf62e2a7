"""URL signing, the signing secret, and the filesystem image store."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from imagegate.storage import (
    FilesystemStore,
    ImageStore,
    UrlSigner,
    load_or_create_secret,
    open_store,
)
from imagegate.storage.filesystem import GRACE_S
from imagegate.storage.signing import SECRET_ENV

FILE_ID = "Qx3vW7nKp2sLm9TbYc4dEf8g.png"
EXP = 1_900_000_000
OK_STEM = "A" * 24  # the shape of a real id's stem


# --- signing -------------------------------------------------------------------------


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(b"k" * 32)


def test_signature_is_unpadded_urlsafe_base64_of_sha256(signer: UrlSigner) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", signer.sign(FILE_ID, EXP))


def test_valid_signature_verifies_until_expiry(signer: UrlSigner) -> None:
    sig = signer.sign(FILE_ID, EXP)
    assert signer.verify(FILE_ID, EXP, sig, now=EXP - 3600)
    assert signer.verify(FILE_ID, str(EXP), sig, now=EXP)
    assert not signer.verify(FILE_ID, EXP, sig, now=EXP + 1)


def test_real_clock_is_used_by_default(signer: UrlSigner) -> None:
    future, past = int(time.time()) + 60, int(time.time()) - 60
    assert signer.verify(FILE_ID, future, signer.sign(FILE_ID, future))
    assert not signer.verify(FILE_ID, past, signer.sign(FILE_ID, past))


def test_tampering_is_detected(signer: UrlSigner) -> None:
    sig = signer.sign(FILE_ID, EXP)
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    now = EXP - 10
    assert not signer.verify(FILE_ID, EXP, flipped, now=now)
    assert not signer.verify(FILE_ID, EXP + 1, sig, now=now)
    assert not signer.verify("Zx3vW7nKp2sLm9TbYc4dEf8g.png", EXP, sig, now=now)
    assert not signer.verify(FILE_ID, EXP, sig + "=", now=now)
    assert not UrlSigner(b"other secret").verify(FILE_ID, EXP, sig, now=now)


@pytest.mark.parametrize(
    "exp", ["", "abc", "-1", "+1900000000", " 1900000000", "1900000000 ", "1e9", "1_900_000_000",
            "\uff11" * 10, "9" * 40, None, 1.5, True],
)  # fmt: skip
def test_malformed_expiry_is_refused_without_raising(signer: UrlSigner, exp: Any) -> None:
    assert signer.verify(FILE_ID, exp, signer.sign(FILE_ID, EXP), now=0) is False


@pytest.mark.parametrize("sig", ["", "é", "\ud800", "a" * 10_000, None, b"bytes"])
def test_malformed_signature_is_refused_without_raising(signer: UrlSigner, sig: Any) -> None:
    assert signer.verify(FILE_ID, EXP, sig, now=0) is False


def test_odd_file_id_is_refused_without_raising(signer: UrlSigner) -> None:
    assert signer.verify("\ud800", EXP, "x", now=0) is False


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"")


# --- the signing secret ----------------------------------------------------------------


def test_secret_file_is_created_0600_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    data_dir = tmp_path / "data"
    first = load_or_create_secret(data_dir)
    key_file = data_dir / "signing-key"
    assert len(first) == 32
    assert re.fullmatch(r"[0-9a-f]{64}", key_file.read_text().strip())
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # A restart loads the same key, so URLs signed before it still verify.
    assert load_or_create_secret(data_dir) == first
    sig = UrlSigner(first).sign(FILE_ID, EXP)
    assert UrlSigner(load_or_create_secret(data_dir)).verify(FILE_ID, EXP, sig, now=0)
    assert [p.name for p in data_dir.iterdir()] == ["signing-key"]  # no temp files left


def test_environment_secret_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "ab" * 32)
    assert load_or_create_secret(tmp_path) == bytes.fromhex("ab" * 32)
    assert not (tmp_path / "signing-key").exists()


def test_the_key_file_copied_into_the_environment_signs_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One encoding: a URL signed with the generated file verifies with its content in
    IMAGEGATE_SIGNING_SECRET (another host), instead of silently failing."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    from_file = load_or_create_secret(tmp_path / "a")
    sig = UrlSigner(from_file).sign(FILE_ID, EXP)
    monkeypatch.setenv(SECRET_ENV, (tmp_path / "a" / "signing-key").read_text())
    other_host = load_or_create_secret(tmp_path / "b")
    assert UrlSigner(other_host).verify(FILE_ID, EXP, sig, now=0)
    monkeypatch.setenv(SECRET_ENV, "x")
    with pytest.raises(ValueError, match="imagegate secret"):
        load_or_create_secret(tmp_path / "b")


def test_corrupt_secret_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    (tmp_path / "signing-key").write_text("not hex\n")
    with pytest.raises(ValueError, match="signing-key"):
        load_or_create_secret(tmp_path)


# --- the filesystem store ----------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "images", ttl_s=3600)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_put_then_get_round_trips(store: FilesystemStore) -> None:
    png_id = await store.put(b"png bytes", "png")
    webp_id = await store.put(b"webp bytes", "webp")
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}\.png", png_id)
    assert webp_id.endswith(".webp") and webp_id != png_id
    png, webp = await store.get(png_id), await store.get(webp_id)
    assert png is not None and (png.data, png.content_type) == (b"png bytes", "image/png")
    assert webp is not None and webp.content_type == "image/webp"
    assert stat.S_IMODE((store.root / png_id).stat().st_mode) == 0o600
    assert sorted(p.name for p in store.root.iterdir()) == sorted([png_id, webp_id])


async def test_unknown_id_is_none(store: FilesystemStore) -> None:
    assert await store.get(f"{OK_STEM}.png") is None


@pytest.mark.parametrize(
    "file_id",
    ["../secret.png", "..%2Fsecret.png", "/etc/passwd", f"sub/{OK_STEM}.png", f"{OK_STEM}.png.png",
     f"{OK_STEM}.gif", OK_STEM, f"{OK_STEM}.PNG", f"{OK_STEM}.png\n", f"{OK_STEM}\x00.png",
     "short.png", ".tmp-0123456789abcdef", "..", ""],
)  # fmt: skip
async def test_malformed_ids_are_refused(tmp_path: Path, file_id: str) -> None:
    store = FilesystemStore(tmp_path / "images", ttl_s=3600)
    (tmp_path / "secret.png").write_bytes(b"outside the store")
    (store.root / ".tmp-0123456789abcdef").write_bytes(b"half written")
    assert await store.get(file_id) is None


async def test_expired_file_is_not_served_even_before_the_sweep(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path, ttl_s=1, grace_s=0)
    file_id = await store.put(b"data", "jpeg")
    assert await store.get(file_id) is not None
    _age(tmp_path / file_id, 2)
    assert await store.get(file_id) is None
    assert (tmp_path / file_id).exists()


async def test_grace_period_keeps_files_a_little_past_ttl(store: FilesystemStore) -> None:
    file_id = await store.put(b"data", "png")
    _age(store.root / file_id, store.ttl_s + GRACE_S - 5)
    assert await store.get(file_id) is not None
    assert await store.sweep() == 0
    _age(store.root / file_id, store.ttl_s + GRACE_S + 5)
    assert await store.get(file_id) is None


async def test_sweep_deletes_only_expired_files_it_wrote(store: FilesystemStore) -> None:
    old, fresh = await store.put(b"old", "png"), await store.put(b"fresh", "png")
    stale_tmp = store.root / ".tmp-deadbeefdeadbeef"
    stale_tmp.write_bytes(b"crashed mid-write")
    foreign = store.root / "notes.txt"
    foreign.write_text("not ours")
    for path in (store.root / old, stale_tmp, foreign):
        _age(path, 10 * 3600)
    assert await store.sweep() == 2
    assert sorted(p.name for p in store.root.iterdir()) == sorted([fresh, "notes.txt"])
    assert await store.get(fresh) is not None


async def test_sweep_takes_an_explicit_clock(store: FilesystemStore) -> None:
    await store.put(b"a", "png")
    await store.put(b"b", "webp")
    assert await store.sweep(now=time.time()) == 0
    assert await store.sweep(now=time.time() + store.ttl_s + GRACE_S + 10) == 2
    assert list(store.root.iterdir()) == []


# --- choosing a store ------------------------------------------------------------------


async def test_default_store_lives_in_the_data_dir(tmp_path: Path) -> None:
    async with open_store(None, tmp_path, 60) as store:
        assert isinstance(store, FilesystemStore)
        assert store.root == tmp_path / "images"
        assert store.root.is_dir()


@pytest.mark.parametrize("form", ["file://{}", "file:{}", "file://localhost{}"])
def test_file_urls_name_a_directory(tmp_path: Path, form: str) -> None:
    store = open_store(form.format(tmp_path / "my images"), tmp_path, 60)
    assert isinstance(store, ImageStore) and isinstance(store, FilesystemStore)
    assert store.root == tmp_path / "my images"


def test_relative_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("file://./.imagegate/images", Path("unused"), 60)
    assert isinstance(store, FilesystemStore)
    assert store.root.resolve() == tmp_path / ".imagegate" / "images"


def test_s3_url_without_a_bucket_is_refused(tmp_path: Path) -> None:
    # The S3 backend itself is tested against a local S3 server in test_storage_s3.py.
    with pytest.raises(ValueError, match="names no bucket"):
        open_store("s3:///prefix", tmp_path, 60)


@pytest.mark.parametrize("url", ["ftp://host/images", "gs://bucket", "/var/images"])
def test_other_schemes_are_refused_by_name(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="scheme"):
        open_store(url, tmp_path, 60)
