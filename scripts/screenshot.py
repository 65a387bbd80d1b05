"""The README's picture of the page: run a short prompt as a user would, check the page, save a PNG.

    python scripts/screenshot.py                       # serve the app here, write assets/screenshot.png
    python scripts/screenshot.py --url http://127.0.0.1:7860/ --out /tmp/page.png

Drives Debian's chromium (/usr/bin/chromium) through Playwright; scripts/setup.sh --test installs both.
"""
from __future__ import annotations

import argparse
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
DEFAULT_OUT = ROOT / "assets" / "screenshot.png"
PROMPT = "The old lighthouse keeper climbed the stairs one last time, and"
TOKENS = 24
VIEWPORT = {"width": 1400, "height": 1000}
RUN_TIMEOUT_MS = 240_000  # a shared 2-core machine; a hang still fails


class PageCheckFailed(RuntimeError):
    """The page did not show what a finished run shows: no picture is written."""


@contextmanager
def served_app() -> Iterator[str]:
    """The real app (bundled model, warm) on a free local port; yields its URL."""
    sys.path.insert(0, str(ROOT))
    from playground import ui

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = ui.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


def check(condition: bool, what: str) -> None:
    if not condition:
        raise PageCheckFailed(f"the page does not show {what}")


def wait_for(page, selector: str, what: str, timeout_ms: int) -> None:
    """Wait until ``selector`` is on the page; a page that never shows it fails the check."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector(selector, timeout=timeout_ms)
    except PlaywrightTimeout:
        raise PageCheckFailed(f"the page does not show {what} within {timeout_ms / 1000:.0f} s "
                              f"({selector})") from None


def run_and_check(page, prompt: str, tokens: int, load_timeout_ms: int = 60_000) -> int:
    """Type the prompt, set the tokens, press Run, wait for the end; check cards, metrics and plots.

    Returns the number of columns shown."""
    wait_for(page, "#pg-run", "the page's controls", load_timeout_ms)
    wait_for(page, "#pg-status[data-state='idle']", "the page's controls ready", load_timeout_ms)
    page.locator("#pg-prompt textarea").fill(prompt)
    box = page.locator("#pg-max-tokens input[type=number]")
    box.fill(str(tokens))
    box.press("Tab")  # the component takes the value on change
    page.locator("#pg-run").click()
    wait_for(page, "#pg-status[data-state='done']", "a finished run", RUN_TIMEOUT_MS)
    wait_for(page, "#pg-signals .js-plotly-plot .scatterlayer .trace", "the plots", 60_000)
    wait_for(page, "#pg-heatmap .js-plotly-plot .hm", "the heatmap", 60_000)
    cards = page.locator("#pg-columns .pg-card")
    count = cards.count()
    check(count >= 2, f"the columns of a run (found {count} cards)")
    for i in range(count):
        card = cards.nth(i)
        check(card.locator(".pg-text").inner_text().startswith(prompt), f"the prompt in column {i + 1}")
        check(card.locator(".pg-tok").count() >= 1, f"generated tokens in column {i + 1}")
        check("distinct-2" in card.locator(".pg-metrics").inner_text(), f"the metrics of column {i + 1}")
    check(page.locator("#pg-signals .legend .traces").count() == count, "one plot legend entry per column")
    check("error" not in page.locator("#pg-status").inner_text().lower(), "a status line free of errors")
    return count


def take_screenshot(out: Path, url: str | None = None, prompt: str = PROMPT, tokens: int = TOKENS,
                    load_timeout_ms: int = 60_000) -> Path:
    """Open the page (the given URL, or the app served here), run, check, and write the page as a PNG."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise PageCheckFailed(f"{CHROMIUM} is absent: scripts/setup.sh --test installs Debian's chromium")
    with (served_app() if url is None else _given(url)) as address, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(address)
            run_and_check(page, prompt, tokens, load_timeout_ms)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return out


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="a running app (default: serve one here)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--tokens", type=int, default=TOKENS, help="new tokens per column")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {take_screenshot(args.out, args.url, args.prompt, args.tokens)}")
    except PageCheckFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
