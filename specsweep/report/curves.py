"""Speed-up against acceptance as curves, one chart per target (and KV type) and card.

Each drafter and draft length swept over llama.cpp's synthetic acceptance is a line through its
configs: the acceptance they realized (accepted / drafted) on x, the paired change with its 95%
t-interval over blocks on y. Where a sweep's straight-line fit crosses 1x, its break-even, is marked
on the 1x line with its bootstrap interval. Configs measured on real text, and synthetic ones that
are not part of a sweep, are points. The v4 audit's published RTX 3090 arms (reference/, its source
and commit named there) are a layer that the legend switches on.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import plotly.graph_objects as go

from specsweep.analysis.paired import PairedRow
from specsweep.analysis.records import acceptance_label
from specsweep.report.scopes import Scope, arm_label
from specsweep.report.style import DASHES, SYMBOLS, chart_layout, method_color, t, wrap

REFERENCE = Path(__file__).with_name("reference") / "v4-audit-rtx3090.json"
PLOT_PX = 420


@functools.lru_cache(maxsize=1)
def reference() -> dict:
    """The bundled published points: name, source, commit, what was measured and how, points."""
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def _y_errors(rows: list[PairedRow]) -> dict:
    if not any(r.t_interval for r in rows):
        return dict(visible=False)
    return dict(type="data", symmetric=False, thickness=1.2, width=3,
                array=[(r.t_interval[1] - r.change) if r.t_interval else 0 for r in rows],
                arrayminus=[(r.change - r.t_interval[0]) if r.t_interval else 0 for r in rows])


def _hover(scope: Scope, rows: list[PairedRow]) -> tuple[list, str]:
    data = [[t(scope.key(r)), f"{r.change * 100:+.1f}%",
             "" if r.t_interval is None else f" [{r.t_interval[0] * 100:+.1f}, {r.t_interval[1] * 100:+.1f}]",
             r.n_blocks, acceptance_label(r.acceptance, r.configured_acceptance)
             + (" (synthetic acceptance)" if r.synthetic else ", real text")] for r in rows]
    return data, ("<b>%{customdata[0]}</b><br>acceptance %{customdata[4]}<br>speed-up %{y:.2f}x: "
                  "%{customdata[1]}%{customdata[2]} (95% t-interval over %{customdata[3]} blocks)<extra></extra>")


def figure(scope: Scope) -> go.Figure | None:
    """None where no config drafted anything with a baseline to pair it with."""
    drafted = [r for r in scope.rows if r.acceptance is not None and r.n_drafted]
    if not drafted:
        return None
    fig = go.Figure()
    per_method: dict[str, int] = {}
    for arm, rows in scope.sweeps.items():
        method = rows[0].method
        i = per_method[method] = per_method.get(method, -1) + 1
        color = method_color(method)
        data, hover = _hover(scope, rows)
        fig.add_trace(go.Scatter(
            x=[r.acceptance * 100 for r in rows], y=[1 + r.change for r in rows], mode="lines+markers",
            name=t(arm_label(rows[0])), legendgroup=arm, line=dict(color=color, width=2, dash=DASHES[i % len(DASHES)]),
            marker=dict(color=color, size=7, symbol=SYMBOLS[i % len(SYMBOLS)]), error_y=_y_errors(rows),
            customdata=data, hovertemplate=hover))
        be = scope.line_of(rows[0])
        if be is not None and be.acceptance is not None and 0 <= be.acceptance <= 1:
            ci = be.interval
            fig.add_trace(go.Scatter(
                x=[be.acceptance * 100], y=[1.0], mode="markers", legendgroup=arm, showlegend=False,
                marker=dict(symbol="line-ns", size=18, line=dict(color=color, width=3)),
                error_x=dict(type="data", symmetric=False, color=color, thickness=1.5, width=5,
                             array=[max(ci[1] - be.acceptance, 0) * 100] if ci else [0],
                             arrayminus=[max(be.acceptance - ci[0], 0) * 100] if ci else [0]),
                customdata=[[t(arm_label(rows[0])), "" if ci is None else f" [{ci[0]:.0%}, {ci[1]:.0%}]",
                             be.n_configs]],
                hovertemplate="<b>%{customdata[0]}</b>: break-even %{x:.0f}% accepted%{customdata[1]}"
                              "<br>(a line over its %{customdata[2]} configs; bootstrap interval)<extra></extra>"))
    loose = [r for r in drafted if not scope.swept(r)]
    for synthetic in (False, True):
        for method in dict.fromkeys(r.method for r in loose if r.synthetic == synthetic):
            rows = [r for r in loose if r.method == method and r.synthetic == synthetic]
            data, hover = _hover(scope, rows)
            color = method_color(method)
            fig.add_trace(go.Scatter(
                x=[r.acceptance * 100 for r in rows], y=[1 + r.change for r in rows], mode="markers",
                name=t(f"{method}: {'synthetic' if synthetic else 'measured'}"),
                marker=dict(color=color, size=10, symbol="circle-open" if synthetic else "circle",
                            line=dict(color=color if synthetic else "white", width=2 if synthetic else 1)),
                error_y=_y_errors(rows), customdata=data, hovertemplate=hover))
    ref = reference()
    pts = ref["points"]
    fig.add_trace(go.Scatter(
        x=[p["acceptance"] * 100 for p in pts], y=[1 + p["change"] for p in pts], mode="markers+text",
        name=t(ref["name"]), visible="legendonly", text=[t(p["arm"]) for p in pts], textposition="middle right",
        textfont=dict(size=10, color="#555"), marker=dict(symbol="star", size=11, color="#444"),
        error_y=dict(type="data", symmetric=False, thickness=1, width=2, color="#444",
                     array=[p["interval"][1] - p["change"] for p in pts],
                     arrayminus=[p["change"] - p["interval"][0] for p in pts]),
        customdata=[[t(p["arm"]), p["change"] * 100] for p in pts],
        hovertemplate="<b>%{customdata[0]}</b> (" + t(ref["card"]) + ", " + t(ref["target"]) + ")"
                      "<br>acceptance %{x:.1f}% (server counter), %{customdata[1]:+.1f}% (95% over blocks)"
                      "<br>published: " + t(ref["source"].removeprefix("https://")) + " @ " + ref["commit"][:9]
                      + "<extra></extra>"))
    fig.add_hline(y=1, line=dict(color="#444", dash="dash", width=1.3))
    fig.add_annotation(x=1, xref="paper", y=1, yref="y", xanchor="right", yanchor="bottom", showarrow=False,
                       text="1x: plain decoding", font=dict(size=11, color="#444"))
    top = max([1 + (r.t_interval[1] if r.t_interval else r.change) for r in drafted] + [1.2]) * 1.06
    chart_layout(fig, PLOT_PX, wrap(scope.title))
    fig.update_xaxes(title_text="acceptance realized (accepted / drafted tokens)", ticksuffix="%", range=[-3, 105],
                     zeroline=False)
    fig.update_yaxes(title_text="speed-up over plain decoding (paired)", ticksuffix="x", range=[0, top],
                     zeroline=False)
    return fig


def note(scopes: list[Scope]) -> str:
    """The chart's key (plain text; the page escapes it)."""
    ref = reference()
    text = ("Each line is one drafter and draft length swept over llama.cpp's synthetic acceptance: the acceptance "
            "its configs realized (accepted / drafted) against their speed-up over plain decoding, paired with the "
            "baseline of their own blocks; whiskers: the 95% t-interval over blocks. The short vertical mark on the "
            "1x line is where the sweep's straight-line fit breaks even, with its bootstrap interval over the "
            "sweep's configs. Points off the lines: configs measured on real text (filled) or at a synthetic rate "
            "outside a sweep (open).\n\n")
    text += (f"Reference (off until its legend entry is clicked): {ref['name']}, {ref['target']}, {ref['text']}, "
             f"{ref['setup']}; acceptance is {ref['acceptance']}. Published at {ref['source']} "
             f"({ref['path']}, commit {ref['commit'][:12]}); another card and llama.cpp build, not this page's "
             f"measurement.")
    return text
