"""Measure the web playground in a real browser (Debian chromium + Playwright), in one run:

* click -> first streamed token (in-page clock: click event -> first token span in the DOM)
* a streamed UI run (click -> done) over the same Engine run in the same process (the CLI path)
* page load (navigation timings) and the time until a share link's settings are applied
* click on a token's alternative -> the branch run's first streamed token (in-page clock)

Usage: python scripts/measure_ui.py   (a benchmark script, not a test: it prints, asserts nothing)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import socket, statistics, time, json
from urllib.parse import urlencode
from playground import ui
from playground.engine import ColumnSpec, Engine, RunOptions
from playground.models import load_model
from playwright.sync_api import sync_playwright

PROMPT = "The ancient door creaked open"
TOKENS = 48
REPEATS = 3
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
demo = ui.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
lm = load_model()
names = list(ui.SAMPLERS)
url = demo.local_url + "?" + urlencode({"prompt": PROMPT, "max_new_tokens": TOKENS, "seed": 0})

def engine_first():
    t = time.perf_counter()
    it = Engine(lm).stream(PROMPT, [ColumnSpec(n) for n in names], RunOptions(seed=0, max_new_tokens=TOKENS))
    next(it); first = time.perf_counter() - t
    it.close()
    return first

def engine_run():
    t = time.perf_counter()
    run = Engine(lm).run(PROMPT, [ColumnSpec(n) for n in names], RunOptions(seed=0, max_new_tokens=TOKENS))
    return time.perf_counter() - t, run.step

with sync_playwright() as p:
    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
    def open_page():
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        t = time.perf_counter()
        page.goto(url)
        page.wait_for_function("() => document.querySelector('#pg-prompt textarea')?.value === %s" % json.dumps(PROMPT), timeout=60000)
        ready = time.perf_counter() - t
        nav = page.evaluate("() => { const n = performance.getEntriesByType('navigation')[0]; return [n.domContentLoadedEventEnd, n.loadEventEnd]; }")
        return page, ready, nav
    def ui_run(page):
        # in-page clock: click (capture phase) -> first token span in the DOM (MutationObserver)
        page.wait_for_selector("#pg-run button, button#pg-run, #pg-run", timeout=60000)
        page.evaluate("""() => { window.__t = {};
          document.querySelector('#pg-run').addEventListener('click', () => { window.__t.click = performance.now(); }, true);
          new MutationObserver((m, obs) => { if (document.querySelector('#pg-columns .pg-tok')) {
              window.__t.first = performance.now(); obs.disconnect(); } })
            .observe(document.querySelector('#pg-columns'), {childList: true, subtree: true}); }""")
        t = time.perf_counter()
        page.locator("#pg-run").click()
        page.wait_for_selector("#pg-columns .pg-tok", timeout=120000)
        js = page.evaluate("() => window.__t.first - window.__t.click") / 1000
        print(f"  click->first token: in-page {js:.3f} s, playwright wall {time.perf_counter() - t:.3f} s")
        first = js
        page.wait_for_selector("#pg-status[data-state='done']", timeout=600000)
        total = time.perf_counter() - t
        return first, total
    def branch_first(page, column: int = 1, step: int = 2):
        # in-page clock: click on an alternative (capture phase) -> the branch's first cards in the DOM
        page.evaluate("""() => { window.__b = {};
          document.querySelector('#pg-columns').addEventListener('click', (e) => {
              if (e.target.closest('.pg-alt')) window.__b.click = performance.now(); }, true);
          new MutationObserver((m, obs) => { if (document.querySelector('#pg-columns .pg-branch-token')) {
              window.__b.first = performance.now(); obs.disconnect(); } })
            .observe(document.querySelector('#pg-columns'), {childList: true, subtree: true}); }""")
        page.locator(f"#pg-columns .pg-card[data-column='{column}'] .pg-tok").nth(step).click()
        page.locator("#pg-columns .pg-alts .pg-alt:not(.pg-alt-current)").first.click()
        page.wait_for_selector("#pg-columns .pg-branch-token", timeout=120000)
        first = page.evaluate("() => window.__b.first - window.__b.click") / 1000
        page.wait_for_selector("#pg-crumb", timeout=120000)
        page.wait_for_selector("#pg-status[data-state='done']", timeout=600000)
        return first
    page, _, _ = open_page(); ui_run(page); branch_first(page); page.close(); engine_run()  # warm-up
    loads, navs, firsts, ui_totals, eng_totals, eng_firsts, branch_firsts = [], [], [], [], [], [], []
    for _ in range(REPEATS):
        page, ready, nav = open_page(); loads.append(ready); navs.append(nav)
        first, total = ui_run(page); firsts.append(first); ui_totals.append(total)
        branch_firsts.append(branch_first(page)); page.close()
        eng_totals.append(engine_run()[0])
        eng_firsts.append(engine_first())
    b.close()

# the same streamed run through the API (gradio_client, no browser): the server's own cost, since on
# this 2-core machine a local browser rendering the stream competes with the decoding for the cores
from gradio_client import Client  # noqa: E402

client = Client(demo.local_url, verbose=False)
params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/run"]["parameters"]
run_args = {p["parameter_name"]: p.get("parameter_default") for p in params}
run_args.update(prompt_v=PROMPT, max_v=TOKENS, seed_v=0)


def api_run():
    t = time.perf_counter()
    client.submit(api_name="/run", **run_args).result()
    return time.perf_counter() - t


api_totals, api_eng = [], []
for _ in range(REPEATS):
    api_totals.append(api_run())
    api_eng.append(engine_run()[0])
demo.close()
med = statistics.median
print(f"columns={names} tokens={TOKENS} repeats={REPEATS}")
print(f"page ready (goto -> settings applied): median {med(loads):.2f} s  all {[round(x,2) for x in loads]}")
print(f"navigation DOMContentLoaded/load (ms): {navs}")
print(f"click -> first streamed token: median {med(firsts):.2f} s  all {[round(x,2) for x in firsts]}")
print(f"click on an alternative -> branch's first streamed token: median {med(branch_firsts):.2f} s  "
      f"all {[round(x,2) for x in branch_firsts]}")
print(f"engine alone, start -> first yield: median {med(eng_firsts):.2f} s  all {[round(x,2) for x in eng_firsts]}")
print(f"UI run (click -> done): {[round(x,2) for x in ui_totals]}  engine run: {[round(x,2) for x in eng_totals]}")
ratios = [u / e for u, e in zip(ui_totals, eng_totals)]
print(f"UI/engine ratio per pair: {[round(r,3) for r in ratios]}  median {med(ratios):.3f}  ratio of medians {med(ui_totals)/med(eng_totals):.3f}")
print(f"API-streamed run: {[round(x,2) for x in api_totals]}  engine run: {[round(x,2) for x in api_eng]}  "
      f"best/best {min(api_totals)/min(api_eng):.3f}  ratio of medians {med(api_totals)/med(api_eng):.3f}")
