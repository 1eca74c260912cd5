"""End to end: a real smoke run (matrices/smoke.toml on the CPU), `specsweep plot`, and the page
opened in headless Chromium: no console errors, every chart drew, and a screenshot. Every page
(the smoke page and each committed one in plots/) is also laid out at 1400 and 800 px wide and
measured in the browser (`MEASURE`, a script added to a copy of the page): the answer block starts
within the first 900 px, no panel says "no records", and no two chart titles' boxes in the
rendered SVG intersect, nor a title or a legend plotly's toolbar.

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


# Once every figure drew: the boxes (page coordinates) of each chart's titles (its layout title, and
# the subplot titles make_subplots wrote, which the page names "subplot title"), legend and toolbar,
# the answer block's and its first row's, and the page's visible text (scripts left out).
MEASURE = r"""
(function () {
  function box(el) {
    var r = el.getBoundingClientRect();
    return [r.left + window.scrollX, r.top + window.scrollY, r.right + window.scrollX, r.bottom + window.scrollY];
  }
  function measure() {
    var st = document.getElementById("specsweep-status");
    if (st.getAttribute("data-ready") !== "yes") { setTimeout(measure, 50); return; }
    var out = {width: document.documentElement.clientWidth, titles: [], legends: [], modebars: []};
    Array.prototype.forEach.call(document.querySelectorAll(".js-plotly-plot"), function (gd) {
      var anns = (gd.layout && gd.layout.annotations) || [];
      Array.prototype.forEach.call(gd.querySelectorAll(".g-gtitle text"), function (el) {
        out.titles.push({fig: gd.id, text: el.textContent, box: box(el)});
      });
      Array.prototype.forEach.call(gd.querySelectorAll("g.annotation"), function (el) {
        var a = anns[Number(el.getAttribute("data-index"))], text = el.querySelector("text");
        if (a && a.name === "subplot title" && text) {
          out.titles.push({fig: gd.id, text: text.textContent, box: box(text)});
        }
      });
      var legend = gd.querySelector("g.legend"), modebar = gd.querySelector(".modebar");
      if (legend) { out.legends.push({fig: gd.id, box: box(legend)}); }
      if (modebar) { out.modebars.push({fig: gd.id, box: box(modebar)}); }
    });
    var answer = document.getElementById("specsweep-answer");
    if (answer) {
      out.answer = box(answer);
      var row = answer.querySelector("tr:nth-child(2)");
      out.first_row = row ? box(row) : null;
    }
    var main = document.querySelector("main").cloneNode(true);
    Array.prototype.forEach.call(main.querySelectorAll("script"), function (el) { el.remove(); });
    out.text = main.textContent;
    var pre = document.createElement("pre");
    pre.id = "specsweep-measure";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  measure();
})();
"""
WIDTHS = (1400, 800)
FIRST_SCREEN_PX = 900


def measured(exe: str, page: Path, width: int, tmp: Path) -> dict:
    """The page laid out `width` px wide, as MEASURE found it."""
    copy = tmp / f"measure-{width}-{page.name}"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", f"<script>{MEASURE}</script>\n</body>", 1),
                    encoding="utf-8")
    got = open_page(exe, copy, "--dump-dom", f"--window-size={width},{FIRST_SCREEN_PX}")
    assert got.returncode == 0, got.stderr[-2000:]
    found = re.search(r'<pre id="specsweep-measure">(.*?)</pre>', got.stdout, re.S)
    assert found, "the measuring script did not finish: " + str(status(got.stdout))
    return json.loads(html.unescape(found.group(1)))


def intersect(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlaps(first: list[dict], second: list[dict] | None = None) -> list[str]:
    """Pairs whose boxes intersect: within `first`, or between `first` and `second` (same figure)."""
    if second is None:
        pairs = [(a, b) for i, a in enumerate(first) for b in first[i + 1:]]
    else:
        pairs = [(a, b) for a in first for b in second if a["fig"] == b["fig"]]
    return [f"{a['fig']} {a.get('text', 'legend')[:50]!r} / {b['fig']} {b.get('text', 'toolbar')[:50]!r}"
            for a, b in pairs if intersect(a["box"], b["box"])]


def assert_laid_out(exe: str, page: Path, width: int, tmp: Path) -> dict:
    """The page's first screen holds the answer; no empty panel; nothing overlaps a chart's title."""
    m = measured(exe, page, width, tmp)
    assert m["width"] == width
    assert m.get("answer"), "no answer block (#specsweep-answer)"
    assert m["answer"][1] < FIRST_SCREEN_PX and m["first_row"][3] <= FIRST_SCREEN_PX, (m["answer"], m["first_row"])
    assert "no records" not in m["text"]
    assert len(m["titles"]) >= len(m["modebars"]) > 0  # every chart has a title
    assert overlaps(m["titles"]) == []
    assert overlaps(m["titles"], m["modebars"]) == [] and overlaps(m["legends"], m["modebars"]) == []
    assert overlaps(m["titles"], m["legends"]) == []
    assert all(t["box"][2] <= width for t in m["titles"]), [t["text"] for t in m["titles"] if t["box"][2] > width]
    return m


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
    figures = re.findall(r'data-figure="(fig-[a-z0-9-]+)"', smoke_page.read_text(encoding="utf-8"))
    # per target and card: the curves, speed, per prompt, time split (no probe records in a run),
    # then the analysis
    assert figures[:4] == ["fig-curves-1", "fig-tps-1", "fig-prompts-1", "fig-time-1"]
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


@pytest.mark.parametrize("width", WIDTHS)
def test_the_smoke_page_answers_first_and_nothing_overlaps(smoke_page, width, tmp_path):
    m = assert_laid_out(browser(), smoke_page, width, tmp_path)
    assert "The answer" in m["text"] and "plain decoding" in m["text"]


def test_the_layout_check_would_catch_overlapping_titles(smoke_page, tmp_path):
    """The negative control: two charts laid on top of each other (both divs at the page's top
    left) must fail the check."""
    text = smoke_page.read_text(encoding="utf-8")
    for div_id in ("fig-curves-1", "fig-tps-1"):
        text = text.replace(f'<div id="{div_id}" class="plotly-graph-div" style="',
                            f'<div id="{div_id}" class="plotly-graph-div" style="position:absolute; top:0; left:0; ', 1)
    broken = tmp_path / "overlap.html"
    broken.write_text(text, encoding="utf-8")
    m = measured(browser(), broken, 1400, tmp_path)
    assert any("fig-curves-1" in x and "fig-tps-1" in x for x in overlaps(m["titles"])), m["titles"]


COMMITTED = sorted(p.name for p in (REPO / "plots").glob("*.html"))
SCREENSHOT = REPO / "docs" / "first-screen.png"


def test_the_readme_shows_a_small_screenshot_of_a_first_screen():
    """docs/first-screen.png (scripts/first-screen.py: this browser, FIRST_SCREEN_PX high, 1400 wide)."""
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000, len(data)
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1400, FIRST_SCREEN_PX)
    assert "](docs/first-screen.png)" in (REPO / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_pages_draw_every_chart_offline(name):
    assert_draws(browser(), REPO / "plots" / name)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_pages_answer_first_and_nothing_overlaps(name, width, tmp_path):
    page = REPO / "plots" / name
    assert page.stat().st_size <= PAGE_LIMIT, f"{page.stat().st_size / 1e6:.2f} MB"
    assert_laid_out(browser(), page, width, tmp_path)
