"""The adapter types a config may name come from the registry alone (each adapter's
``type_name``), not from a list kept beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegate.app import check_settings
from imagegate.config import ConfigError, load_settings
from imagegate.providers import registry
from imagegate.providers.sandbox import SandboxProvider


def _config(tmp_path: Path, ptype: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"providers:\n  - id: mine\n    type: {ptype}\n")
    return path


def test_registry_is_keyed_by_each_adapters_type_name() -> None:
    assert {name: cls.type_name for name, cls in registry.ADAPTERS.items()} == {
        name: name for name in registry.ADAPTERS
    }


def test_a_registered_adapter_type_is_accepted_by_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.ADAPTERS, "newcomer", SandboxProvider)
    check_settings(load_settings(_config(tmp_path, "newcomer")))


def test_an_unknown_type_is_refused_naming_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        check_settings(load_settings(_config(tmp_path, "nope")))
    message = str(caught.value)
    assert "'nope'" in message and "provider 'mine'" in message
    assert all(name in message for name in registry.ADAPTERS)
