"""Settings from the environment and an optional YAML file (DESIGN.md's contract).

The YAML file is parsed node by node so that every error names the key path and the
line it is on; a bad file stops start-up instead of being half-applied.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imagegate.config_secrets import SECRET_NAMES, SecretError, secret_env
from imagegate.core.provider_config import ProviderConfig

STATUSES = ("stable", "beta", "alpha")
OPERATIONS = ("generate", "edit", "variation")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MB = 1024 * 1024
# Set by `serve --workers N` for its workers: the parent already migrated the schema.
NO_MIGRATE_ENV = "IMAGEGATE_NO_MIGRATE"


class ConfigError(Exception):
    """A configuration problem, with the key path and line that caused it."""


@dataclass(slots=True)
class Limits:
    max_image_bytes: int = 50 * MB
    max_json_bytes: int | None = None  # None: derived from the catalog (api.admission)
    max_body_bytes: int = 256 * MB  # no request body past this, JSON or multipart
    max_inflight_bytes: int = 512 * MB  # request-body bytes the process holds at once
    max_image_pixels: int = 36_000_000  # the same bomb guard the media layer uses
    max_form_fields: int = 200


@dataclass(slots=True)
class FetchSettings:
    allow_hosts: list[str] = field(default_factory=list)
    timeout_s: float = 15.0
    max_redirects: int = 3


@dataclass(slots=True)
class RoutingSettings:
    """The ``routing`` section: the router's settings and its breakers'."""

    max_attempts: int = 3
    deadline_s: float = 300.0
    max_retry_wait_s: float = 5.0  # wait out an upstream 429 only when nothing else is left
    hedge: bool = False  # start a second endpoint once the first passes its observed p95
    hedge_min_samples: int = 20
    breaker_failure_threshold: int = 5
    breaker_cooldown_s: float = 30.0


@dataclass(slots=True)
class Timeouts:
    """Bounds on waiting for shared services, so a hung one fails requests fast (503)."""

    db_connect_s: float = 5.0  # PostgreSQL: opening a connection
    db_statement_s: float = 30.0  # PostgreSQL: one statement (server- and client-side)
    redis_connect_s: float = 2.0
    redis_s: float = 2.0  # one Redis command
    ready_s: float = 2.0  # each /readyz check


@dataclass(slots=True)
class Settings:
    """The gateway's configuration: environment variables, then the YAML file on top."""

    data_dir: Path
    database_url: str | None = None
    redis_url: str | None = None
    storage_url: str | None = None
    storage_public_endpoint: str | None = None  # S3: the host presigned URLs name
    public_url: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)  # Host values kept as sent
    admin_key: str | None = None
    signing_secret: str | None = None  # hex; None: the data dir's signing-key file
    url_ttl_s: int = 3600
    sweep_interval_s: int = 300
    metrics_require_admin: bool = False  # GET /metrics is open unless this is set
    hold_ttl_s: float | None = None  # None: routing.deadline_s + 60
    credit_lease_usd: float = 0.0  # credits.lease_usd: slice a worker leases; 0: per-request holds
    credit_lease_s: float = 30.0  # credits.lease_s: how long a lease takes new holds
    config_file: Path | None = None
    providers: list[ProviderConfig] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    model_lines: dict[str, int] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)  # operation -> model id
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    limits: Limits = field(default_factory=Limits)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    timeouts: Timeouts = field(default_factory=Timeouts)
    drain_s: float | None = None  # None: routing.deadline_s
    migrate: bool = True  # serve --no-migrate turns it off

    @property
    def effective_drain_s(self) -> float:
        """How long in-flight requests may run on after SIGTERM."""
        return self.drain_s or self.routing.deadline_s

    @property
    def effective_hold_ttl_s(self) -> float:
        """How long a credit hold lives: past it, its request cannot still be running."""
        return self.hold_ttl_s or self.routing.deadline_s + 60


def load_settings(config_file: str | Path | None = None) -> Settings:
    """Build settings from the environment, then apply the YAML file if one is given."""
    env = os.environ
    path = config_file or env.get("IMAGEGATE_CONFIG") or None
    try:
        secret = {name: secret_env(name, env) for name in SECRET_NAMES}
    except SecretError as exc:
        raise ConfigError(str(exc)) from None
    settings = Settings(
        data_dir=Path(env.get("IMAGEGATE_DATA_DIR", "./.imagegate")).resolve(),
        database_url=secret["IMAGEGATE_DATABASE_URL"],
        redis_url=secret["IMAGEGATE_REDIS_URL"],
        storage_url=env.get("IMAGEGATE_STORAGE_URL") or None,
        public_url=(env.get("IMAGEGATE_PUBLIC_URL") or None),
        admin_key=secret["IMAGEGATE_ADMIN_KEY"],
        signing_secret=secret["IMAGEGATE_SIGNING_SECRET"],
        migrate=env.get(NO_MIGRATE_ENV, "") not in ("1", "true", "yes"),
    )
    if path:
        settings.config_file = Path(path)
        _apply_file(settings, Path(path))
    return settings


