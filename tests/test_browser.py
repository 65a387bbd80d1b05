"""The page in a real browser: Debian's chromium driven by Playwright (scripts/setup.sh --test installs both)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is absent (scripts/setup.sh --test installs Debian's chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")

from playground import ui  # noqa: E402

from app_server import served_app  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
RUN_TIMEOUT_MS = 240_000  # the machine is shared; a hang still fails


@pytest.fixture(scope="module")
def server(real_lm):
    with served_app() as demo:
        yield demo


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
    checked = len(table_cells(page))
    assert checked == 4  # default: the four original samplers, one column each

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
    assert "H = " in title and "R = " in title and "top-5" in title and "p sampler" in title and "kept" in title

    page.wait_for_selector("#pg-signals .js-plotly-plot .scatterlayer .trace", timeout=60_000)
    # entropy, R and support panels: one trace per column each (each alpha panel adds one per alpha column)
    assert page.locator("#pg-signals .scatterlayer .trace").count() >= 3 * checked
    assert page.locator("#pg-signals .legend .traces").count() == checked
    page.wait_for_selector("#pg-heatmap .js-plotly-plot .hm", timeout=60_000)
    assert page.locator("#pg-heatmap .gtitle").text_content().endswith(": greedy")
    page.locator("#pg-heat-column input").click()  # choosing another column redraws the heatmap
    page.get_by_role("option", name="phase_slip", exact=True).click()
    page.wait_for_function("() => document.querySelector('#pg-heatmap .gtitle')?.textContent.endsWith(': phase_slip')",
                           timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
    # the metrics table: a header row and one row per column
    assert page.locator("#pg-metrics [role=grid]").get_attribute("aria-rowcount") == str(checked + 1)
    page.close()


def edit_cell(page, row: int, column: int, text: str, commit: bool = True) -> None:
    """Type into a cell of the column list as a user does: double-click, replace, Enter (or just leave)."""
    page.locator(f'#pg-column-list [data-testid="cell-{row}-{column}"]').dblclick()
    page.keyboard.press("Control+a")
    page.keyboard.type(text)
    if commit:
        page.keyboard.press("Enter")


ROW_COUNT = "document.querySelectorAll('#pg-column-list [data-testid^=\"cell-\"][data-testid$=\"-0\"]').length"


def table_cells(page) -> list[list[str]]:
    """The column list as the page shows it: [#, sampler, settings, label] per row."""
    return page.evaluate(f"""() => [...Array({ROW_COUNT}).keys()].map(r => [0, 1, 2, 3].map(c =>
        document.querySelector(`#pg-column-list [data-testid="cell-${{r}}-${{c}}"]`).innerText.trim()))""")


def column_texts(page) -> list[str]:
    cards = page.locator("#pg-columns .pg-card")
    return ["".join(cards.nth(i).locator(".pg-tok").all_inner_texts()) for i in range(cards.count())]


def column_labels(page) -> list[str]:
    return page.locator("#pg-columns .pg-card .pg-label").all_inner_texts()


def press(page, selector: str) -> None:
    """Click a column-list button and wait for the table's rows to change in number."""
    before = len(table_cells(page))
    page.locator(selector).click()
    page.wait_for_function(f"() => {ROW_COUNT} !== {before}", timeout=30_000)


def test_configurations_sweep_branch_back_and_share_as_a_user_would(browser, server):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(server.local_url)
    page.wait_for_selector("#pg-status[data-state='idle']", timeout=60_000)
    page.locator("#pg-prompt textarea").fill("The lighthouse keeper climbed the stairs and")
    set_number(page, "#pg-max-tokens input[type=number]", 8)
    set_number(page, "#pg-seed input", 7)
    # a preset column: min-p 0.1 at T = 1
    page.locator("#pg-add-choice input").click()
    page.get_by_role("option", name="preset min-p-0.1", exact=False).click()
    press(page, "#pg-add")
    assert table_cells(page)[-1] == ["5", "temperature", "temperature=1, top_k=0, top_p=1, min_p=0.1", "min-p-0.1"]
    # a duplicate of column 2 (temperature), then a sweep of that duplicate's temperature
    set_number(page, "#pg-column-number input", 2)
    press(page, "#pg-duplicate")
    assert [row[1] for row in table_cells(page)] == ["greedy", "temperature", "temperature", "phase_slip",
                                                    "adaptive_entropy", "temperature"]
    set_number(page, "#pg-column-number input", 3)
    page.locator("#pg-sweep-text textarea, #pg-sweep-text input").first.fill("temperature = 0.5, 1.2")
    press(page, "#pg-sweep")
    cells = table_cells(page)
    assert [row[3] for row in cells[2:4]] == ["temperature · temperature=0.5", "temperature · temperature=1.2"]
    assert len(cells) == 7
    page.screenshot(path=str(ARTIFACTS / "walk-1-columns.png"), full_page=False)

    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)
    labels = column_labels(page)
    assert labels == ["greedy", "temperature", "temperature · temperature=0.5", "temperature · temperature=1.2",
                      "phase_slip", "adaptive_entropy", "min-p-0.1"]
    parent_texts = column_texts(page)
    assert parent_texts[2] != parent_texts[3]  # T 0.5 and T 1.2 part ways within 8 tokens at this seed
    page.wait_for_selector("#pg-heatmap .js-plotly-plot .hm", timeout=60_000)
    assert page.locator("#pg-signals .legend .traces").count() == 7  # the plots name the columns by label
    root_link = page.locator("#pg-share textarea, #pg-share input").first.input_value()
    assert "columns=" in root_link and "branch=" not in root_link
    page.screenshot(path=str(ARTIFACTS / "walk-2-run.png"), full_page=True)

    # click a token of column 4: its alternatives, with the model's p and the sampler's p
    token = page.locator("#pg-columns .pg-card[data-column='3'] .pg-tok").nth(2)
    replaced = token.inner_text()
    token.click()
    menu = page.locator("#pg-columns .pg-alts")
    sync_api.expect(menu.locator(".pg-alt")).to_have_count(5)
    assert "p model" in menu.inner_text() and "p sampler" in menu.inner_text()
    page.screenshot(path=str(ARTIFACTS / "walk-3-alternatives.png"), full_page=False)
    alternative = menu.locator(".pg-alt:not(.pg-alt-current)").first
    new_text = alternative.locator(".pg-alt-text").inner_text().strip("'")
    clicked = page.evaluate("() => performance.now()")
    alternative.click()
    page.wait_for_function("""() => { const cards = document.querySelectorAll('#pg-columns .pg-card');
        return document.querySelector('#pg-crumb') && cards.length === 7 &&
               [...cards].every(c => c.querySelectorAll('.pg-tok').length <= 1); }""", timeout=RUN_TIMEOUT_MS)
    first_token_ms = page.evaluate("() => performance.now()") - clicked
    page.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)
    (ARTIFACTS / "branch-latency.txt").write_text(f"click on an alternative -> first streamed token: "
                                                  f"{first_token_ms:.0f} ms (7 columns, default model)\n")
    crumb = page.locator("#pg-crumb").inner_text()
    assert "column 4, token 3" in crumb and replaced.strip() in crumb and new_text.replace("⏎", "") in crumb
    assert page.locator("#pg-columns .pg-branch-token").count() == 7
    branch_texts = column_texts(page)
    assert branch_texts != parent_texts and column_labels(page) == labels
    branch_link = page.locator("#pg-share textarea, #pg-share input").first.input_value()
    assert "branch=" in branch_link
    page.locator("#pg-share button").first.click()  # the copy button
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == branch_link
    page.screenshot(path=str(ARTIFACTS / "walk-4-branch.png"), full_page=True)

    # Back: the parent run again, as it was, without decoding anything
    page.locator("#pg-back").click()
    sync_api.expect(page.locator("#pg-crumb")).to_have_count(0)
    assert column_texts(page) == parent_texts
    sync_api.expect(page.locator("#pg-back")).to_be_hidden()
    sync_api.expect(page.locator("#pg-share textarea, #pg-share input").first).to_have_value(root_link)
    page.screenshot(path=str(ARTIFACTS / "walk-5-back.png"), full_page=False)
    # the menu without a mouse: focus a token, Enter opens it on its first alternative, Escape closes it
    page.locator("#pg-columns .pg-card[data-column='0'] .pg-tok").first.focus()
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#pg-columns .pg-alts .pg-alt").first).to_be_focused()
    page.keyboard.press("Escape")
    sync_api.expect(page.locator("#pg-columns .pg-alts")).to_have_count(0)
    context.close()

    # the links, in fresh pages: the column list comes back and Run reproduces the texts
    for link, texts, is_branch in ((root_link, parent_texts, False), (branch_link, branch_texts, True)):
        fresh = open_page(browser, link)
        fresh.wait_for_function("() => " + ROW_COUNT + " === 7")
        assert table_cells(fresh) == cells
        assert (fresh.locator("#pg-crumb").count() == 1) == is_branch
        fresh.locator("#pg-run").click()
        fresh.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)
        assert column_labels(fresh) == labels and column_texts(fresh) == texts
        if is_branch:  # the branch survived its own link's prompt; a new prompt leaves it
            sync_api.expect(fresh.locator("#pg-crumb")).to_have_count(1)
            fresh.locator("#pg-prompt textarea").fill("Another prompt")
            sync_api.expect(fresh.locator("#pg-crumb")).to_have_count(0)
            sync_api.expect(fresh.locator("#pg-back")).to_be_hidden()
        fresh.close()


