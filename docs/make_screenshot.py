"""Regenerate docs/screenshot.png (the README's picture of the UI) in headless Chromium.

    python docs/make_screenshot.py                        # the shipped model (checkpoints/tang-lstm)
    python docs/make_screenshot.py --model runs/mine/best --out ui.png

Starts `python app.py` on a free local port, fills the acrostic 春夏秋冬, picks 七绝, asks for
three candidates with seed 7, clicks Generate, clicks a character of the best poem to list its
alternatives and saves a full-page screenshot, then the best poem's card (docs/card.png). Uses Debian's
`chromium` through Python Playwright (never `playwright install`); only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from app_load import free_port, stop_server  # noqa: E402  (the benchmark starts and stops the server the same way)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"app.py exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    sys.exit(f"app.py did not answer within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def shoot(url: str, out: Path, chromium: str, card: Path | None = None) -> None:
    from playwright.sync_api import sync_playwright

    def local_only(route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN",
                                          device_scale_factor=1, accept_downloads=True)
            context.set_default_timeout(60_000)
            context.route("**/*", local_only)
            page = context.new_page()
            page.goto(url, wait_until="load")
            page.locator("#generate").wait_for(state="visible")
            page.locator("#acrostic textarea").fill("春夏秋冬")
            page.locator("#form").get_by_label("七绝").check()
            page.locator("#num_candidates input[type=number]").fill("3")
            page.locator("#num_candidates input[type=number]").press("Enter")
            page.locator("#seed input").fill("7")
            page.locator("#generate").click()
            page.locator("#poems .poems:not(.streaming) .poem-card").first.wait_for()
            # Writing with the poet: a click on the first poem's third character lists its alternatives.
            page.locator("#poems .poem-card").first.locator("ruby[data-pos='2']").click()
            page.locator("#alt_choices label").first.wait_for()
            page.wait_for_function("() => !document.querySelector('#card_download').disabled")
            page.wait_for_timeout(500)  # let the layout settle
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            if card is not None:  # the best poem's card, as the download button gives it
                with page.expect_download() as download:
                    page.locator("#card_download").click()
                download.value.save_as(card)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Regenerate the README screenshot of the app.")
    p.add_argument("--model", default=os.environ.get("MODEL_ID") or None,
                   help="model folder or Hub repo id (default: the app's default, checkpoints/tang-lstm)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    p.add_argument("--card", type=Path, default=REPO / "docs" / "card.png", help="where the poem card goes")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--start-timeout", type=float, default=180.0)
    args = p.parse_args(argv)

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    if args.model:
        cmd += ["--model", args.model]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("MODEL_ID", None)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_ready(proc, url, log, args.start_timeout)
                shoot(url, args.out, args.chromium, args.card)
            finally:
                stop_server(proc)
    print(f"wrote {args.out} and {args.card}")


if __name__ == "__main__":
    main()