def _apply_file(settings: Settings, path: Path) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if root is None:
        return
    doc = _Doc(path)
    top = doc.mapping(root, "")
    known = {
        "providers",
        "models",
        "routing",
        "server",
        "limits",
        "fetch",
        "storage",
        "metrics",
        "credits",
        "defaults",
        "database",
        "redis",
    }
    for key, node in top.items():
        if key not in known:
            raise doc.error(node, key, f"unknown key (expected one of {', '.join(sorted(known))})")
    if "providers" in top:
        settings.providers = [
            _provider(doc, item, f"providers[{i}]")
            for i, item in enumerate(doc.sequence(top["providers"], "providers"))
        ]
    if "models" in top:
        for i, item in enumerate(doc.sequence(top["models"], "models")):
            model = doc.plain(item)
            if not isinstance(model, dict) or not isinstance(model.get("id"), str):
                raise doc.error(item, f"models[{i}]", "each model needs a string 'id'")
            settings.models.append(model)
            settings.model_lines[model["id"]] = item.start_mark.line + 1
    if "routing" in top:
        _routing(doc, top["routing"], settings.routing)
    for key, node, where in doc.section(top, "defaults"):
        if key not in OPERATIONS:
            raise doc.error(node, where, f"unknown operation (expected {', '.join(OPERATIONS)})")
        settings.defaults[key] = doc.string(node, where)
    for key, node, where in doc.section(top, "server"):
        if key == "public_url":
            settings.public_url = settings.public_url or doc.string(node, where)
        elif key == "data_dir":
            settings.data_dir = Path(doc.string(node, where)).resolve()
        elif key == "allowed_hosts":
            hosts = doc.sequence(node, where)
            settings.allowed_hosts = [
                doc.string(h, f"{where}[{i}]").lower() for i, h in enumerate(hosts)
            ]
        elif key == "drain_s":
            settings.drain_s = doc.number(node, where)
        else:
            expected = "public_url, data_dir, allowed_hosts, drain_s"
            raise doc.error(node, where, f"unknown key (expected {expected})")
    _timeouts(doc, top, settings.timeouts)
    for key, node, where in doc.section(top, "storage"):
        if key == "url":
            settings.storage_url = settings.storage_url or doc.string(node, where)
        elif key == "url_ttl_s":
            settings.url_ttl_s = doc.integer(node, where, minimum=1)
        elif key == "public_endpoint":
            settings.storage_public_endpoint = doc.string(node, where)
        elif key == "sweep_interval_s":
            settings.sweep_interval_s = doc.integer(node, where, minimum=1)
        else:
            raise doc.error(node, where, "unknown key")
    for key, node, where in doc.section(top, "credits"):
        if key == "hold_ttl_s":
            settings.hold_ttl_s = doc.number(node, where)
        elif key == "lease_usd":
            off = doc.plain(node) == 0 and not isinstance(doc.plain(node), bool)
            settings.credit_lease_usd = 0.0 if off else doc.number(node, where)
        elif key == "lease_s":
            settings.credit_lease_s = doc.number(node, where)
        else:
            raise doc.error(node, where, "unknown key (expected hold_ttl_s, lease_usd, lease_s)")
    for key, node, where in doc.section(top, "metrics"):
        if key != "require_admin":
            raise doc.error(node, where, "unknown key (expected require_admin)")
        settings.metrics_require_admin = doc.boolean(node, where)
    limits = settings.limits
    for key, node, where in doc.section(top, "limits"):
        if key == "max_image_mb":
            limits.max_image_bytes = int(doc.number(node, where) * MB)
        elif key == "max_json_mb":
            limits.max_json_bytes = int(doc.number(node, where) * MB)
        elif key == "max_body_mb":
            limits.max_body_bytes = int(doc.number(node, where) * MB)
        elif key == "max_inflight_mb":
            limits.max_inflight_bytes = int(doc.number(node, where) * MB)
        elif key == "max_image_pixels":
            limits.max_image_pixels = doc.integer(node, where, 1)
        else:
            raise doc.error(node, where, "unknown key")
    for key, node, where in doc.section(top, "fetch"):
        if key == "allow_hosts":
            hosts = doc.sequence(node, where)
            settings.fetch.allow_hosts = [
                doc.string(h, f"{where}[{i}]") for i, h in enumerate(hosts)
            ]
        elif key == "timeout_s":
            settings.fetch.timeout_s = doc.number(node, where)
        elif key == "max_redirects":
            settings.fetch.max_redirects = doc.integer(node, where, 0)
        else:
            raise doc.error(node, where, "unknown key")


def _timeouts(doc: _Doc, top: dict[str, yaml.Node], timeouts: Timeouts) -> None:
    """``database: {connect_timeout_s, statement_timeout_s}`` and ``redis: {connect_timeout_s,
    timeout_s}`` (see docs/deploy.md)."""
    fields = {
        "database": {"connect_timeout_s": "db_connect_s", "statement_timeout_s": "db_statement_s"},
        "redis": {"connect_timeout_s": "redis_connect_s", "timeout_s": "redis_s"},
    }
    for section, names in fields.items():
        for key, node, where in doc.section(top, section):
            if key not in names:
                raise doc.error(node, where, f"unknown key (expected {', '.join(names)})")
            setattr(timeouts, names[key], doc.number(node, where))