def test_an_old_style_link_still_restores_its_samplers_and_settings(browser, server):
    page = open_page(browser, server.local_url + "?prompt=Hi&samplers=greedy,temperature&temperature.temperature=0.55"
                                                 "&seed=12&max_new_tokens=5&chat=1")
    page.wait_for_function("() => " + ROW_COUNT + " === 2")
    assert table_cells(page) == [["1", "greedy", "", ""], ["2", "temperature", "temperature=0.55", ""]]
    assert page.locator("#pg-seed input").input_value() == "12"
    assert page.locator("#pg-chat input[type=checkbox]").is_checked()
    page.close()


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
    edit_cell(page, 1, 2, "top_p=1.5")
    page.locator("#pg-run").click()
    sync_api.expect(page.locator("#pg-status")).to_contain_text(
        "column 2: temperature.top_p must be in (0, 1], got 1.5")
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


def test_a_setting_typed_in_the_column_list_and_run_at_once_is_used(browser, server):
    # keep the server busy: another visitor's long run streams meanwhile
    busy = open_page(browser, server.local_url + "?prompt=Tell+me+a+long+story&samplers=greedy,phase_slip"
                                                 "&max_new_tokens=1024")
    busy.wait_for_function("() => document.querySelector('#pg-prompt textarea').value === 'Tell me a long story'")
    busy.locator("#pg-run").click()
    busy.wait_for_function("() => +document.querySelector('#pg-status').dataset.step >= 1", timeout=RUN_TIMEOUT_MS)
    try:
        page = open_page(browser, server.local_url + "?samplers=temperature&max_new_tokens=4&seed=3")
        page.wait_for_function("() => " + ROW_COUNT + " === 1")
        edit_cell(page, 0, 2, "temperature=0.55", commit=False)  # no Enter: the user clicks Run straight away
        edit_cell(page, 0, 3, "cool", commit=False)
    finally:  # runs on one model take turns: end the other visitor's run before ours
        busy.locator("#pg-stop").click()
        busy.wait_for_selector("#pg-status[data-state='stopped']", timeout=60_000)
        busy.close()
    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)
    # the run echoes the settings it used in the column's header
    sync_api.expect(page.locator("#pg-columns .pg-card .pg-settings").first).to_have_text("temperature · temperature=0.55")
    assert column_labels(page) == ["cool"]
    assert table_cells(page) == [["1", "temperature", "temperature=0.55", "cool"]]
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


