"""The published asv dashboard works in a browser: headless Chromium lists the benchmarks and
draws a benchmark's graph, and screenshots of both land in .asv/.

Needs ``asv publish`` first (``tox -e bench`` runs the benchmarks, publishes, then this), plus
Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package. Without them the
tests skip, saying which is missing; with ``PORTSPEC_REQUIRE_DASHBOARD=1`` (set by the bench
env) they fail instead, so the dashboard cannot go unchecked there.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.home("bench")  # after `asv publish` (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / ".asv" / "html"  # asv.conf.json's html_dir
BENCHMARKS = [
    f"{module}.{cls}.{method}"
    for module, cls in [
        ("feature_mixing", "FeatureMixing"),
        ("gated_feature_fusion", "GatedFeatureFusion"),
    ]
    for method in ("time_layer", "peakmem_layer", "track_floor_ratio")
]
# A headless browser that talks to nothing but the local server.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]


def unavailable(reason: str):
    if os.environ.get("PORTSPEC_REQUIRE_DASHBOARD") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def dashboard():
    if not (HTML / "index.html").is_file():
        unavailable(f"no published dashboard at {HTML}: run `asv publish`")
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        unavailable("chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory(prefix="portspec-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        # An explicit driver path: Selenium Manager must not try to download one.
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver, script: str, timeout: float = 30.0):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return {script}"))


def test_benchmark_list(dashboard, browser):
    browser.get(dashboard)
    names = wait_for(
        browser,
        "Array.from(document.querySelectorAll('.benchmark-container .benchmark-text'))"
        ".map(e => e.textContent)",
    )
    browser.save_screenshot(str(HTML.parent / "dashboard-list.png"))
    assert browser.title.startswith("airspeed velocity of an unladen portspec")
    for name in BENCHMARKS:
        assert any(name.endswith(shown) or shown.endswith(name) for shown in names), name


def test_graph(dashboard, browser):
    browser.get(f"{dashboard}#{BENCHMARKS[0]}")
    # flot keeps its plot object on the graph element: count the points it draws.
    points = wait_for(
        browser,
        "(p => p && p.getData().reduce((n, s) => n + s.data.length, 0))"
        "($('#main-graph').data('plot'))",
    )
    browser.save_screenshot(str(HTML.parent / "dashboard-graph.png"))
    assert points > 0
    assert browser.execute_script(
        "const c = document.querySelector('#main-graph canvas.flot-base');"
        "return c !== null && c.width > 0 && c.height > 0"
    )
    assert not browser.find_element("id", "error").is_displayed()
