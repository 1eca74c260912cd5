"""End to end: a real smoke run (matrices/smoke.toml on the CPU), `specsweep plot`, and the page
opened in headless Chromium: no console errors, every chart drew, and a screenshot.

The page reports on itself (see specsweep/report/page.py): `#specsweep-status` says how many
figures drew (`data-ready="yes"` once all did) and `#specsweep-errors` holds every uncaught error,
rejected promise and console.error, so the DOM Chromium dumps proves both. The screenshot and the
page are kept in tests/artifacts/ (ignored by git; $SPECSWEEP_ARTIFACTS overrides), for a person to
look at and for CI to upload.

Needs Debian's `chromium` (apt-get install -y chromium); without it the test is skipped, unless
SPECSWEEP_REQUIRE_BROWSER=1, which makes a missing browser a failure (as CI sets it).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from specsweep.cli import main

REPO = Path(__file__).resolve().parents[1]
PAGE_LIMIT = 1_500_000  # bytes
VENDORED = json.loads((REPO / "specsweep" / "report" / "vendor" / "plotly.json").read_text())
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# the background-networking flags keep Chromium from reaching for Google's hosts on a closed network
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000",
         "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync"]


def browser() -> str | None:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        if os.environ.get("SPECSWEEP_REQUIRE_BROWSER") == "1":
            pytest.fail("SPECSWEEP_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install -y chromium)")
        pytest.skip("no chromium (apt-get install -y chromium; SPECSWEEP_REQUIRE_BROWSER=1 makes this a failure)")
    return found


def artifacts() -> Path:
    d = Path(os.environ.get("SPECSWEEP_ARTIFACTS") or REPO / "tests" / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def open_page(exe: str, page: Path, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:  # a fresh, empty profile each time
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra,
                               page.resolve().as_uri()], capture_output=True, text=True, timeout=180)


def message(dom: str) -> tuple[str, bool]:
    """The page's own one-line message, and whether it is shown."""
    tag = re.search(r'<p id="specsweep-message"([^>]*)>(.*?)</p>', dom, re.S)
    assert tag, "the page's message element is missing from the DOM"
    return html.unescape(tag.group(2)), "hidden" not in tag.group(1)


def status(dom: str) -> tuple[dict, list[str]]:
    tag = re.search(r'<div id="specsweep-status"([^>]*)>', dom)
    assert tag, "the page's status element is missing from the DOM"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))
    errs = re.search(r'<pre id="specsweep-errors"[^>]*>(.*?)</pre>', dom, re.S)
    errors = [line for line in html.unescape(errs.group(1)).splitlines() if line.strip()] if errs else ["no errors element"]
    return attrs, errors


@pytest.fixture(scope="module")
def smoke_page(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    old = os.environ.get("SPECSWEEP_CACHE")
    os.environ["SPECSWEEP_CACHE"] = old or str(tmp / "cache")
    try:
        run = CliRunner().invoke(main, ["run", str(REPO / "matrices" / "smoke.toml"), "--results", str(tmp / "results")])
    finally:
        if old is None:
            os.environ.pop("SPECSWEEP_CACHE")
    assert run.exit_code == 0, run.output
    out = tmp / "plots" / "smoke.html"
    plot = CliRunner().invoke(main, ["plot", str(tmp / "results" / "smoke"), "-o", str(out)])
    assert plot.exit_code == 0, plot.output
    return out


def assert_draws(exe: str, page: Path) -> tuple[dict, str]:
    """Every figure of the page drew, from the vendored plotly.js, with no error of any kind."""
    got = open_page(exe, page, "--dump-dom")
    assert got.returncode == 0, got.stderr[-2000:]
    attrs, errors = status(got.stdout)
    assert errors == [], errors
    uncaught = [line for line in got.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert uncaught == [], uncaught
    expected = int(attrs["data-expected"])
    assert expected == len(re.findall(r'data-figure="fig-', page.read_text(encoding="utf-8")))
    assert attrs.get("data-plotly") == VENDORED["version"], attrs
    assert attrs.get("data-drawn") == str(expected) and attrs.get("data-ready") == "yes", attrs
    assert got.stdout.count('class="main-svg"') >= expected
    assert message(got.stdout) == ("", False)
    return attrs, got.stdout


def test_the_smoke_page_is_at_most_1_5_mb(smoke_page):
    assert smoke_page.stat().st_size <= PAGE_LIMIT, f"{smoke_page.stat().st_size / 1e6:.2f} MB"


def test_the_smoke_page_draws_every_chart_without_console_errors(smoke_page):
    exe = browser()
    attrs, dom = assert_draws(exe, smoke_page)
    figures = re.findall(r'data-figure="(fig-[a-z-]+)"', smoke_page.read_text(encoding="utf-8"))
    # speed, acceptance, per prompt, time split (no probe records in a run), then the analysis
    assert figures[:4] == ["fig-tps", "fig-acceptance", "fig-prompts", "fig-time"]
    assert "fig-cost" in figures and set(figures[4:]) <= {"fig-cost", "fig-coverage", "fig-break-even"}
    # bars (with error bars: the basic bundle has them), points and labels were drawn, not only empty axes
    assert dom.count('class="point"') > 20 and "baseline" in dom and 'class="errorbar"' in dom

    shot = artifacts() / "plot-smoke.png"
    shot.unlink(missing_ok=True)
    got = open_page(exe, smoke_page, f"--screenshot={shot}", "--window-size=1400,3000")
    assert got.returncode == 0 and shot.is_file(), got.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1400, 3000)
    shutil.copyfile(smoke_page, artifacts() / "plot-smoke.html")


def test_the_error_hook_would_catch_a_broken_page(smoke_page, tmp_path):
    """The negative control: the same page with a script error must report it."""
    broken = tmp_path / "broken.html"
    broken.write_text(smoke_page.read_text().replace("</main>", "<script>notAFunction();</script></main>", 1))
    attrs, errors = status(open_page(browser(), broken, "--dump-dom").stdout)
    assert any("notAFunction" in e for e in errors), errors


def test_without_decompression_stream_the_page_says_so(smoke_page, tmp_path):
    """An older browser (Firefox before 113, Safari before 16.4): a visible line, no charts, no error."""
    old = tmp_path / "old-browser.html"
    old.write_text(smoke_page.read_text().replace("<body>", "<body>\n<script>delete window.DecompressionStream;"
                                                                "</script>", 1))
    got = open_page(browser(), old, "--dump-dom")
    attrs, errors = status(got.stdout)
    assert errors == [] and attrs.get("data-plotly") == "unsupported" and attrs.get("data-drawn") == "0", attrs
    text, shown = message(got.stdout)
    assert shown and "DecompressionStream" in text and "Firefox 113+" in text and "Safari 16.4+" in text


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "plots").glob("*.html")))
def test_the_committed_pages_draw_every_chart_offline(name):
    assert_draws(browser(), REPO / "plots" / name)
