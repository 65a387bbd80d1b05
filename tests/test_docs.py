"""Docs that cannot rot: links and anchors resolve, examples run, usage matches the parsers, tables match the code.

    python tests/test_docs.py      # rewrite docs/cli.md's usage blocks from playground.cli's parsers
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CLI_DOC = DOCS / "cli.md"
USAGE_MARKER = "<!-- usage: the generated blocks follow; edit the parsers, then run python tests/test_docs.py -->"
HELP_COLUMNS = "100"  # the width the usage blocks are written at
# pages other modules' authors write; a link to one is checked once the page exists
PAGES_WRITTEN_ALONGSIDE = {DOCS / "testing.md", DOCS / "phasegpt.md"}

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img [^>]*src=\"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """Every relative link or image of ``page`` whose file or anchor does not exist, as 'target: why'."""
    problems = []
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if resolved in PAGES_WRITTEN_ALONGSIDE and not resolved.exists():
            continue
        if not resolved.exists():
            problems.append(f"{target}: no file {resolved.relative_to(ROOT) if ROOT in resolved.parents else resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n[fine](other.md#a-section) [self](#page) [gone](missing.md) "
                    "[bad anchor](other.md#no-such-section) ![img](pic.png)\n"
                    "```\n[in code](ignored.md)\n```\n")
    assert broken_links(page) == ["missing.md: no file " + str(tmp_path / "missing.md"),
                                  "other.md#no-such-section: no heading with anchor #no-such-section",
                                  "pic.png: no file " + str(tmp_path / "pic.png")]


def test_slugs_follow_githubs_rule():
    assert slug("Devices, dtypes and attention") == "devices-dtypes-and-attention"
    assert slug("`phase_slip`") == "phase_slip"
    assert slug("The published table, reproduced") == "the-published-table-reproduced"
    assert slug("bfloat16 against float32") == "bfloat16-against-float32"


# ---- the README --------------------------------------------------------------------------------------------
def readme_block(language: str, after_heading: str) -> str:
    """The first ``language`` code block of README.md below the heading ``after_heading``."""
    text = README.read_text(encoding="utf-8")
    start = re.search(rf"^#+\s+{re.escape(after_heading)}\s*$", text, re.M)
    assert start, f"README.md has no heading {after_heading!r}"
    block = re.search(rf"^```{language}\n(.*?)^```", text[start.end():], re.M | re.S)
    assert block, f"README.md has no {language} block under {after_heading!r}"
    return block.group(1)


def test_readme_is_short_and_keeps_the_spaces_front_matter_and_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 210
    assert text.startswith("---\ntitle: Sampler Playground\n") and "\napp_file: app.py\n" in text
    assert "bash scripts/setup.sh && python app.py" in text and "bash scripts/test.sh" in text
    for sampler in ("greedy", "temperature", "phase_slip", "adaptive_entropy", "mirostat", "entropix"):
        assert f"`{sampler}`" in text, sampler
    assert "assets/screenshot.png" in text and (ROOT / "assets" / "screenshot.png").exists()


@pytest.mark.slow
def test_the_readme_python_example_runs_on_the_default_model(real_lm):
    code = readme_block("python", "Python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (Python example)", "exec"), {"__name__": "readme_example"})
    assert out.getvalue().strip(), "the README's Python example printed nothing"


def command_lines(page: Path) -> list[str]:
    """Every ``python -m playground ...`` command in the page's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].split(" > ")[0].strip()  # the shell's comment and redirection are not arguments
            if line.startswith("python -m playground"):
                commands.append(line)
    return commands


def test_every_documented_command_line_parses():
    from playground.cli import build_parser

    documented = [c for page in pages() for c in command_lines(page)]
    assert len(documented) >= 5
    for command in documented:
        argv = shlex.split(command)[3:]
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                build_parser().parse_args(argv)
            except SystemExit:
                pytest.fail(f"documented command does not parse: {command}\n{err.getvalue()}")


def test_the_settings_table_names_every_environment_variable_the_code_reads():
    code = [ROOT / "app.py", *(ROOT / "playground").rglob("*.py")]  # what a deployment runs
    names = set()
    for path in code:
        names |= set(re.findall(r"\b(PLAYGROUND_[A-Z_]+|GRADIO_[A-Z_]+|SPACE_ID)\b", path.read_text()))
    table = README.read_text(encoding="utf-8").split("## Settings", 1)[1].split("\n## ", 1)[0]
    missing = sorted(n for n in names if f"`{n}`" not in table)
    assert names and missing == []