def refused(page, selector: str, message: str, cells: list[list[str]]) -> None:
    """Click a control whose action is refused: one toast names the problem, and the list keeps every cell."""
    page.locator(selector).click()
    toast = page.locator(".toast-body")
    sync_api.expect(toast).to_have_count(1)
    sync_api.expect(toast).to_contain_text(message)
    assert error_badges(page) == 0  # the toast alone: the column list shows no "Error" box
    assert table_cells(page) == cells
    toast.locator(".toast-close").click()
    sync_api.expect(toast).to_have_count(0)


def test_a_refused_column_edit_is_said_once_and_the_list_stays_as_typed(browser, server):
    page = open_page(browser, server.local_url)
    edit_cell(page, 0, 3, "mine")
    edit_cell(page, 1, 2, "temperature=0.7")
    page.locator("#pg-header").click()  # leave the cell (a selected cell shows its menu button)
    cells = table_cells(page)
    assert cells[:2] == [["1", "greedy", "", "mine"], ["2", "temperature", "temperature=0.7", ""]]
    set_number(page, "#pg-column-number input", 6)
    refused(page, "#pg-duplicate", "choose a column number in 1..4, got 6", cells)
    refused(page, "#pg-remove", "choose a column number in 1..4, got 6", cells)

    page.locator("#pg-add-choice input").click()
    page.get_by_role("option", name="temperature (defaults)", exact=True).click()
    for _ in range(4):
        press(page, "#pg-add")
    cells = table_cells(page)
    assert len(cells) == 8 and cells[:2] == [["1", "greedy", "", "mine"], ["2", "temperature", "temperature=0.7", ""]]
    refused(page, "#pg-add", "at most 8 columns per run; remove one first", cells)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#pg-add").click()  # once more, for the picture: the toast over the full list
    sync_api.expect(page.locator(".toast-body")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "refused-add.png"), full_page=False)
    page.locator(".toast-body .toast-close").click()
    set_number(page, "#pg-column-number input", 2)
    refused(page, "#pg-duplicate", "at most 8 columns per run; remove one first", cells)
    sweep = page.locator("#pg-sweep-text textarea, #pg-sweep-text input").first
    sweep.fill("warmth = 1, 2")
    refused(page, "#pg-sweep", "unknown setting temperature.warmth", cells)
    sweep.fill("top_p = 0.5, 1.5")
    refused(page, "#pg-sweep", "temperature.top_p must be in (0, 1], got 1.5", cells)

    edit_cell(page, 7, 1, "nope")  # a bad sampler: the share link is refused and keeps its box
    page.locator("#pg-header").click()
    cells = table_cells(page)
    refused(page, "#pg-share-btn", "column 8: unknown sampler 'nope'", cells)
    sync_api.expect(page.locator("#pg-share textarea, #pg-share input").first).to_have_value("")
    page.close()


