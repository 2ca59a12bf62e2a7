"""Fixtures for the console's browser tests: one gateway and one Chromium per module.

Chromium is Debian's (``/usr/bin/chromium``, installed by the Makefile); Playwright only
drives it (``playwright install`` is never run: it downloads a browser build). Every page
records console errors, uncaught exceptions, failed requests and HTTP errors, and a test
fails if any happened. Screenshots go to ``$IMAGEGATE_TEST_ARTIFACTS`` (default
``<tmp>/imagegate-artifacts/console``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from gateway import RunningGateway, run_gateway

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Two more sandbox-backed models (priced, so cost shows) for the compare page; the second
# sandbox and the refused loopback port give one model three providers, one of them down.
CONFIG = """
providers:
  - {id: sandbox-2, type: sandbox}
  - {id: down, type: openai_compatible, base_url: "http://127.0.0.1:9/v1", api_key: sk-x}
models:
  - id: test/sandbox-b
    operations: [generate, edit]
    free_size: {min_side: 64, max_side: 1024}
    endpoints:
      - {provider: sandbox, upstream_model: sandbox, pricing: {per_image: 0.01}}
      - {provider: sandbox-2, upstream_model: sandbox, pricing: {per_image: 0.03}}
      - {provider: down, upstream_model: x, pricing: {per_image: 0.05}}
  - id: test/sandbox-c
    operations: [generate]
    free_size: {min_side: 64, max_side: 1024}
    endpoints:
      - {provider: sandbox, upstream_model: sandbox, pricing: {per_image: 0.02}}
"""


def artifacts_dir() -> Path:
    base = os.environ.get("IMAGEGATE_TEST_ARTIFACTS")
    path = Path(base) if base else Path(tempfile.gettempdir()) / "imagegate-artifacts"
    path = path / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Console:
    """A gateway, a browser, and an ordinary (non-admin) key."""

    gateway: RunningGateway
    browser: Browser
    user_key: str
    artifacts: Path = field(default_factory=artifacts_dir)

    def create_key(self, name: str, **extra: object) -> str:
        return self.gateway.create_key(name, **extra)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make .venv/.installed-dev` installs it")
    tmp = tmp_path_factory.mktemp("console")
    with run_gateway(tmp, CONFIG) as gw, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            user = Console(gw, browser, "")
            user.user_key = user.create_key("console-user")
            yield user
        finally:
            browser.close()


@dataclass
class Problems:
    items: list[str] = field(default_factory=list)


def open_page(console: Console, width: int = 1280, height: int = 900) -> tuple[Page, Problems]:
    """A fresh context (its own session storage) and page, watched for any error."""
    context = console.browser.new_context(
        viewport={"width": width, "height": height}, accept_downloads=True
    )
    page = context.new_page()
    problems = Problems()
    page.on(
        "console",
        lambda m: (
            problems.items.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.items.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.items.append(f"failed: {r.method} {r.url}"))
    page.on(
        "response",
        lambda r: (
            problems.items.append(f"HTTP {r.status}: {r.request.method} {r.url}")
            if r.status >= 400
            else None
        ),
    )
    return page, problems


def sign_in(page: Page, console: Console, key: str) -> None:
    page.goto(f"{console.gateway.url}/console")
    page.fill("#signin-key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
