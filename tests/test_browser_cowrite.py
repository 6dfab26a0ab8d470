"""Writing with the poet in a real browser (Debian chromium, Playwright): download the poem card,
copy the text, open a permalink, and (see the module's later tests) lock lines, pick alternatives
and watch lines stream in.

The server is conftest's `shipped_server` (the shipped model); the browser reaches only 127.0.0.1.
"""
from __future__ import annotations

import statistics
from urllib.parse import quote

import pytest

pytest.importorskip("playwright.sync_api")
from gradio_client import Client  # noqa: E402
from PIL import Image  # noqa: E402
from test_app_cowrite import ink_columns  # noqa: E402
from test_browser import TIMEOUT_MS, _local_only, browser  # noqa: E402, F401  (skips without chromium; the same browser fixture)

from benchmarks.browser_latency import PROBE_JS  # noqa: E402  (the page's own click -> line clock)
from ui.request import DEFAULTS  # noqa: E402


@pytest.fixture(scope="module")
def client(shipped_server):
    return Client(shipped_server.url, verbose=False, download_files=False)


@pytest.fixture
def context(browser, shipped_server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="zh-CN", accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", _local_only)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=shipped_server.url.rstrip("/"))
    yield context
    context.close()


def open_page(context, url: str):
    page = context.new_page()
    page.goto(url, wait_until="load")
    page.locator("#generate").wait_for(state="visible")
    return page


def best_lines(page) -> list[str]:
    """The lines of the first poem once written (not while its lines stream in)."""
    card = page.locator("#poems .poems:not(.streaming) .poem-card").first
    card.wait_for()
    return [line.get_attribute("data-text") for line in card.locator(".poem-line").all()]


def test_permalink_gives_the_api_poem_and_generate_updates_the_url(context, client, shipped_server):
    settings = dict(acrostic="春夏秋冬", form="七绝", seed=7, temperature=0.9)
    expected = client.predict(api_name="/generate", **settings)["poems"][0]["lines"]
    query = "&".join(f"{k}={quote(str(v))}" for k, v in settings.items())
    page = open_page(context, f"{shipped_server.url}?{query}")
    assert best_lines(page) == expected
    assert page.locator("#acrostic textarea").input_value() == "春夏秋冬"
    assert page.locator("#form").get_by_label("七绝").is_checked() and page.locator("#seed input").input_value() == "7"

    # Generate with another seed: the address bar now holds that poem's settings and seed.
    page.locator("#seed input").fill("12")
    page.locator("#generate").click()
    page.wait_for_url("**seed=12**")  # set once the poem is on the page
    assert "acrostic=" in page.url and "temperature=0.9" in page.url
    again = open_page(context, page.url)
    assert best_lines(again) == best_lines(page) != expected


def test_bad_permalink_values_are_named_and_the_page_still_works(context, shipped_server):
    evil = quote('<img src=x onerror="window.__xss=1">')
    page = open_page(context, f"{shipped_server.url}?seed=abc&form={evil}&acrostic=春秋")
    toast = page.get_by_text("bad link parameter").first
    toast.wait_for()
    assert best_lines(page)[0].startswith("春") and len(best_lines(page)) == 2  # the good value is used
    assert page.evaluate("window.__xss") is None and page.locator("img[src=x]").count() == 0
    page.get_by_text("seed must be a number").first.wait_for()


def test_card_download_and_copy_text(context, shipped_server, tmp_path):
    page = open_page(context, shipped_server.url)
    page.locator("#form").get_by_label("七绝").check()
    page.locator("#seed input").fill("3")
    page.locator("#generate").click()
    lines = best_lines(page)
    download_button = page.locator("#card_download")
    page.wait_for_function("() => !document.querySelector('#card_download').disabled")

    with page.expect_download() as download:
        download_button.click()
    path = tmp_path / "card.png"
    download.value.save_as(path)
    img = Image.open(path)
    assert img.format == "PNG" and img.height > 300
    columns = ink_columns(img)
    assert len(columns) == len(lines) == 4                     # 七绝: four ink columns, no title
    assert all(bottom - top > 3 * (x1 - x0) for x0, x1, top, bottom in columns)  # each a vertical line of 7

    page.locator("#copy_text").click()
    page.wait_for_function("async () => (await navigator.clipboard.readText()).length > 0")
    assert page.evaluate("navigator.clipboard.readText()") == "\n".join(lines)


def test_edit_and_lock_a_line_then_regenerate_the_rest(context, shipped_server):
    page = open_page(context, f"{shipped_server.url}?form=七律&seed=3")
    before = best_lines(page)
    assert len(before) == 8
    box = page.locator("#line_1 input, #line_1 textarea").first
    page.wait_for_function("() => document.querySelector('#line_1 input, #line_1 textarea')?.value")
    assert box.input_value() == before[1]
    box.fill("明月何时照我还")                 # an edited line is locked when regenerating
    page.locator("#regenerate").click()
    page.wait_for_function("() => document.querySelector('#poems .poems:not(.streaming) .poem-line.locked')")
    after = best_lines(page)
    assert after[1] == "明月何时照我还。" and after != before
    # the lock boxes are set by the event that follows the poem: wait for it, then read them
    page.wait_for_function("() => document.querySelector('#lock_1 input')?.checked")
    assert page.locator("#lock_1 input").is_checked() and not page.locator("#lock_6 input").is_checked()

    page.locator("#lock_6 input").check()      # a ticked line is kept as it stands
    page.locator("#regenerate").click()
    page.wait_for_function("() => document.querySelectorAll("
                           "'#poems .poems:not(.streaming) .poem-card:first-child .poem-line.locked').length === 2")
    again = best_lines(page)
    assert again[1] == after[1] and again[6] == after[6] and again != after
    page.wait_for_url("**locked=**")           # the permalink holds the locked lines too


def test_click_a_character_pick_an_alternative(context, shipped_server):
    page = open_page(context, f"{shipped_server.url}?form=七绝&seed=5")
    before = "".join(best_lines(page))
    page.locator("#poems .poem-card").first.locator("ruby[data-pos='3']").click()
    choices = page.locator("#alt_choices label")
    choices.first.wait_for()
    assert page.locator("#alt_position input").input_value() == "3"
    labels = choices.all_inner_texts()
    assert 1 <= len(labels) <= 8 and all(label.strip().endswith("%") for label in labels)
    pick = labels[1].split()[0] if len(labels) > 1 else labels[0].split()[0]
    choices.filter(has_text=labels[1] if len(labels) > 1 else labels[0]).click()
    page.locator("#alt_apply").click()
    status = page.get_by_text("换上 · put in").first
    status.wait_for()
    after = "".join(best_lines(page))
    assert after[3] == pick and after[:3] == before[:3]
    said = page.locator("#edit_status").inner_text()
    if "kept" in said:
        assert after[4:] == before[4:]
    else:
        assert "re-continued" in said
    assert "改字 edit" in page.locator("#poems .poem-card").first.inner_text()


def test_lines_stream_in_before_the_poem_is_done(context, shipped_server):
    """At the app's default 4 candidates, each click shows candidate 0's first line while the poem is still
    being written; the click -> first line time (the page's own clock) is printed, not asserted."""
    page = open_page(context, shipped_server.url)
    page.locator("#form").get_by_label("七律").check()
    page.evaluate(PROBE_JS)
    clicks = []
    for seed in (3, 4, 5):
        page.locator("#seed input").fill(str(seed))
        page.locator("#seed input").press("Tab")
        page.locator("#generate").click()
        page.wait_for_function("() => window.__click && window.__click.whole !== null")
        clicks.append(page.evaluate("window.__click"))
        page.wait_for_url(f"**seed={seed}**")  # the events after the poem are done before the next click
    first = statistics.median(c["first"] for c in clicks)
    print(f"\nstreaming 七律 x4 candidates (shipped model), median of {len(clicks)} clicks: first line "
          f"{first:.0f} ms after the click, whole poem {statistics.median(c['whole'] for c in clicks):.0f} ms; "
          f"line counts seen while streaming: {[c['lines'] for c in clicks]}")
    for c in clicks:
        assert c["lines"] and c["lines"][0] < 8 and c["first"] < c["whole"], c
    assert len(best_lines(page)) == 8


def test_theme_field_writes_a_themed_poem_and_the_permalink_keeps_it(context, client, shipped_server):
    page = open_page(context, shipped_server.url)
    page.locator("#theme textarea").fill("边塞")
    page.locator("#form").get_by_label("七绝").check()
    page.locator("#seed input").fill("5")
    page.locator("#generate").click()
    page.wait_for_url("**theme=**")
    lines = best_lines(page)
    expected = client.predict(api_name="/generate", form="七绝", theme="边塞", seed=5,
                              num_candidates=DEFAULTS["num_candidates"])["poems"][0]  # the page's default
    assert lines == expected["lines"]
    meta = page.locator("#poems .poem-card").first.locator(".poem-meta").inner_text()
    assert "边塞" in meta and all(ch in meta for ch in expected["theme"]["used"])
    assert best_lines(open_page(context, page.url)) == lines