def test_a_link_with_bad_parameters_warns_and_applies_the_rest(browser, server):
    page = open_page(browser, server.local_url + "?prompt=Hi&seed=x&max_new_tokens=5000&samplers=greedy,bogus"
                                                 "&branch=%7Bnot+json")
    page.wait_for_function("() => " + ROW_COUNT + " === 1")
    toasts = page.locator(".toast-body")
    sync_api.expect(toasts).to_have_count(1)  # one toast names every parameter it could not apply
    said = toasts.inner_text()
    for part in ("seed must be an integer", "max_new_tokens out of range: 5000",
                 "unknown sampler(s) in the link: bogus", "the link's branch point was not restored"):
        assert part in said
    assert error_badges(page) == 0
    assert table_cells(page) == [["1", "greedy", "", ""]]
    assert page.locator("#pg-prompt textarea").input_value() == "Hi"
    assert status(page) == ("idle", 0)
    page.close()


def test_a_stop_while_the_run_waits_in_the_queue_ends_it_and_keeps_the_last_run(browser, server):
    from gradio_client import Client

    page = open_page(browser, server.local_url + "?prompt=The+lighthouse&samplers=greedy&max_new_tokens=4")
    page.wait_for_function("() => document.querySelector('#pg-prompt textarea').value === 'The lighthouse'")
    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)
    cards = page.locator("#pg-columns .pg-columns").inner_html()
    from playground.ui.page import concurrency

    visitors = [Client(server.local_url, verbose=False) for _ in range(concurrency())]  # every decoding slot held
    table = {"headers": ui.HEADERS, "data": [["1", "greedy", "", ""]]}
    busy = [v.submit("Tell me a long story", "default", False, table, 1024, 0, api_name="/run") for v in visitors]
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
        while not all(job.outputs() for job in busy):  # every slot streams: the page's run must queue
            assert time.monotonic() < deadline
            time.sleep(0.2)
        page.locator("#pg-run").click()
        time.sleep(2)  # the run has joined the queue
        page.locator("#pg-stop").click()
    finally:
        for visitor in visitors:
            visitor.predict(api_name="/stop")
    page.wait_for_selector("#pg-status[data-state='stopped']", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(page.locator("#pg-status")).to_contain_text("stopped before it started")
    assert status(page) == ("stopped", 0)
    assert page.locator("#pg-columns .pg-columns").inner_html() == cards  # the last run's columns stay
    assert error_badges(page) == 0
    for job in busy:
        assert 'data-state="stopped"' in str(job.result(timeout=RUN_TIMEOUT_MS / 1000)[1])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "stopped-before-start.png"), full_page=False)
    page.close()


