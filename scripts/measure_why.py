"""Measure "why this token" in a real browser (Debian chromium + Playwright): an 8-column run of
500 tokens on the page, then a click on "why this token" at its 500th token, timed in the page
from the click to the stage table in the DOM; also the bytes of the streamed and final updates.

Usage: python scripts/measure_why.py [TOKENS]   (a benchmark script, not a test: it prints, asserts nothing)
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from urllib.parse import urlencode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402

from app_server import served_app  # noqa: E402
from playground.bench import BENCH_PROMPT, eight_columns  # noqa: E402

TOKENS = int(sys.argv[1]) if len(sys.argv) > 1 else 500
REPEATS = 5
CLICK_TO_TABLE = """async ([column, step]) => {
  const tok = document.querySelector(`#pg-columns .pg-card[data-column='${column}'] .pg-tok[data-step='${step}']`);
  tok.click();
  const panel = document.querySelector('#pg-why');
  const selector = `.pg-why-trace[data-column='${column}'][data-step='${step}'] .pg-why-table`;
  const shown = new Promise((resolve) => {  // an observer, not a polling loop that would load the page
    const seen = new MutationObserver(() => {
      if (!panel.querySelector(selector)) return;
      seen.disconnect();
      const inDom = performance.now();  // then the next frame: the table laid out and painted
      requestAnimationFrame(() => setTimeout(() => resolve([inDom, performance.now()]), 0));
    });
    seen.observe(panel, {childList: true, subtree: true});
  });
  const start = performance.now();
  document.querySelector('#pg-columns .pg-alts .pg-why-btn').click();
  const [inDom, painted] = await shown;
  return [inDom - start, painted - start];
}"""

query = urlencode({"v": 2, "prompt": BENCH_PROMPT, "max_new_tokens": TOKENS, "seed": 0,
                   "columns": json.dumps([c.to_dict() for c in eight_columns()])})
with served_app() as demo, sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(demo.local_url + "?" + query)
    page.wait_for_selector("#pg-status[data-state='idle']", timeout=120_000)
    page.wait_for_timeout(1500)  # the link's settings applied
    started = time.perf_counter()
    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='done']", timeout=3_600_000)
    print(f"8 columns x {TOKENS} tokens decoded on the page in {time.perf_counter() - started:.0f} s", flush=True)
    lengths = page.evaluate("[...document.querySelectorAll('#pg-columns .pg-card')].map("
                            "c => c.querySelectorAll('.pg-tok').length)")
    column = max(range(len(lengths)), key=lambda c: (lengths[c], c))  # a column that ran to the end
    step = lengths[column] - 1
    print(f"tokens per column: {lengths}", flush=True)
    # alternate between the last two tokens: each click must wait for a table that was not there
    clicks = [page.evaluate(CLICK_TO_TABLE, [column, step - i % 2]) for i in range(2 * REPEATS)][1:]
    for name, times in (("in the DOM", [c[0] for c in clicks]), ("painted", [c[1] for c in clicks])):
        print(f"click on 'why this token' at tokens {step}-{step + 1} of column {column + 1} -> its stage table "
              f"{name}: median {statistics.median(times):.0f} ms (runs: {', '.join(f'{t:.0f}' for t in times)})")
    print(f"final columns HTML: {len(page.locator('#pg-columns').inner_html()):,} bytes; parts panel: "
          f"{len(page.locator('#pg-parts').inner_html()):,} bytes")
    browser.close()
