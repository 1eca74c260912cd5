"""The analysis on the report page: paired changes, the cost model, the break-even and the
expert-coverage verdicts, as escaped HTML and three plotly figures.

`section(sources)` returns a `Section`: `html` (verdicts and tables, every string from records
escaped) and `figures`, (div id, heading, note, figure) tuples in the form `page.render` lists its
own, so that the page can draw them with its `_figure_html` and count them in its status hooks:
(i) ms per generated token against draft tokens per generated token, with each family's line and
R^2 in the legend; (ii) the line's residuals against expected expert coverage, with the 95% line
and the verdicts; (iii) acceptance against speed-up, with the fitted line and the break-even
acceptance with its interval. Page style (fonts, colours, layout) comes from style.py, which the
page shares; a new part of the analysis adds its HTML to `section`'s parts and its figures to its
list, in the same form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import plotly.graph_objects as go

from specsweep.analysis import analyze as an
from specsweep.analysis.coverage import FRACTION
from specsweep.analysis.records import acceptance_label
from specsweep.records.sources import Source
from specsweep.report import union_section
from specsweep.report.style import (BAD, CURVE_COLORS, GOOD, SUBPLOT_TITLE, SYMBOLS, base_layout, column, esc,
                                    method_color, share, short_patterns, subplots, t, wrap)

PANEL_PX = 400
FOLD = 8  # verdicts listed open up to this many


@dataclass
class Section:
    html: str
    figures: list[tuple[str, str, str, go.Figure]] = field(default_factory=list)
    analyses: list[an.SourceAnalysis] = field(default_factory=list)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def _ci(ci, fmt=_pct) -> str:
    return "" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _panels(analyses: list[an.SourceAnalysis], many: bool, want) -> list[tuple[str, list]]:
    """(title, items) per (source, target) that has something to draw; want(a) -> [(target, item)]."""
    out = []
    for a in analyses:
        by_target: dict[str, list] = {}
        for target, item in want(a):
            by_target.setdefault(target, []).append(item)
        for target, items in by_target.items():
            out.append((f"{a.source} · {target}" if many else target, items))
    return out


def _family_color(f, i: int) -> str:
    """A family in its method's colour (as on the rest of the page); symbols tell families of one
    method apart."""
    method = f.trials[0].get("method") if f.trials else None
    return method_color(method) if method else CURVE_COLORS[i % len(CURVE_COLORS)]


def fig_cost(analyses: list[an.SourceAnalysis]) -> go.Figure | None:
    many = len(analyses) > 1
    panels = _panels(analyses, many, lambda a: [(f.target, f) for f in a.fits])
    if not panels:
        return None
    fig = column([p[0] for p in panels])
    for row, (_, fits) in enumerate(panels, 1):
        for i, f in enumerate(fits):
            color = _family_color(f, i)
            x = [r["n_drafted"] / r["n_generated"] for r in f.trials]
            y = [1000.0 / r["decode_tps"] for r in f.trials]
            name = t(f.label) + ("" if f.fit is None else f": {f.fit.intercept:.2f} + {f.fit.slope:.3f} x, "
                                                            f"R² {f.fit.r2:.3f}")
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="markers", name=name, legendgroup=f"r{row}f{i}",
                marker=dict(color=color, size=8, opacity=0.85, symbol=SYMBOLS[i % len(SYMBOLS)],
                            line=dict(color="white", width=0.5)),
                customdata=[[t(r.get("cell")), t(r.get("prompt_id")), r.get("trial")] for r in f.trials],
                hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}, trial %{customdata[2]}"
                              "<br>%{x:.2f} draft tokens per token, %{y:.2f} ms per token<extra></extra>"),
                row=row, col=1)
            if f.fit is not None:
                x0, x1 = f.x_range
                fig.add_trace(go.Scatter(x=[x0, x1], y=[f.fit.at(x0), f.fit.at(x1)], mode="lines",
                                         line=dict(color=color, width=2), showlegend=False,
                                         legendgroup=f"r{row}f{i}", hoverinfo="skip"), row=row, col=1)
        base = [f.baseline_ms for f in fits if f.baseline_ms is not None]
        if base:
            fig.add_hline(y=min(base), line=dict(color="#444", dash="dash", width=1.3), row=row, col=1,
                          annotation_text="baseline", annotation_position="bottom right",
                          annotation_font=dict(size=11, color="#444"))
        fig.update_xaxes(title_text="draft tokens per generated token", rangemode="tozero", row=row, col=1)
        fig.update_yaxes(title_text="ms per generated token", rangemode="tozero", row=row, col=1)
    _side_legend(fig, PANEL_PX * len(panels) + 60)
    return fig


def _side_legend(fig: go.Figure, height: int) -> None:
    """Page layout with the legend under the panels, one family a line: family names with their
    lines are long, and beside the panels they would leave them (and their titles) no width."""
    entries = sum(1 for tr in fig.data if tr.showlegend is not False)
    legend_px = 24 + 19 * entries
    base_layout(fig, height + legend_px)
    fig.update_layout(margin=dict(t=84, r=20, b=50 + legend_px),
                      legend=dict(orientation="h", xref="paper", x=0, xanchor="left", yref="container",
                                  y=0, yanchor="bottom", entrywidth=1, entrywidthmode="fraction"))


def fig_residuals(analyses: list[an.SourceAnalysis]) -> go.Figure | None:
    many = len(analyses) > 1
    panels = _panels(analyses, many, lambda a: [(f.target, f) for f in a.fits if f.knee is not None and f.knee.points])
    if not panels:
        return None
    fig = column([p[0] for p in panels])
    for row, (_, fits) in enumerate(panels, 1):
        for i, f in enumerate(fits):
            k = f.knee
            color = _family_color(f, i)
            fig.add_trace(go.Scatter(
                x=[p["coverage"] for p in k.points], y=[p["residual"] for p in k.points], mode="markers",
                name=t(f.label) + (" (dense control)" if k.role == "control" else ""),
                marker=dict(color=color, size=8, opacity=0.85, symbol=SYMBOLS[i % len(SYMBOLS)]),
                customdata=[[t(p["cell"]), p["x"]] for p in k.points],
                hovertemplate="<b>%{customdata[0]}</b><br>coverage %{x:.1%}, x = %{customdata[1]:.2f}"
                              "<br>residual %{y:+.2f} ms per token<extra></extra>"), row=row, col=1)
        fig.add_vline(x=FRACTION, line=dict(color=BAD, dash="dash", width=1.3), row=row, col=1,
                      annotation_text=f"{FRACTION:.0%} of experts", annotation_position="top left",
                      annotation_font=dict(size=11, color=BAD))
        fig.add_hline(y=0, line=dict(color="#444", width=1), row=row, col=1)
        measured = any(f.knee.coverage_source == "traced" for f in fits)
        fig.update_xaxes(title_text=("routed-expert coverage per verify (traced where measured)" if measured else
                                     "expected routed-expert coverage per verify"), tickformat=".0%", range=[0, 1.02],
                         row=row, col=1)
        fig.update_yaxes(title_text="ms per token off the line", row=row, col=1)
    _side_legend(fig, PANEL_PX * len(panels) + 60)
    return fig


BREAK_EVEN_PX = 330  # one panel of the break-even grid
BREAK_EVEN_CHARS = 50  # a title's line in one of two columns of an 800 px page (12 px font)


def fig_break_even(analyses: list[an.SourceAnalysis]) -> go.Figure | None:
    """One panel per line (across a target's configs, or per swept arm), two columns when there
    are more than two; every panel shows the 1x line, reached or not."""
    many = len(analyses) > 1
    panels = _panels(analyses, many, lambda a: [(b.target, b) for b in a.break_even])
    if not panels:
        return None
    cols = 1 if len(panels) <= 2 else 2
    rows = -(-len(panels) // cols)
    titles = [wrap(short_patterns(p[0]), BREAK_EVEN_CHARS if cols == 2 else 90) for p in panels]
    # between two rows: the x axis' title and the next row's title, as many lines as the longest
    gap = 56 + 17 * max(x.count("<br>") + 1 for x in titles)
    plot_px = BREAK_EVEN_PX * rows + gap * (rows - 1)
    fig = subplots(titles, rows=rows, cols=cols, horizontal_spacing=0.12,
                   vertical_spacing=gap / plot_px if rows > 1 else 0.1)
    shown: set[str] = set()
    for i, (_, bes) in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        b = bes[0]
        for method in dict.fromkeys(p["method"] for p in b.points):
            pts = [p for p in b.points if p["method"] == method]
            fig.add_trace(go.Scatter(
                x=[p["acceptance"] for p in pts], y=[p["speedup"] for p in pts], mode="markers", name=t(method),
                legendgroup=method, showlegend=method not in shown,
                marker=dict(color=method_color(method), size=10, line=dict(color="white", width=1),
                            symbol=["diamond" if p["synthetic"] else "circle" for p in pts]),
                customdata=[[t(p["cell"]), "synthetic acceptance" if p["synthetic"] else "",
                             acceptance_label(p["acceptance"], p.get("configured"))] for p in pts],
                hovertemplate="<b>%{customdata[0]}</b><br>acceptance %{customdata[2]}, speed-up %{y:.2f}x"
                              "<br>%{customdata[1]}<extra></extra>"), row=row, col=col)
            shown.add(method)
        # after the traces: plotly leaves shapes out of a subplot that has none yet
        fig.add_hline(y=1, line=dict(color="#444", dash="dash", width=1.3), row=row, col=col)
        top = max([p["speedup"] for p in b.points] + [1.1])
        if b.fit is not None:
            ends = [b.fit.at(0), b.fit.at(1)]
            top = max([top] + ends)
            fig.add_trace(go.Scatter(x=[0, 1], y=ends, mode="lines", showlegend=False,
                                     line=dict(color="#333", width=1.5), hoverinfo="skip"), row=row, col=col)
        if b.acceptance is not None and 0 <= b.acceptance <= 1:
            if b.interval is not None:
                lo, hi = max(b.interval[0], 0.0), min(b.interval[1], 1.0)
                if lo < hi:
                    fig.add_vrect(x0=lo, x1=hi, fillcolor="rgba(26,127,55,0.12)", line_width=0, row=row, col=col)
            # the label on the wider side of the line, inside its own panel
            fig.add_vline(x=b.acceptance, line=dict(color=GOOD, width=1.5), row=row, col=col,
                          annotation_text=f"break-even {b.acceptance:.0%}" +
                                          (f" [{share(b.interval[0])}, {share(b.interval[1])}]" if b.interval
                                           else ""),
                          annotation_position="top right" if b.acceptance < 0.5 else "top left",
                          annotation_font=dict(size=11, color=GOOD))
        elif b.acceptance is not None:
            fig.add_annotation(x=0.02, y=0.96, xref=f"x{i + 1 if i else ''} domain",
                               yref=f"y{i + 1 if i else ''} domain", xanchor="left", yanchor="top", showarrow=False,
                               text=f"no break-even within 0-100%<br>(the line reaches 1x at {b.acceptance:.0%})",
                               font=dict(size=11, color=BAD))
        fig.update_xaxes(title_text="acceptance (accepted / drafted)", title_font=dict(size=12), tickformat=".0%",
                         range=[-0.03, 1.05], row=row, col=col)
        fig.update_yaxes(title_text="speed-up (paired)", title_font=dict(size=12), ticksuffix="x",
                         range=[0, top * 1.08], row=row, col=col)
    first = max(x.count("<br>") + 1 for x in titles[:cols])
    # above the first row: the toolbar's band, then its titles
    base_layout(fig, plot_px + 60 + 44 + 17 * first)
    fig.update_annotations(font_size=12)  # the break-even labels
    fig.update_annotations(selector=dict(name=SUBPLOT_TITLE), font_size=11.5)  # two titles fit a row at 800 px
    fig.update_layout(margin=dict(t=44 + 17 * first))
    return fig


def _paired_table(a: an.SourceAnalysis) -> str:
    head = ["config", "design", "blocks", "pairs", "tok/s", "change", "95% t-interval", "95% bootstrap", "accept",
            "run-to-run", "throttled"]
    out = ["<table class='data'><tr>" + "".join(f"<th class='{'l' if h == 'config' else ''}'>{esc(h)}</th>"
                                                for h in head) + "</tr>"]
    for r in a.paired:
        spread = "" if not r.run_spread else (f"{r.run_spread['n_runs']} runs, sd {r.run_spread['stdev']:.1%} "
                                              f"({_pct(r.run_spread['min'])} .. {_pct(r.run_spread['max'])})")
        cls = "" if r.change is None else ("up" if r.change > 0 else "down")
        cells = [f"<td class='l'>{esc(r.cell)}{' (synthetic acceptance)' if r.synthetic else ''}</td>",
                 f"<td>{esc(r.design)}</td>", f"<td>{r.n_blocks}</td>", f"<td>{r.n_pairs}</td>",
                 f"<td>{r.tps_mean:.1f}</td>", f"<td class='{cls}'>{esc(_pct(r.change) or 'n/a')}</td>",
                 f"<td>{esc(_ci(r.t_interval))}</td>", f"<td>{esc(_ci(r.bootstrap_interval))}</td>",
                 f"<td>{esc(acceptance_label(r.acceptance, r.configured_acceptance))}</td>", f"<td>{esc(spread)}</td>",
                 f"<td>{f'{r.n_throttled}/{r.n_kept}' if r.n_throttled else ''}</td>"]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def _fits_table(a: an.SourceAnalysis) -> str:
    head = ["target", "family", "trials", "draft lengths", "intercept ms [95%]", "slope ms per draft token [95%]",
            "R²", "baseline ms"]
    out = ["<table class='data'><tr>" + "".join(f"<th class='{'l' if h in ('target', 'family') else ''}'>"
                                                f"{esc(h)}</th>" for h in head) + "</tr>"]
    for f in a.fits:
        fit = f.fit
        cells = [f"<td class='l'>{esc(f.target)}</td>", f"<td class='l'>{esc(f.label)}</td>",
                 f"<td>{f.n_trials}</td>", f"<td>{f.n_levels}</td>",
                 f"<td>{esc(f'{fit.intercept:.2f} ' + _ci(fit.intercept_ci, lambda v: f'{v:.2f}') if fit else f.note)}"
                 f"</td>",
                 f"<td>{esc(f'{fit.slope:.3f} ' + _ci(fit.slope_ci, lambda v: f'{v:.3f}') if fit else '')}</td>",
                 f"<td>{'' if fit is None else f'{fit.r2:.3f}'}</td>",
                 f"<td>{'' if f.baseline_ms is None else f'{f.baseline_ms:.2f}'}</td>"]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def _knee_text(f) -> str:
    """Both coverage tests of a family: over its drafts' real lengths, and at the configured draft
    length (as the published audit counted coverage)."""
    drafts = f.knee.verdict
    conf = f.knee_configured.verdict if f.knee_configured is not None else None
    if conf is None:
        return drafts
    if conf == drafts:
        return f"{drafts} (the same at the configured draft length)"
    return f"over its drafts' lengths: {drafts}; at the configured draft length (as the audit counted): {conf}"


def _verdicts(a: an.SourceAnalysis) -> list[str]:
    items = []
    for b in a.break_even:
        if b.acceptance is None:
            value = ""
        elif 0 <= b.acceptance <= 1:
            value = (f"break-even acceptance {b.acceptance:.1%}" +
                     ("" if b.interval is None else f" [{b.interval[0]:.1%}, {b.interval[1]:.1%}]"))
        else:  # the note says where the line would cross 1x, extrapolated
            value = ""
        items.append(f"{b.target}: " + "; ".join(x for x in (value, b.note) if x))
    for f in a.fits:
        if f.knee is not None and f.knee.status != "no line":
            items.append(f"{f.target} · {f.label}: {_knee_text(f)}")
    return items


def section(sources: list[Source], analyses: list[an.SourceAnalysis] | None = None) -> Section:
    """The page's analysis: HTML (escaped) and figures, from the sources (or analyses made already)."""
    analyses = an.analyze(sources) if analyses is None else analyses
    if not analyses:
        return Section("", [], [])
    many = len(analyses) > 1
    parts = []
    for a in analyses:
        if many:
            parts.append(f"<h3>{esc(a.source)}</h3>")
        parts.extend(f"<p class='note'>{esc(n)}</p>" for n in a.notes)
        verdicts = _verdicts(a)
        listed = "<ul class='verdicts'>" + "".join(f"<li>{esc(v)}</li>" for v in verdicts) + "</ul>"
        if len(verdicts) > FOLD:  # a long list opens on demand; the page's first screen has the answer
            listed = (f"<details><summary>{len(verdicts)} verdicts: the break-even of each line, the coverage "
                      f"test of each drafter family</summary>{listed}</details>")
        parts.append(listed)
        if a.paired:  # long with many configs: on demand
            parts.append(f"<details><summary>each config against its paired baseline ({len(a.paired)} configs, "
                         f"95% intervals)</summary><div style='overflow-x:auto'>{_paired_table(a)}</div></details>")
        if a.unpaired:
            parts.append(f"<p class='note'>{len(a.unpaired)} trial(s) could not be paired: " + esc("; ".join(
                f"{u.cell} (run {u.run}, block {u.block}, {u.prompt_id})" for u in a.unpaired[:8])) + "</p>")
        if a.fits:
            parts.append(f"<div style='overflow-x:auto'>{_fits_table(a)}</div>")
    figures = []
    cost = fig_cost(analyses)
    if cost is not None:
        figures.append(("fig-cost", "Cost per token against drafting",
                        "One point per trial: milliseconds per generated token against draft tokens per generated "
                        "token, coloured by drafter family, with each family's least-squares line (its equation and "
                        "R² in the legend) and the baseline's ms per token dashed. The slope is what one more "
                        "drafted token costs; one straight line means no knee.", cost))
    resid = fig_residuals(analyses)
    if resid is not None:
        figures.append(("fig-coverage", "Does cost bend where expert coverage saturates?",
                        "Each trial's distance from its family's line against the share of routed experts one of "
                        "its verify passes reads: measured for traced trials (trace_experts), else expected (uniform "
                        f"routing, over its drafts' real lengths); dashed: "
                        f"{FRACTION:.0%}. A dense target is drawn against a MoE's routing as a control. The verdicts, "
                        "also at the configured draft length as the published audit counted coverage, are listed "
                        "above.", resid))
    union = union_section.figure(analyses, [p for s in sources for p in s.probes])
    if union is not None:
        figures.append(("fig-union", union_section.HEADING, union_section.NOTE, union))
        parts.append(union_section.html(analyses))
    be = fig_break_even(analyses)
    if be is not None:
        figures.append(("fig-break-even", "Acceptance against paired speed-up",
                        "One point per speculative config: its acceptance and its speed-up paired with the baseline "
                        "of its own blocks (diamonds: synthetic acceptance); the line is a least-squares fit, and "
                        "where it crosses 1x is the break-even acceptance, shaded with its bootstrap interval over "
                        "configs.", be))
    return Section("\n".join(parts), figures, analyses)
