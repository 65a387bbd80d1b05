"""scripts/screenshot.py: the README's picture is a PNG of the page after a run, not a blank or an error page."""
from __future__ import annotations

import http.server
import importlib.util
import os
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"

pytestmark = [pytest.mark.browser, pytest.mark.slow]
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is absent (scripts/setup.sh --test installs Debian's chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (gradio depends on it)")


def load_script():
    spec = importlib.util.spec_from_file_location("screenshot", ROOT / "scripts" / "screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_writes_a_png_of_the_page_after_a_run(tmp_path):
    script = load_script()
    out = script.take_screenshot(tmp_path / "page.png", tokens=8)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as picture:
        assert picture.format == "PNG"
        width, height = picture.size
        counts = picture.convert("L").histogram()  # pixels per grey level 0..255
    assert width == script.VIEWPORT["width"] and height >= script.VIEWPORT["height"]  # the whole page
    total = sum(counts)
    mean = sum(level * n for level, n in enumerate(counts)) / total
    variance = sum(n * (level - mean) ** 2 for level, n in enumerate(counts)) / total
    assert variance > 100, f"a nearly uniform picture (grey variance {variance:.1f}): blank or an error page"
    assert sum(n > 0 for n in counts) > 50, "too few shades for a page of coloured tokens and plots"


@pytest.fixture
def other_site(tmp_path):
    """A web server that answers every path with a page that is not the playground."""
    (tmp_path / "index.html").write_text("<html><body><h1>Not the playground</h1></body></html>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_a_page_that_is_not_the_playground_is_refused_and_no_picture_is_written(tmp_path, other_site):
    script = load_script()
    out = tmp_path / "page.png"
    with pytest.raises(script.PageCheckFailed, match="the page's controls"):
        script.take_screenshot(out, url=other_site, load_timeout_ms=2_000)
    assert not out.exists()