# ---- docs/ -------------------------------------------------------------------------------------------------
def usage_blocks() -> str:
    """docs/cli.md's generated part: each command's --help, as ``python -m playground COMMAND --help`` prints it."""
    from playground.cli import build_parser, commands

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        parts = ["## Commands", "", "```text", build_parser().format_help().rstrip(), "```"]
        for name, (description, add_arguments, _run) in commands().items():
            parser = argparse.ArgumentParser(prog=f"python -m playground {name}", description=description)
            add_arguments(parser)
            parts += ["", f"## {name}", "", "```text", parser.format_help().rstrip(), "```"]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts) + "\n"


def written_usage() -> str:
    text = CLI_DOC.read_text(encoding="utf-8")
    assert USAGE_MARKER in text, f"docs/cli.md lost its marker line {USAGE_MARKER!r}"
    return text.split(USAGE_MARKER, 1)[1].lstrip("\n")


def test_cli_usage_in_the_docs_is_the_parsers_help():
    def words(text: str) -> list[str]:  # argparse wraps lines differently across Python versions
        return text.split()

    assert words(written_usage()) == words(usage_blocks()), \
        "docs/cli.md's usage differs from playground.cli's parsers: run python tests/test_docs.py"


def reference_section(heading: str) -> str:
    text = (DOCS / "reference.md").read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1]
    return text.split("\n## ", 1)[0]


def test_the_presets_table_lists_every_preset():
    from playground.columns import PRESETS

    listed = re.findall(r"^\| `([^`]+)` \|", reference_section("Presets"), re.M)
    assert sorted(listed) == sorted(PRESETS)


def test_the_telemetry_table_lists_every_field_of_a_token_row():
    import dataclasses

    from playground.telemetry import TokenRow

    first_cells = re.findall(r"^\| (`[^|]+`) \|", reference_section("Telemetry"), re.M)
    listed = [key for cell in first_cells for key in re.findall(r"`(\w+)`", cell)]
    assert listed == [f.name for f in dataclasses.fields(TokenRow)]


def test_the_run_metrics_list_names_every_metric_a_column_gets(tiny_llama):
    from playground import Engine, RunOptions

    run = Engine(tiny_llama).run("Hello there", ["greedy"], RunOptions(max_new_tokens=2)).to_json()
    listed = set(re.findall(r"`(\w+)`", reference_section("Run metrics")))
    assert set(run["columns"][0]["metrics"]) <= listed


def test_the_run_json_keys_are_those_a_run_writes(tiny_llama):
    from playground import Engine, RunOptions

    run = Engine(tiny_llama).run("Hello there", ["greedy"], RunOptions(max_new_tokens=2)).to_json()
    block = re.search(r"```json\n(.*?)```", reference_section("The run JSON"), re.S).group(1)
    documented = set(re.findall(r"\"(\w+)\":", block))
    assert documented == set(run) | set(run["columns"][0])


def test_the_architecture_page_names_every_module():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "playground"
    modules = {p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    modules |= {p.parent.name + "/" for p in package.glob("*/__init__.py")}  # the subpackages: samplers/, ui/, ...
    modules |= {p.name for p in (package / "ui").glob("*.py") if p.name != "__init__.py"}
    missing = sorted(m for m in modules if f"`{m}`" not in text and f"`ui/{m}`" not in text)
    assert missing == []


def test_the_architecture_page_lists_every_change_made_to_a_stock_model():
    from playground.model_changes import CHANGES

    text = (DOCS / "architecture.md").read_text(encoding="utf-8").split("## Changes to the stock model", 1)[1]
    listed = re.findall(r"^\| ([^|]+?) \|", text.split("\n## ", 1)[0], re.M)[1:]  # the header row left out
    assert listed == [change.name for change in CHANGES]


# words that tell how the project came to be; the docs say what it is (history goes to CHANGELOG.md)
HISTORY = [r"ALGORITHMS\.md", r"\bissue\s[0-9]", r"this\ssession", r"previous\sbuild", r"the\sseeds\b",
           r"\bto[d]ay\b", r"\bthe\sreference\b", r"original\ssamplers", r"shared\sfolder"]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_say_what_things_are_not_how_they_came_to_be(page):
    text = page.read_text(encoding="utf-8")
    found = [m.group(0) for pattern in HISTORY for m in re.finditer(pattern, text, re.I)]
    assert found == []


if __name__ == "__main__":
    head = CLI_DOC.read_text(encoding="utf-8").split(USAGE_MARKER, 1)[0]
    CLI_DOC.write_text(head + USAGE_MARKER + "\n\n" + usage_blocks(), encoding="utf-8")
    print(f"wrote {CLI_DOC.relative_to(ROOT)}")
