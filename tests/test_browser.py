"""The page in a real browser: Debian's chromium driven by Playwright (scripts/setup.sh --test installs both)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is absent (scripts/setup.sh --test installs Debian's chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")

from playground import ui  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
RUN_TIMEOUT_MS = 240_000  # the machine is shared; a hang still fails


@pytest.fixture(scope="module")
def server(real_lm):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = ui.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#pg-run", timeout=60_000)
    page.wait_for_selector("#pg-status[data-state='idle']", timeout=60_000)
    return page


def status(page) -> tuple[str, int]:
    el = page.locator("#pg-status")
    return el.get_attribute("data-state"), int(el.get_attribute("data-step"))


def set_number(page, selector: str, value) -> None:
    box = page.locator(selector)
    box.fill(str(value))
    box.press("Tab")  # the component takes the value on change
    sync_api.expect(box).to_have_value(str(value))


def test_run_streams_every_column_and_draws_the_plots(browser, server):
    page = open_page(browser, server.local_url)
    page.locator("#pg-prompt textarea").fill("The lighthouse keeper climbed the stairs and")
    set_number(page, "#pg-max-tokens input[type=number]", 12)
    checked = page.locator("#pg-samplers input[type=checkbox]:checked").count()
    assert checked == len(ui.SAMPLERS)  # default: every available sampler

    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)
    cards = page.locator("#pg-columns .pg-card")
    assert cards.count() == checked
    for i in range(checked):
        card = cards.nth(i)
        assert card.locator(".pg-tok").count() >= 1
        assert card.locator(".pg-text").inner_text().startswith("The lighthouse keeper climbed the stairs and")
        assert "distinct-2" in card.locator(".pg-metrics").inner_text()
    title = page.locator("#pg-columns .pg-tok").first.get_attribute("title")
    assert "H = " in title and "R = " in title and "top-5" in title

    page.wait_for_selector("#pg-signals .js-plotly-plot .scatterlayer .trace", timeout=60_000)
    # entropy and R panels: one trace per column each (the alpha panel adds one per alpha column)
    assert page.locator("#pg-signals .scatterlayer .trace").count() >= 2 * checked
    assert page.locator("#pg-signals .legend .traces").count() == checked
    page.wait_for_selector("#pg-heatmap .js-plotly-plot .hm", timeout=60_000)
    assert page.locator("#pg-heatmap .gtitle").text_content().endswith(": greedy")
    page.locator("#pg-heat-column input").click()  # choosing another column redraws the heatmap
    page.get_by_role("option", name="phase_slip").click()
    page.wait_for_function("() => document.querySelector('#pg-heatmap .gtitle')?.textContent.endsWith(': phase_slip')",
                           timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
    # the metrics table: a header row and one row per column
    assert page.locator("#pg-metrics [role=grid]").get_attribute("aria-rowcount") == str(checked + 1)
    page.close()


def test_share_link_restores_the_settings(browser, server):
    page = open_page(browser, server.local_url)
    page.locator("#pg-prompt textarea").fill("A share-link prompt: \"quotes\" & ampersands")
    set_number(page, "#pg-seed input", 1234)
    set_number(page, "#pg-max-tokens input[type=number]", 20)
    page.locator("#pg-samplers label", has_text="greedy").click()  # untick greedy
    page.locator("#pg-acc-temperature").get_by_text("temperature settings").click()
    set_number(page, "#pg-set-temperature-temperature input", 0.55)
    page.locator("#pg-chat input[type=checkbox]").check()

    page.locator("#pg-share-btn").click()
    share = page.locator("#pg-share textarea, #pg-share input").first
    page.wait_for_function("el => el.value.includes('seed=1234')", arg=share.element_handle(), timeout=30_000)
    link = share.input_value()
    assert link.startswith(server.local_url.rstrip("/"))
    assert "temperature.temperature=0.55" in link and "greedy" not in link
    page.close()

    restored = open_page(browser, link)
    restored.wait_for_function(
        "() => document.querySelector('#pg-prompt textarea').value.startsWith('A share-link')", timeout=30_000)
    assert restored.locator("#pg-prompt textarea").input_value() == "A share-link prompt: \"quotes\" & ampersands"
    assert restored.locator("#pg-seed input").input_value() == "1234"
    assert restored.locator("#pg-max-tokens input[type=number]").input_value() == "20"
    ticked = [restored.locator("#pg-samplers label").nth(i).inner_text().strip()
              for i in range(restored.locator("#pg-samplers label").count())
              if restored.locator("#pg-samplers input[type=checkbox]").nth(i).is_checked()]
    assert ticked == [name for name in ui.SAMPLERS if name != "greedy"]
    assert restored.locator("#pg-chat input[type=checkbox]").is_checked()
    restored.locator("#pg-acc-temperature").get_by_text("temperature settings").click()
    sync_api.expect(restored.locator("#pg-set-temperature-temperature input")).to_have_value("0.55")
    restored.close()


def error_badges(page) -> int:
    """How many "Error" badges show on the page's components (the toast aside)."""
    found = page.locator(":not(.toast-body) > * >> text='Error'")
    return sum(found.nth(i).evaluate("""e => { if (e.closest('.toast-body')) return false;
        for (let n = e; n; n = n.parentElement) if (getComputedStyle(n).opacity === '0') return false;
        return e.getClientRects().length > 0; }""") for i in range(found.count()))


