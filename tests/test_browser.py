"""The app in a real headless browser: Debian's chromium driven by Python Playwright.

`python app.py --model <tiny> --host 127.0.0.1 --port <free>` runs as a subprocess; the page is
loaded, prompt and acrostic filled, a form picked, Generate clicked, and the poem read back from
the page (acrostic heads, line lengths, per-character tone marks); a screenshot is saved. Markup
typed into the page, or put into the page's own request (a form outside the choices), is shown as
text, never rendered or run. The browser only reaches 127.0.0.1 (every other
request is aborted). Needs `chromium` and `fonts-wqy-microhei` (installed by .ci/run); never
`playwright install`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
from test_app import Server, free_port, server_env  # noqa: E402  (the same subprocess helper)

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000
TONE_MARKS = {"平", "仄", "平仄", "?"}

if not Path(CHROMIUM).is_file():
    pytest.skip(f"Debian chromium not found at {CHROMIUM} (apt-get install chromium fonts-wqy-microhei)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    port = free_port()
    args = ["--model", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port)]
    srv = Server(args, server_env(), port, tmp_path_factory.mktemp("browser") / "server.log").wait_ready()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        yield b
        b.close()


def _local_only(route):
    if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", _local_only)
    page = context.new_page()
    page.goto(server.url, wait_until="load")
    page.locator("#generate").wait_for(state="visible")
    yield page
    context.close()


def poem_lines(page) -> list[str]:
    page.locator("#poems .poem-card").first.wait_for()
    return [line.get_attribute("data-text") for line in page.locator("#poems .poem-card").first
            .locator(".poem-line").all()]


def test_fill_pick_generate_read_and_screenshot(page, tmp_path):
    page.locator("#prompt textarea").fill("春风")
    page.locator("#acrostic textarea").fill("春夏秋冬")
    page.locator("#form").get_by_label("七绝").check()
    page.locator("#seed input").fill("7")
    page.locator("#generate").click()

    lines = poem_lines(page)
    assert len(lines) == 4 and "".join(line[0] for line in lines) == "春夏秋冬"
    assert lines[0].startswith("春风")
    assert [len(line.rstrip("，。")) for line in lines] == [7, 7, 7, 7], lines
    assert [line[-1] for line in lines] == ["，", "。", "，", "。"]
    card = page.locator("#poems .poem-card").first
    marks = card.locator(".poem-line rt").all_inner_texts()
    assert len(marks) == 28 and set(marks) <= TONE_MARKS
    text = card.inner_text()
    assert "seed=7" in text and "copy report" in text and "score" in text

    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000


def test_markup_is_shown_as_text_never_run(page):
    evil = '<img src=x onerror="window.__xss=1"><b id="injected">x</b><script>window.__xss=2</script>'
    page.locator("#prompt textarea").fill(evil)
    page.locator("#generate").click()
    toast = page.get_by_text("outside the model's vocabulary").first
    toast.wait_for()
    assert "'<'" in toast.inner_text()
    assert page.evaluate("window.__xss") is None
    assert page.locator("#injected").count() == 0 and page.locator("#poems .poem-card").count() == 0
    # The page keeps working after the error.
    page.locator("#prompt textarea").fill("明月")
    page.locator("#generate").click()
    assert poem_lines(page)[0].startswith("明月")


def test_new_seed_button_and_clickable_example(page):
    seed = page.locator("#seed input")
    assert seed.input_value() == "-1"
    page.locator("#new_seed").click()
    page.wait_for_function("() => document.querySelector('#seed input').value !== '-1'")
    assert seed.input_value().isdigit()

    # The first example: acrostic 春夏秋冬, 七绝, seed 7.
    page.locator("#examples").get_by_role("gridcell", name="春夏秋冬").first.click()
    page.wait_for_function("() => document.querySelector('#acrostic textarea').value === '春夏秋冬'")
    assert page.locator("#form").get_by_label("七绝").is_checked() and seed.input_value() == "7"
    page.locator("#generate").click()
    lines = poem_lines(page)
    assert "".join(line[0] for line in lines) == "春夏秋冬" and len(lines[0].rstrip("，")) == 7


EVIL = '<img src=x onerror="window.__xss=1"><b id="injected">x</b><script>window.__xss=2</script>'


def _no_markup_ran(page) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.locator("#injected").count() == 0 and page.locator("img[src=x]").count() == 0


@pytest.mark.parametrize("field", ["prompt", "acrostic", "style"])
def test_markup_in_every_text_field_is_shown_as_text(page, field):
    if field == "style":
        page.get_by_text("采样 Sampling").click()
    page.locator(f"#{field} textarea").fill(EVIL)
    page.locator("#generate").click()
    toast = page.get_by_text("invalid input").first
    toast.wait_for()
    assert "<" in toast.inner_text() or "&lt;" not in toast.inner_text()
    _no_markup_ran(page)


CRAFTED = '<img src=x onerror="window.__pwned=1"><b id=injected>bold</b>'


def _send_instead(page, field: str, value: str) -> None:
    """Rewrite the page's own request to the queue so that the input `field` carries `value`: what a
    crafted request sends, including values the page's controls cannot (a form outside the choices)."""
    config = page.evaluate("() => window.gradio_config")
    elem_ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    inputs = {d["id"]: [elem_ids.get(i) for i in d["inputs"]] for d in config["dependencies"]}

    def rewrite(route):
        body = route.request.post_data_json
        names = inputs[body["fn_index"]]
        if field not in names:  # another event of the click (the card, the permalink): sent as it is
            return route.continue_()
        body["data"][names.index(field)] = value
        route.continue_(post_data=json.dumps(body))

    page.route("**/gradio_api/queue/join*", rewrite)


def _toast_shows_as_text(page, expected: str) -> None:
    """The error toast holds `expected` as literal text, and nothing of the request became markup or ran."""
    message = page.locator("[data-testid=toast-body] [data-testid=toast-text]").first
    message.wait_for()
    assert expected in message.text_content(), message.inner_html()
    assert page.locator("#injected").count() == 0 and page.locator("img[src=x]").count() == 0
    assert page.evaluate("window.__pwned") is None


# What each field's error echoes: a choice (Gradio's own check) the whole value, a text field its
# characters outside the vocabulary one by one.
@pytest.mark.parametrize("field, expected", [("form", CRAFTED), ("script", CRAFTED), ("style", "'<' 'i' 'm' 'g'")])
def test_a_crafted_request_is_echoed_as_text(page, field, expected):
    _send_instead(page, field, CRAFTED)
    page.locator("#generate").click()
    _toast_shows_as_text(page, expected)
    assert page.locator("#poems .poem-card").count() == 0
    # The page's own requests go through unchanged again, and the app still writes.
    page.unroute("**/gradio_api/queue/join*")
    page.locator("#prompt textarea").fill("明月")
    page.locator("#generate").click()
    assert poem_lines(page)[0].startswith("明月")
