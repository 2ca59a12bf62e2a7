"""The web console in a real browser (Debian's Chromium driven by Playwright) against a
real gateway running the sandbox engine. Each test opens a fresh tab, signs in, uses a
page the way a person would, saves a screenshot, and fails on any console error or failed
request."""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from PIL import Image, ImageChops
from playwright.sync_api import FilePayload, Page, expect

from console_support import Console, Problems, console, open_page, sign_in

__all__ = ["console"]


@pytest.fixture
def tab(console: Console) -> Iterator[tuple[Page, Problems]]:
    page, problems = open_page(console)
    yield page, problems
    page.context.close()
    assert problems.items == []


def shot(console: Console, page: Page, name: str) -> None:
    """Save a screenshot; the page must fit its viewport's width (no sideways scrolling)."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(console.artifacts / f"{name}.png"), full_page=True)


def data_url_image(src: str) -> Image.Image:
    assert src.startswith("data:image/"), src[:40]
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    image.load()
    return image


def wait_rendered(page: Page, selector: str, count: int = 1) -> None:
    page.wait_for_function(
        """([sel, count]) => {
             const imgs = [...document.querySelectorAll(sel)];
             return imgs.length >= count && imgs.every((i) => i.complete && i.naturalWidth > 0);
           }""",
        arg=[selector, count],
    )


def choose_size(page: Page, size: str) -> None:
    page.select_option("select[name=size]", "custom")
    page.fill("input[name=custom-size]", size)


def test_bad_key_is_refused_and_sign_out_forgets_the_key(
    console: Console, tab: tuple[Page, Problems]
) -> None:
    page, problems = tab
    page.goto(f"{console.gateway.url}/console")
    page.fill("#signin-key", "ig_nosuchkey_" + "x" * 43)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_have_text("That key was not accepted.")
    assert page.evaluate("sessionStorage.getItem('imagegate.key')") is None
    assert page.locator("#nav").is_hidden()
    assert all("401" in p for p in problems.items)  # the refused sign-in, and nothing else
    problems.items.clear()
    sign_in(page, console, console.user_key)
    page.click("#sign-out")
    assert page.evaluate("sessionStorage.getItem('imagegate.key')") is None
    assert page.locator("#signin").is_visible() and page.locator("#page").is_hidden()
    assert page.context.cookies() == []


def test_generate_shows_image_meta_and_downloads(
    console: Console, tab: tuple[Page, Problems]
) -> None:
    page, _ = tab
    sign_in(page, console, console.user_key)
    assert page.evaluate("sessionStorage.getItem('imagegate.key')") == console.user_key
    assert console.user_key not in page.url
    page.fill("textarea[name=prompt]", "a lighthouse at dawn")
    choose_size(page, "320x192")
    page.click("#run")
    wait_rendered(page, ".result-image")
    assert page.eval_on_selector(".result-image", "i => [i.naturalWidth, i.naturalHeight]") == [
        320,
        192,
    ]
    card = page.locator(".result")
    assert card.locator(".provider").inner_text() == "sandbox"
    assert card.locator(".attempts").inner_text() == "1"
    assert card.locator(".cost").inner_text() == "$0"
    assert card.locator(".latency").inner_text().endswith("ms")
    expect(card.locator(".size")).to_have_text("320\u00d7192")
    with page.expect_download() as download:
        card.get_by_text("Download").click()
    saved = download.value.path()
    assert Image.open(saved).size == (320, 192)
    shot(console, page, "playground")


def test_first_paint_of_playground(console: Console, tab: tuple[Page, Problems]) -> None:
    """Warm server, signed in: reload and time the first paint and the ready playground."""
    page, _ = tab
    sign_in(page, console, console.user_key)
    page.wait_for_selector("form[aria-label=Playground]")
    figures = []
    for _ in range(3):
        page.reload()
        page.wait_for_selector("form[aria-label=Playground] #run")
        figures.append(
            page.evaluate(
                """() => ({
                  fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
                  ready: performance.getEntriesByName('console:playground')[0]?.startTime,
                })"""
            )
        )
    (console.artifacts / "first-paint.json").write_text(json.dumps(figures))
    print(
        "console: first contentful paint / playground rendered (ms):",
        [(round(f["fcp"]), round(f["ready"])) for f in figures],
    )
    # The target (200 ms) is reported, not asserted: machines vary.
    assert min(f["fcp"] for f in figures) < 1000


def test_stream_shows_partials_before_final(console: Console, tab: tuple[Page, Problems]) -> None:
    page, _ = tab
    sign_in(page, console, console.user_key)
    page.fill("textarea[name=prompt]", "a slow reveal")
    choose_size(page, "256x256")
    page.check("input[name=stream]")
    page.fill("input[name=partial_images]", "2")
    page.evaluate(
        """() => {
          window.arrivals = [];
          new MutationObserver((records) => {
            for (const r of records) for (const n of r.addedNodes) {
              if (n.matches?.('img.partial')) window.arrivals.push('partial');
              if (n.matches?.('figure.result')) window.arrivals.push('final');
            }
          }).observe(document.getElementById('results'), {childList: true, subtree: true});
        }"""
    )
    page.click("#run")
    wait_rendered(page, ".result-image")
    arrivals = page.evaluate("window.arrivals")
    assert "partial" in arrivals and arrivals.index("partial") < arrivals.index("final")
    assert page.locator("img.partial").count() == 2
    assert page.eval_on_selector(".result-image", "i => i.naturalWidth") == 256
    assert page.locator(".result .provider").inner_text() == "sandbox"
    shot(console, page, "playground-stream")


def _input_png() -> bytes:
    image = Image.new("RGB", (256, 256))
    image.putdata([(x, y, (x * y) % 256) for y in range(256) for x in range(256)])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_mask_edit_changes_only_painted_area(console: Console, tab: tuple[Page, Problems]) -> None:
    page, _ = tab
    sign_in(page, console, console.user_key)
    page.check("input[name=op][value=edit]")
    original = _input_png()
    upload: FilePayload = {"name": "in.png", "mimeType": "image/png", "buffer": original}
    page.set_input_files("#input-file", files=[upload])
    canvas = page.locator(".mask-canvas")
    canvas.wait_for()
    box = canvas.bounding_box()
    assert box is not None
    scale = 256 / box["width"]
    start = (box["x"] + 0.3 * box["width"], box["y"] + 0.5 * box["height"])
    end = (box["x"] + 0.7 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=12)
    page.mouse.up()
    page.fill("textarea[name=prompt]", "paint a stripe")
    page.click("#run")
    wait_rendered(page, ".result-image")
    shot(console, page, "playground-mask-edit")
    result = data_url_image(page.get_attribute(".result-image", "src") or "")
    assert result.size == (256, 256)
    before = Image.open(io.BytesIO(original)).convert("RGB")
    diff = ImageChops.difference(before, result.convert("RGB")).convert("L")
    radius = 32 * scale / 2  # default brush: 32 CSS pixels wide
    (x0, y), (x1, _) = (
        ((p[0] - box["x"]) * scale, (p[1] - box["y"]) * scale) for p in (start, end)
    )
    changed = [(i % 256, i // 256) for i, v in enumerate(diff.getdata()) if v]
    assert len(changed) > 0.5 * (x1 - x0) * 2 * radius  # most of the stroke was edited

    def distance(px: int, py: int) -> float:
        cx = min(max(px + 0.5, x0), x1)
        return math.hypot(px + 0.5 - cx, py + 0.5 - y)

    outside = [p for p in changed if distance(*p) > radius + 2]
    assert outside == []


def test_compare_three_models(console: Console, tab: tuple[Page, Problems]) -> None:
    page, _ = tab
    sign_in(page, console, console.user_key)
    page.click("#nav a[data-page=compare]")
    page.fill("textarea[name=prompt]", "a red bicycle in the snow")
    page.fill("input[name=size]", "256x256")
    models = ["imagegate/sandbox", "test/sandbox-b", "test/sandbox-c"]
    for box in page.locator("input[name=models]").all():
        box.set_checked(box.get_attribute("value") in models)
    page.get_by_role("button", name="Compare").click()
    wait_rendered(page, ".compare-grid .result-image", 3)
    cells = page.locator(".compare-grid .cell")
    assert cells.count() == 3
    assert sorted(cells.locator("h2").all_inner_texts()) == models
    costs = sorted(cells.locator(".cost").all_inner_texts())
    assert costs == ["$0", "$0.0100", "$0.0200"]
    shot(console, page, "compare")


def test_compare_one_model_on_several_providers(
    console: Console, tab: tuple[Page, Problems]
) -> None:
    page, problems = tab
    sign_in(page, console, console.user_key)
    page.click("#nav a[data-page=compare]")
    page.fill("textarea[name=prompt]", "same model, three providers")
    page.fill("input[name=size]", "128x128")
    page.check("input[name=mode][value=providers]")
    page.get_by_label("Model", exact=True).select_option("test/sandbox-b")
    for box in page.locator("input[name=providers]").all():
        box.check()
    page.get_by_role("button", name="Compare").click()
    wait_rendered(page, ".compare-grid .result-image", 2)
    page.wait_for_selector(".compare-grid .cell.failed .error")
    cells = page.locator(".compare-grid .cell:not([aria-busy])")
    assert cells.count() == 3
    providers = sorted(page.locator(".compare-grid .provider").all_inner_texts())
    assert providers == ["sandbox", "sandbox-2"]
    failed = page.locator(".cell.failed")
    assert failed.locator("h2").inner_text() == "test/sandbox-b @ down"
    assert "down" in failed.locator(".error").inner_text()
    shot(console, page, "compare-providers")
    # the one failure shown on the page is the expected one
    assert [p for p in problems.items if "502" not in p and "Failed to load" not in p] == []
    problems.items.clear()


def test_variation_of_an_uploaded_image(console: Console, tab: tuple[Page, Problems]) -> None:
    page, _ = tab
    sign_in(page, console, console.user_key)
    page.check("input[name=op][value=variation]")
    give = """([kind, b64]) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const data = new DataTransfer();
      data.items.add(new File([bytes], kind + ".png", {type: "image/png"}));
      const target = document.querySelector(kind === "dropped" ? ".drop" : "body");
      const event = kind === "dropped"
        ? new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true})
        : new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true});
      target.dispatchEvent(event);
    }"""
    png = base64.b64encode(_input_png()).decode()
    page.evaluate(give, ["pasted", png])
    expect(page.locator(".drop .muted")).to_contain_text("pasted.png selected")
    page.evaluate(give, ["dropped", png])
    expect(page.locator(".drop .muted")).to_contain_text("dropped.png selected")
    page.fill("input[name=n]", "2")
    page.select_option("select[name=output_format]", "jpeg")
    page.fill("input[name=output_compression]", "60")
    page.click("#run")
    wait_rendered(page, ".result-image", 2)
    sizes = page.eval_on_selector_all(".result-image", "l => l.map((i) => i.naturalWidth)")
    assert sizes == [256, 256]
    src = page.get_attribute(".result-image", "src") or ""
    assert data_url_image(src).format == "JPEG"
    names = page.eval_on_selector_all(".result a[download]", "l => l.map((a) => a.download)")
    assert all(name.endswith(".jpg") for name in names) and len(names) == 2


def _generate(console: Console, key: str, prompt: str) -> str:
    reply = httpx.post(
        f"{console.gateway.v1}/images/generations",
        json={"model": "sandbox", "prompt": prompt, "size": "64x64", "meta": True},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert reply.status_code == 200
    return str(reply.json()["meta"]["generation_id"])


def test_history_lists_recent_generations(console: Console, tab: tuple[Page, Problems]) -> None:
    page, _ = tab
    key = console.create_key("history-user")
    made = [_generate(console, key, f"history {i}") for i in range(2)]
    sign_in(page, console, key)
    page.fill("textarea[name=prompt]", "made in the console")
    choose_size(page, "128x128")
    page.click("#run")
    wait_rendered(page, ".result-image")
    page.click("#nav a[data-page=history]")
    page.wait_for_selector("table.history tbody tr")
    rows = page.locator("table.history tbody tr")
    assert rows.count() == 3
    ids = [rows.nth(i).get_attribute("data-generation") for i in range(3)]
    assert ids[1:] == made[::-1]
    assert rows.nth(0).locator("td.prompt").inner_text() == "made in the console"
    assert rows.nth(0).locator("img.thumb").count() == 1
    shot(console, page, "history")
    rows.nth(1).locator("a").click()
    page.wait_for_selector(".detail h1")
    assert made[1] in page.locator(".detail h1").inner_text()
    assert page.locator(".detail table tbody tr").count() == 1  # one attempt: sandbox
    assert "null" not in page.locator(".detail").inner_text()
    shot(console, page, "history-detail")


def test_admin_creates_sees_once_tops_up_and_revokes_a_key(
    console: Console, tab: tuple[Page, Problems]
) -> None:
    page, _ = tab
    sign_in(page, console, console.gateway.admin_key)
    page.click("#nav a[data-page=keys]")
    page.fill("input[name=name]", "temporary")
    page.fill("input[name=credits]", "1")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-secret").inner_text()
    assert secret.startswith("ig_")
    shot(console, page, "keys-created")
    auth = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{console.gateway.v1}/models", headers=auth).status_code == 200
    key_id = secret.split("_")[1]
    row = page.locator(f"tr[data-key='{key_id}']")
    row.locator("input.amount").fill("2.5")
    row.get_by_role("button", name="Add").click()
    page.wait_for_selector("text=balance $3.5000")
    page.get_by_role("button", name="I have saved it").click()
    page.reload()
    page.wait_for_selector(f"tr[data-key='{key_id}']")
    assert secret not in page.content()  # shown once: gone after a reload
    row = page.locator(f"tr[data-key='{key_id}']")
    row.get_by_role("button", name="Revoke temporary").click()
    row.get_by_role("button", name="Revoke temporary").click()
    page.wait_for_selector(f"tr[data-key='{key_id}'].revoked")
    assert page.locator(f"tr[data-key='{key_id}'] td.state").inner_text().startswith("revoked")
    assert httpx.get(f"{console.gateway.v1}/models", headers=auth).status_code == 401
    shot(console, page, "keys")


def test_usage_charts_show_todays_data(console: Console, tab: tuple[Page, Problems]) -> None:
    page, _ = tab
    key = console.create_key("usage-user")
    for i in range(3):
        _generate(console, key, f"usage {i}")
    sign_in(page, console, key)
    page.click("#nav a[data-page=usage]")
    chart = page.locator("figure.chart-box", has_text="Images per day")
    chart.locator("rect.bar").first.wait_for()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert chart.locator("text.label").all_text_contents() == [today]
    assert chart.locator("text.value").all_text_contents() == ["3"]
    assert page.locator(".stat", has_text="Images").locator("strong").inner_text() == "3"
    shot(console, page, "usage")


def test_health_page_for_admin(console: Console, tab: tuple[Page, Problems]) -> None:
    page, _ = tab
    _generate(console, console.user_key, "health")
    sign_in(page, console, console.gateway.admin_key)
    page.click("#nav a[data-page=health]")
    page.wait_for_selector("table.providers")
    sandbox = page.locator("tr[data-provider=sandbox]")
    assert sandbox.locator("td").nth(1).inner_text() == "present"
    assert page.locator("tr[data-provider=openai] td").nth(1).inner_text() == "missing"
    assert page.locator("tr[data-endpoint='sandbox/sandbox'] td.breaker").inner_text() == "closed"
    shot(console, page, "health")


def test_non_admin_sees_no_admin_pages(console: Console, tab: tuple[Page, Problems]) -> None:
    page, _ = tab
    sign_in(page, console, console.user_key)
    assert page.locator("#nav a[data-page=keys]").is_hidden()
    assert page.locator("#nav a[data-page=health]").is_hidden()
    page.goto(f"{console.gateway.url}/console#/keys")
    page.wait_for_selector("form[aria-label=Playground]")
    assert page.locator("#page").get_attribute("data-page") == "playground"
    auth = {"Authorization": f"Bearer {console.user_key}"}
    refused = httpx.get(f"{console.gateway.v1}/admin/keys", headers=auth)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_required"


def test_phone_width_labels_and_keyboard(console: Console) -> None:
    page, problems = open_page(console, width=390, height=844)
    try:
        sign_in(page, console, console.user_key)
        page.wait_for_selector("form[aria-label=Playground]")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                 .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                 .map((el) => el.name || el.id)"""
        )
        assert unlabelled == []
        page.focus("textarea[name=prompt]")
        page.keyboard.type("typed with the keyboard")
        page.focus("#run")
        page.keyboard.press("Enter")
        wait_rendered(page, ".result-image")
        original = data_url_image(page.get_attribute(".result-image", "src") or "").convert("RGB")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(console, page, "playground-phone")
        # edit the result with a mask painted from the keyboard
        page.get_by_role("button", name="Edit this image").focus()
        page.keyboard.press("Enter")
        page.locator(".mask-canvas").wait_for()
        page.focus(".mask-canvas")
        page.keyboard.press("Space")
        for _ in range(3):
            page.keyboard.press("Shift+ArrowRight")
        page.focus("textarea[name=prompt]")
        page.keyboard.type(" and edited")
        page.focus("#run")
        page.keyboard.press("Enter")
        page.wait_for_selector(".result-image[alt*='and edited']")
        wait_rendered(page, ".result-image")
        edited = data_url_image(page.get_attribute(".result-image", "src") or "")
        box = ImageChops.difference(original, edited.convert("RGB")).getbbox()
        assert box is not None  # something changed, around the centre only
        left, top, right, bottom = box  # centre (512, 512), three steps right
        assert left > 384 and right < 768 and top > 384 and bottom < 640
        shot(console, page, "playground-phone-keyboard-edit")
        for name in ("compare", "history", "usage"):
            page.click(f"#nav a[data-page={name}]")
            page.wait_for_selector(f"#page[data-page={name}] h1")
            shot(console, page, f"{name}-phone")  # fits the phone's width
    finally:
        page.context.close()
    assert problems.items == []


def test_console_is_served_with_a_strict_csp(console: Console) -> None:
    for path in ("/console", "/console/js/app.js", "/console/console.css"):
        reply = httpx.get(f"{console.gateway.url}{path}")
        assert reply.status_code == 200
        csp = reply.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    models = httpx.get(
        f"{console.gateway.v1}/models", headers={"Authorization": f"Bearer {console.user_key}"}
    ).json()["data"]
    sandbox = next(m for m in models if m["id"] == "imagegate/sandbox")
    assert sandbox["capabilities"]["output_formats"] == ["png", "jpeg", "webp"]
    assert sandbox["capabilities"]["max_n_by_operation"]["edit"] == 10
    script = httpx.get(f"{console.gateway.url}/console/js/app.js")
    again = httpx.get(
        f"{console.gateway.url}/console/js/app.js",
        headers={"if-none-match": script.headers["etag"]},
    )
    assert again.status_code == 304 and again.content == b""
    root = httpx.get(f"{console.gateway.url}/")
    assert 'href="/console"' in root.text
    assert httpx.get(f"{console.gateway.url}/console/../app.py").status_code == 404