def test_a_refused_run_is_said_once_and_the_last_run_stays(browser, server):
    page = open_page(browser, server.local_url + "?prompt=The+lighthouse&samplers=greedy,temperature&max_new_tokens=4")
    page.wait_for_function("() => document.querySelector('#pg-prompt textarea').value === 'The lighthouse'")
    sync_api.expect(page.locator("#pg-prompt-count")).to_contain_text("prompt: 2 tokens of at most 8,192")
    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)
    cards = page.locator("#pg-columns .pg-columns").inner_html()

    page.locator("#pg-prompt textarea").fill("")
    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='error']", timeout=60_000)
    sync_api.expect(page.locator("#pg-status")).to_contain_text("the prompt is empty")
    sync_api.expect(page.locator(".toast-body")).to_have_count(1)
    assert error_badges(page) == 0  # the toast alone: no "Error" badge on any output
    assert page.locator("#pg-columns .pg-columns").inner_html() == cards  # the last run's columns are still there
    page.locator(".toast-body .toast-close").click()
    sync_api.expect(page.locator(".toast-body")).to_have_count(0)

    page.locator("#pg-prompt textarea").fill("The lighthouse")
    page.locator("#pg-acc-temperature").get_by_text("temperature settings").click()
    set_number(page, "#pg-set-temperature-top_p input", 1.5)
    page.locator("#pg-run").click()
    sync_api.expect(page.locator("#pg-status")).to_contain_text("temperature.top_p must be in (0, 1], got 1.5")
    sync_api.expect(page.locator(".toast-body")).to_have_count(1)
    assert error_badges(page) == 0
    assert page.locator("#pg-columns .pg-columns").inner_html() == cards
    assert page.locator("#pg-metrics [role=grid]").get_attribute("aria-rowcount") == "3"  # the table stays too
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "refused-run.png"), full_page=True)

    page.locator("#pg-prompt textarea").fill("word " * 9000)  # the counter follows the typing
    sync_api.expect(page.locator("#pg-prompt-count")).to_contain_text(
        "prompt: 9,001 tokens: over this playground's cap of 8,192")
    page.close()


TYPE_AT_ONCE = """async ([header, selector, value]) => {
  // a user who opens the accordion and types at once: the first frame in which the control exists
  document.querySelector(header).click();
  for (let frame = 0; frame < 600; frame++) {
    const box = document.querySelector(selector);
    if (box) {
      const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
      box.focus();
      setter.call(box, value);
      box.dispatchEvent(new Event('input', {bubbles: true}));
      box.dispatchEvent(new Event('change', {bubbles: true}));
      box.blur();
      return frame;
    }
    await new Promise(requestAnimationFrame);
  }
  throw new Error('the control never appeared');
}"""


def test_a_setting_typed_at_once_after_opening_its_accordion_is_kept_and_used(browser, server):
    # keep the server busy: another visitor's long run streams meanwhile
    busy = open_page(browser, server.local_url + "?prompt=Tell+me+a+long+story&samplers=greedy,phase_slip"
                                                 "&max_new_tokens=1024")
    busy.wait_for_function("() => document.querySelector('#pg-prompt textarea').value === 'Tell me a long story'")
    busy.locator("#pg-run").click()
    busy.wait_for_function("() => +document.querySelector('#pg-status').dataset.step >= 1", timeout=RUN_TIMEOUT_MS)
    try:
        page = open_page(browser, server.local_url + "?samplers=temperature&max_new_tokens=4&seed=3")
        page.wait_for_function("() => document.querySelector('#pg-max-tokens input[type=number]').value === '4'")
        field = "#pg-set-temperature-temperature input"
        page.evaluate(TYPE_AT_ONCE, ["#pg-acc-temperature button", field, "0.55"])
        page.wait_for_timeout(1500)  # let the page settle: mounts, effects, the load event
        sync_api.expect(page.locator(field)).to_have_value("0.55")
    finally:  # runs on one model take turns: end the other visitor's run before ours
        busy.locator("#pg-stop").click()
        busy.wait_for_selector("#pg-status[data-state='stopped']", timeout=60_000)
        busy.close()
    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)
    # the run echoes the settings it used in the column's header
    sync_api.expect(page.locator("#pg-columns .pg-card .pg-settings").first).to_have_text("temperature · temperature=0.55")
    sync_api.expect(page.locator(field)).to_have_value("0.55")
    page.close()


def test_stop_stops_the_server_decoding(browser, server, real_lm):
    page = open_page(browser, server.local_url + "?prompt=Tell+me+a+long+story&samplers=greedy,temperature"
                                                 "&max_new_tokens=1024")
    page.wait_for_function("() => document.querySelector('#pg-prompt textarea').value === 'Tell me a long story'")
    page.locator("#pg-run").click()
    page.wait_for_function(
        "() => +document.querySelector('#pg-status').dataset.step >= 3", timeout=RUN_TIMEOUT_MS)
    page.locator("#pg-stop").click()
    page.wait_for_selector("#pg-status[data-state='stopped']", timeout=60_000)
    _, step = status(page)
    assert 3 <= step < 1024
    # nothing decodes any more: the engine left its loop and released the model
    assert real_lm.lock.acquire(timeout=30)
    real_lm.lock.release()
    time.sleep(2)
    assert status(page) == ("stopped", step)  # the step count stopped growing
    assert page.locator("#pg-columns .pg-state", has_text="stopped").count() == 2
    page.close()
