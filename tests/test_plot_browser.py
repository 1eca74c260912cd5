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


def status(dom: str) -> tuple[dict, list[str]]:
    tag = re.search(r'<div id="specsweep-status"([^>]*)>', dom)
    assert tag, "the page's status element is missing from the DOM"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))
    errs = re.search(r'<pre id="specsweep-errors"[^>]*>(.*?)</pre>', dom, re.S)
    errors = [line for line in html.unescape(errs.group(1)).splitlines() if line.strip()] if errs else ["no errors element"]
    return attrs, errors


@pytest.fixture(scope="module")
def smoke_page(tmp_path_factory) -> Path:
    exe = browser()  # skip before running anything
    del exe
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


def test_the_smoke_page_draws_every_chart_without_console_errors(smoke_page):
    exe = browser()
    got = open_page(exe, smoke_page, "--dump-dom")
    assert got.returncode == 0, got.stderr[-2000:]
    attrs, errors = status(got.stdout)
    assert errors == [], errors
    uncaught = [line for line in got.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert uncaught == [], uncaught
    expected = int(attrs["data-expected"])
    assert expected == 4  # speed, acceptance, per prompt, time split (no probe records in a run)
    assert attrs.get("data-drawn") == str(expected) and attrs.get("data-ready") == "yes", attrs
    assert got.stdout.count('class="main-svg"') >= expected
    # bars, points and labels were drawn, not only empty axes
    assert got.stdout.count('class="point"') > 20 and "baseline" in got.stdout

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