def _provider(doc: _Doc, node: yaml.Node, where: str) -> ProviderConfig:
    fields = doc.mapping(node, where)
    if "id" not in fields:
        raise doc.error(node, where, "missing required key 'id'")
    if "type" not in fields:
        raise doc.error(node, where, "missing required key 'type'")
    # Which types exist is the adapter registry's to say (app.check_settings).
    ptype = doc.string(fields["type"], f"{where}.type")
    config = ProviderConfig(id=doc.string(fields["id"], f"{where}.id"), type=ptype)
    for key, value in fields.items():
        path = f"{where}.{key}"
        if key in ("id", "type"):
            continue
        if key == "base_url":
            config.base_url = doc.string(value, path).rstrip("/")
        elif key == "api_key":
            config.api_key = doc.string(value, path) or None
        elif key == "status":
            status = doc.string(value, path)
            if status not in STATUSES:
                raise doc.error(value, path, f"must be one of {', '.join(STATUSES)}")
            config.status = status
        elif key == "timeout_s":
            config.timeout_s = doc.number(value, path)
        else:
            config.options[key] = doc.plain(value)
    return config


def _routing(doc: _Doc, node: yaml.Node, routing: RoutingSettings) -> None:
    for key, value in doc.mapping(node, "routing").items():
        path = f"routing.{key}"
        if key == "max_attempts":
            routing.max_attempts = doc.integer(value, path, minimum=1)
        elif key == "deadline_s":
            routing.deadline_s = doc.number(value, path)
        elif key == "max_retry_wait_s":
            routing.max_retry_wait_s = doc.number(value, path)
        elif key == "breaker":
            for sub, item in doc.mapping(value, path).items():
                if sub == "failure_threshold":
                    routing.breaker_failure_threshold = doc.integer(item, f"{path}.{sub}", 1)
                elif sub == "cooldown_s":
                    routing.breaker_cooldown_s = doc.number(item, f"{path}.{sub}")
                else:
                    raise doc.error(item, f"{path}.{sub}", "unknown key")
        elif key == "hedge":
            for sub, item in doc.mapping(value, path).items():
                if sub == "enabled":
                    routing.hedge = doc.boolean(item, f"{path}.{sub}")
                elif sub == "min_samples":
                    routing.hedge_min_samples = doc.integer(item, f"{path}.{sub}", 1)
                else:
                    raise doc.error(item, f"{path}.{sub}", "unknown key")
        else:
            raise doc.error(value, path, "unknown key")


class _Doc:
    """Typed access to YAML nodes that reports errors with the file, key path and line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._constructor = yaml.SafeLoader("")

    def error(self, node: yaml.Node, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path} line {node.start_mark.line + 1}: {where}: {message}")

    def mapping(self, node: yaml.Node, where: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, where or "top level", "expected a mapping")
        out: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            key = self.plain(key_node)
            if not isinstance(key, str):
                raise self.error(key_node, where, "keys must be strings")
            out[key] = value
        return out

    def section(self, top: dict[str, yaml.Node], name: str) -> Iterator[tuple[str, yaml.Node, str]]:
        """Each key, value and key path of the mapping ``name`` in ``top``; none if absent."""
        if name in top:
            for key, node in self.mapping(top[name], name).items():
                yield key, node, f"{name}.{key}"

    def sequence(self, node: yaml.Node, where: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, where, "expected a list")
        return list(node.value)

    def plain(self, node: yaml.Node) -> Any:
        value = self._constructor.construct_object(node, deep=True)
        return _expand(value)

    def string(self, node: yaml.Node, where: str) -> str:
        return str(self._checked(node, where, lambda v: isinstance(v, str), "a string"))

    def number(self, node: yaml.Node, where: str) -> float:
        return float(
            self._checked(node, where, lambda v: _is_number(v) and v > 0, "a positive number")
        )

    def boolean(self, node: yaml.Node, where: str) -> bool:
        return self._checked(node, where, lambda v: isinstance(v, bool), "true or false") is True

    def integer(self, node: yaml.Node, where: str, minimum: int = 0) -> int:
        expected = f"an integer >= {minimum}"
        return int(
            self._checked(node, where, lambda v: _is_number(v, int) and v >= minimum, expected)
        )

    def _checked(self, node: yaml.Node, where: str, fits: Callable[[Any], bool], what: str) -> Any:
        """The node's plain value if ``fits`` takes it, else an error: "expected ``what``"."""
        value = self.plain(node)
        if not fits(value):
            raise self.error(node, where, f"expected {what}")
        return value


def _is_number(value: Any, kind: type | tuple[type, ...] = (int, float)) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)  # YAML's true is no 1


def _expand(value: Any) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a plain value."""
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value