def test_why_this_token_and_where_the_columns_part_as_a_user_would(browser, server):
    page = open_page(browser, server.local_url)
    page.locator("#pg-prompt textarea").fill("The lighthouse keeper climbed the stairs and")
    set_number(page, "#pg-max-tokens input[type=number]", 12)
    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)

    token = page.locator("#pg-columns .pg-card[data-column='1'] .pg-tok").nth(2)  # temperature, token 3
    chosen_text = token.inner_text()
    token.click()
    why = page.locator("#pg-columns .pg-alts .pg-why-btn")
    why.focus()
    start = time.perf_counter()
    page.keyboard.press("Enter")  # reachable by keyboard: the menu's buttons take Enter
    page.wait_for_selector("#pg-why .pg-why-trace[data-column='1'][data-step='2'] .pg-why-table", timeout=60_000)
    print(f"why this token: table shown {1000 * (time.perf_counter() - start):.0f} ms after the key press")
    table = page.locator("#pg-why .pg-why-table")
    stages = table.locator("thead .pg-why-stage").all_inner_texts()
    assert stages == ["clean", "temperature", "top_k", "top_p"]  # the temperature column's defaults
    chosen = table.locator("tr.pg-why-chosen")
    assert chosen.count() == 1 and chosen_text.strip() in chosen.locator("th").inner_text()
    assert chosen.locator("td.pg-why-removed").count() == 0  # the chosen token survives every stage
    for i in range(table.locator("tbody tr").count()):  # a removed token is greyed from its stage on
        row = table.locator("tbody tr").nth(i)
        gone = row.get_attribute("data-removed-by")
        if gone:
            cells = row.locator("td")
            at = stages.index(gone)
            assert "pg-why-removed" in cells.nth(at).get_attribute("class") and gone in cells.nth(at).inner_text()
            assert "pg-why-removed" not in (cells.nth(at - 1).get_attribute("class") or "")

    greedy = page.locator("#pg-columns .pg-card[data-column='0'] .pg-tok").nth(2)
    greedy.click()
    page.locator("#pg-columns .pg-alts .pg-why-btn").click()
    page.wait_for_selector("#pg-why .pg-why-trace[data-column='0'][data-step='2']", timeout=60_000)
    table = page.locator("#pg-why .pg-why-table")
    assert table.locator("thead .pg-why-stage").all_inner_texts() == ["clean", "argmax"]
    assert table.locator("tr.pg-why-chosen th").inner_text().strip().startswith("▶")
    removed = table.locator("tbody tr[data-removed-by='argmax']")  # the argmax leaves one token of the ten
    assert removed.count() == table.locator("tbody tr").count() - 1 >= 9
    assert removed.locator("td.pg-why-removed").count() == removed.count()

    parts = page.locator("#pg-parts .pg-pair")
    assert parts.count() >= 1
    first = parts.first
    a, b, step = (int(first.get_attribute(k)) for k in ("data-a", "data-b", "data-step"))
    sentence = first.inner_text()
    assert sentence.startswith(f"columns {a + 1} and {b + 1} part at token {step + 1}: both drew u = ")
    if a == 0:  # the card of column b marks where it parts from column 1
        mark = page.locator(f"#pg-columns .pg-card[data-column='{b}'] .pg-tok.pg-part")
        assert mark.count() == 1 and mark.get_attribute("data-step") == str(step)
    first.click()
    page.wait_for_function("() => document.querySelectorAll('#pg-why .pg-why-trace').length === 2", timeout=60_000)
    shown = page.locator("#pg-why .pg-why-trace")
    assert [shown.nth(i).get_attribute("data-column") for i in range(2)] == [str(a), str(b)]
    assert page.locator("#pg-why .pg-why-sentence").inner_text() == sentence

    page.locator("#pg-parts select.pg-ref").select_option("1")  # marks now say where each card leaves column 2
    page.wait_for_function("() => [...document.querySelectorAll('#pg-columns .pg-part')].every("
                           "t => t.dataset.partFrom === '2')", timeout=10_000)
    page.set_viewport_size({"width": 390, "height": 900})  # a phone: the two traces stack, none wider
    for i in range(2):
        assert shown.nth(i).bounding_box()["width"] <= 390
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#pg-why").screenshot(path=str(ARTIFACTS / "why-phone.png"))
    # Gradio's run history would copy every call's inputs and outputs (MBs a run) into localStorage on each event
    saved = page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('gradio:run-history'))")
    assert saved == [], saved
    page.close()


