"""The page's look, shared by the page and its sections: colours, fonts, the plotly layout every
chart starts from, escaping and number formats. It imports nothing of the report, so that the page
and its sections both import it and never each other.

Every chart keeps three things apart, so that nothing overlaps at any page width (the browser test
measures it at 1400 and 800 px): its title at the top left, plotly's toolbar (the modebar) at the
top right above the plot area, and its legend right of the plot area, from the plot's top down.
"""

from __future__ import annotations

import html
import re

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from specsweep import methods

PART_COLORS = {"draft": "#56B4E9", "verify": "#D55E00", "rollback": "#882255", "host": "#BBBBBB"}
PART_NAMES = {"draft": "draft", "verify": "verify (target decode)", "rollback": "rollback", "host": "host (Python)"}
PROMPT_COLORS = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#555555", "#EE7733"]
CURVE_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#555555"]
SYMBOLS = ["circle", "diamond", "square", "triangle-up", "star", "hexagon", "pentagon", "cross"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
GOOD, BAD, WARN = "#1a7f37", "#c62828", "#8a6d00"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
ROW_PX = 30  # height of one config row in the bar charts
TITLE_CHARS = 60  # a chart title's line: left of the toolbar even on an 800 px page
TITLE_LINE_PX = 20
TOP_PX = 66  # above the plot area with a one-line title: the title and the toolbar's band
SUBPLOT_TITLE = "subplot title"  # the `name` of make_subplots' title annotations (the browser test finds them)
# plotly's toolbar, kept short so that it stays clear of the title: zoom, pan, reset, and PNG
MODEBAR_REMOVE = ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d", "autoScale2d"]


def esc(value) -> str:
    """Any value from records, for the page's HTML."""
    return html.escape(str(value), quote=True)


def t(value) -> str:
    """Any value from records, for text plotly draws: its pseudo-HTML tags show as text."""
    return html.escape(str(value), quote=False)


def breakable(value) -> str:
    """esc(value), with places to break a long file name (after a - / , or |) for a narrow column."""
    return re.sub(r"([-/,|])", r"\1<wbr>", esc(value))


def short_patterns(text: str) -> str:
    """A placement's tensor patterns (`-ot ...`, one long word) cut to their start in a label: the
    placement section lists them whole."""
    return re.sub(r"-ot (\S{25})\S+", lambda m: f"-ot {m.group(1)}…", str(text))


def method_color(method: str) -> str:
    return methods.color(method)


def pct(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:+.{digits}%}"


def share(x: float) -> str:
    """A share of drafts (a break-even acceptance, an interval's end): beyond 0-100% only as a direction."""
    return ">100%" if x > 1 else "<0%" if x < 0 else f"{x:.0%}"


def num(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _pieces(word: str, width: int) -> list[str]:
    """A word longer than a line (a file name, a tensor pattern) cut after a - _ , . | or /, else
    at the line's end."""
    out = []
    while len(word) > width:
        cut = max(word.rfind(c, 0, width) for c in "-_,.|/") + 1
        cut = cut if cut > width // 3 else width
        out.append(word[:cut])
        word = word[cut:]
    return out + [word]


def wrap(text: str, width: int = TITLE_CHARS, sep: str = " · ") -> str:
    """A title on lines of at most `width` characters, broken at its `sep` joins, else at spaces,
    else inside a long word; escaped for plotly, lines joined by <br>."""
    lines: list[str] = []
    for part in str(text).split(sep):
        joined = (lines[-1] + sep + part) if lines else part
        if lines and len(joined) <= width:
            lines[-1] = joined
            continue
        line = ""
        for w in (p for word in part.split(" ") for p in _pieces(word, width)):
            if line and len(line) + 1 + len(w) > width:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}" if line else w
        lines.append(line)
    return "<br>".join(t(x) for x in lines)


def lines_of(title: str) -> int:
    return title.count("<br>") + 1


def chart_layout(fig: go.Figure, height: int, title: str = "", legend: bool = True, **kw) -> None:
    """The page's layout for one chart: `title` (escaped, wrapped; may be "") at the top left, the
    toolbar at the top right, the legend right of the plot area from its top. `height` is the plot
    area's; the band above it is added for the title."""
    top = TOP_PX + TITLE_LINE_PX * (lines_of(title) - 1 if title else -1)
    total = height + top + 60
    fig.update_layout(
        height=total, template="plotly_white", font=dict(family=FONT, size=13, color="#222"),
        margin=dict(l=20, r=20, t=top, b=60), hoverlabel=dict(font_size=12), showlegend=legend,
        legend=dict(orientation="v", xref="paper", x=1.02, xanchor="left", yref="paper", y=1, yanchor="top",
                    font=dict(size=12), tracegroupgap=4),
        # 14 px below the figure's top edge: plotly's own padding leaves a first line's capitals cut
        title=dict(text=title, x=0, xref="container", xanchor="left", y=1 - 14 / total, yref="container",
                   yanchor="top", pad=dict(l=12), font=dict(size=15)) if title else None, **kw)


def base_layout(fig: go.Figure, height: int, **kw) -> None:
    """The page's fonts and colours on a figure that places its own titles (subplot titles) and
    legend; the legend right of the plot area unless the caller moves it."""
    fig.update_layout(height=height, template="plotly_white", font=dict(family=FONT, size=13, color="#222"),
                      margin=dict(l=20, r=20, t=TOP_PX, b=50), hoverlabel=dict(font_size=12), showlegend=True,
                      legend=dict(orientation="v", xref="paper", x=1.02, xanchor="left", yref="paper", y=1,
                                  yanchor="top", font=dict(size=12)), **kw)
    fig.update_annotations(font_size=14)  # subplot titles


def subplots(titles: list[str], **kw) -> go.Figure:
    """make_subplots with `titles` (already escaped and wrapped), each title annotation named so
    that the page's test can tell titles from other annotations."""
    fig = make_subplots(subplot_titles=titles, **kw)
    for a in fig.layout.annotations:  # only the titles so far
        a.name = SUBPLOT_TITLE
    return fig


def column(titles: list[str]) -> go.Figure:
    """One panel per title (raw text: `wrap` escapes and breaks it), stacked in a column."""
    n = len(titles)
    return subplots([wrap(x, 70) for x in titles], rows=n, cols=1,
                    vertical_spacing=min(0.12, 0.5 / max(n - 1, 1)) if n > 1 else 0.1)


def figure_config(div_id: str) -> dict:
    return {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": MODEBAR_REMOVE,
            "toImageButtonOptions": {"format": "png", "filename": div_id, "scale": 2}}


SYNTHETIC_BADGE = ("<span class='badge' title=\"llama.cpp's synthetic acceptance: drafts were accepted at random at a "
                   "set rate, so the tokens are not the target's text and have no lossless verdict\">synthetic</span>")


def cell(v: str, cls: str = "") -> str:
    return f'<td class="{cls}">{v}</td>' if cls else f"<td>{v}</td>"


def change_cls(x: float | None) -> str:
    return "" if x is None else ("up" if x > 0 else "down")