def test_samples_per_column_as_a_user_would(browser, server):
    page = open_page(browser, server.local_url)
    page.locator("#pg-prompt textarea").fill("The lighthouse keeper climbed the stairs and")
    set_number(page, "#pg-max-tokens input[type=number]", 8)
    set_number(page, "#pg-samples input", 8)
    set_number(page, "#pg-column-number input", 4)
    press(page, "#pg-remove")  # greedy, temperature, phase_slip
    page.locator("#pg-run").click()
    page.wait_for_selector("#pg-status[data-state='done']", timeout=RUN_TIMEOUT_MS)

    cards = page.locator("#pg-columns .pg-card")
    assert cards.count() == 3
    assert "decoded once" in cards.nth(0).locator(".pg-samples").inner_text()  # greedy: the same for every seed
    for i in (1, 2):
        listed = cards.nth(i).locator(".pg-samples")
        assert listed.get_attribute("data-done") == "8" and listed.locator("details.pg-sample").count() == 7
        assert "8 of 8 samples finished" in listed.inner_text()
    table = page.locator("#pg-metrics").inner_text()
    assert "Δ perplexity vs 1" in table and "Δ distinct_2 vs 1" in table
    assert table.count("0/8 wins") >= 4  # column 1 against itself: no difference, every pair a tie
    page.wait_for_selector("#pg-samples-plot .js-plotly-plot .scatterlayer .trace", timeout=60_000)
    points = page.evaluate("""() => [...document.querySelectorAll('#pg-samples-plot .scatterlayer .trace')]
        .map(t => t.querySelectorAll('.points path').length)""")
    assert sorted(points, reverse=True)[:3] == [8, 8, 8]  # one point per sample, three columns (means apart)
    page.wait_for_selector("#pg-first-token .js-plotly-plot .barlayer", timeout=60_000)

    page.locator("#pg-share-btn").click()
    page.wait_for_function("() => (document.querySelector('#pg-share textarea')?.value || '').includes('samples=8')",
                           timeout=60_000)
    link = page.locator("#pg-share textarea").input_value()
    restored = open_page(browser, link)
    sync_api.expect(restored.locator("#pg-samples input")).to_have_value("8")
    restored.close()
    page.close()
