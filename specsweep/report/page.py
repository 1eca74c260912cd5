"""The report page: shaped records -> one self-contained HTML file.

plotly.js is inlined once, so that the file opens offline: the vendored scatter+bar partial bundle
(`bundle.py`), gzip'd and base64, which the page's loader unpacks with the browser's
`DecompressionStream('gzip')` (Chrome 80+, Firefox 113+, Safari 16.4+) and runs; then it draws
every figure from its JSON (`<script type="application/json" data-figure=ID>`, `<` escaped). A
browser without DecompressionStream gets a one-line message (`#specsweep-message`) and the
tables; the status element then says `data-plotly="unsupported"`. Every string that comes from records (card names, cell and
prompt names, model files, ...) is escaped: with `html.escape` in the page's HTML, and in what
plotly draws (trace names, tick labels, titles, hover text) as well, since plotly.js reads a few
HTML-like tags in its text; escaped, plotly shows `<script>` as the text it is.

The page reports on itself for tests and for anyone curious: `#specsweep-status` gets
`data-drawn` (figures whose `Plotly.newPlot` promise resolved), `data-plotly` (plotly.js's version
once unpacked) and `data-ready="yes"` once every figure drew, and `#specsweep-errors` collects
uncaught errors, rejected promises and `console.error` calls.

Besides the charts and tables: the analysis (`analysis_section`: paired changes, the cost model,
the coverage test and the break-even lines) and, for records that stored their outputs, what each
config generated and where its tokens first part from the baseline's.
"""

from __future__ import annotations

import html
import statistics
import time

import plotly.graph_objects as go
from plotly.io.json import to_json_plotly
from plotly.subplots import make_subplots

from specsweep import __version__, methods
from specsweep.report import shape
from specsweep.report.bundle import plotly_bundle
from specsweep.report.load import Source
from specsweep.report.summary import uneven_stops

PART_COLORS = {"draft": "#56B4E9", "verify": "#D55E00", "rollback": "#882255", "host": "#BBBBBB"}
PART_NAMES = {"draft": "draft", "verify": "verify (target decode)", "rollback": "rollback", "host": "host (Python)"}
PROMPT_COLORS = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#555555", "#EE7733"]
CURVE_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#555555"]
SYMBOLS = ["circle", "diamond", "square", "triangle-up", "star", "hexagon", "pentagon", "cross"]
GOOD, BAD = "#1a7f37", "#c62828"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
ROW_PX = 30  # height of one config row in the bar charts


def esc(value) -> str:
    """Any value from records, for the page's HTML."""
    return html.escape(str(value), quote=True)


def t(value) -> str:
    """Any value from records, for text plotly draws: its pseudo-HTML tags show as text."""
    return html.escape(str(value), quote=False)


def method_color(method: str) -> str:
    return methods.color(method)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def _num(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _base_layout(fig: go.Figure, height: int, **kw) -> None:
    fig.update_layout(height=height, template="plotly_white", font=dict(family=FONT, size=13, color="#222"),
                      margin=dict(l=20, r=30, t=84, b=50), hoverlabel=dict(font_size=12), showlegend=True,
                      legend=dict(orientation="h", yref="container", y=0.995, yanchor="top", x=0, xanchor="left",
                                  font=dict(size=13)), **kw)
    fig.update_annotations(font_size=14)  # subplot titles


def _grid(panels: list[shape.Panel], sources: list[str], extra_px: int = 0,
          with_baseline: bool = False) -> tuple[go.Figure, int]:
    """Rows: panels (target model x KV); columns: sources with trials; config rows aligned."""
    sizes = [max(len(p.rows), 1) for p in panels]
    titles = []
    for p in panels:
        for s in sources:
            base = p.baselines(s)
            extra = (" — baseline " + " / ".join(f"{b:.1f}" for b in base) + " tok/s" if with_baseline and base
                     else "")
            # beside each other, titles get two short lines: the card (and baseline), then the panel
            titles.append(t(p.title + extra + (" (dashed)" if extra else "")) if len(sources) == 1
                          else f"<b>{t(s)}</b>{t(extra)}<br>{t(p.title)}")
    gap_px = 110 if len(sources) == 1 else 130
    height = sum(sizes) * ROW_PX + gap_px * len(panels) + 90 + extra_px
    fig = make_subplots(rows=len(panels), cols=len(sources), shared_yaxes=True, subplot_titles=titles,
                        row_heights=[s / sum(sizes) for s in sizes], horizontal_spacing=0.04,
                        vertical_spacing=min(gap_px / height, 0.9 / max(len(panels) - 1, 1)) if len(panels) > 1 else 0)
    for r, p in enumerate(panels, 1):
        for c in range(1, len(sources) + 1):
            fig.update_yaxes(categoryorder="array", categoryarray=[t(k) for k in reversed(p.rows)], row=r, col=c,
                             automargin=True, ticks="", showgrid=False)
    return fig, height


def _empty(fig: go.Figure, row: int, col: int, why: str = "no records for this card") -> None:
    sub = fig.get_subplot(row, col)  # paper coordinates: plotly.js drops axes without traces
    fig.add_annotation(text=why, showarrow=False, font=dict(color="#888", size=13),
                       x=sum(sub.xaxis.domain) / 2, y=sum(sub.yaxis.domain) / 2, xref="paper", yref="paper")
    fig.update_xaxes(showticklabels=False, showgrid=False, row=row, col=col)


def _filled_cells(fig: go.Figure, panels: list[shape.Panel], sources: list[str]):
    """(row, col, panel, source, [(row key, config)]) of every grid cell that has configs; an empty
    one is marked "no records for this card" instead."""
    for r, p in enumerate(panels, 1):
        for c, src in enumerate(sources, 1):
            mine = [(k, p.configs[(src, k)]) for k in p.rows if (src, k) in p.configs]
            if mine:
                yield r, c, p, src, mine
            else:
                _empty(fig, r, c)


def fig_tps(panels: list[shape.Panel], sources: list[str]) -> go.Figure:
    fig, height = _grid(panels, sources, with_baseline=True)
    shown: set[str] = set()
    for r, c, p, src, mine in _filled_cells(fig, panels, sources):
        for method in dict.fromkeys(cfg.method for _, cfg in mine):
            sel = [(k, cfg) for k, cfg in mine if cfg.method == method]
            fig.add_trace(go.Bar(
                orientation="h", y=[t(k) for k, _ in sel], x=[cfg.mean for _, cfg in sel],
                name=t(method), legendgroup=method, showlegend=method not in shown,
                marker=dict(color=method_color(method), line=dict(width=0)), width=0.7,
                error_x=dict(type="data", symmetric=False, array=[cfg.hi - cfg.mean for _, cfg in sel],
                             arrayminus=[cfg.mean - cfg.lo for _, cfg in sel], thickness=1.3, width=4,
                             color="#333"),
                customdata=[[t(cfg.key), cfg.lo, cfg.hi, cfg.n_trials,
                             "(baseline)" if cfg.method == "baseline" else (_pct(cfg.change) or "n/a"),
                             "-" if cfg.acceptance is None else f"{cfg.acceptance:.1%}",
                             cfg.lossless] for _, cfg in sel],
                hovertemplate="<b>%{customdata[0]}</b><br>mean %{x:.1f} tok/s (min %{customdata[1]:.1f}, "
                              "max %{customdata[2]:.1f}, %{customdata[3]} trials)<br>vs baseline %{customdata[4]}"
                              "<br>acceptance %{customdata[5]}, lossless %{customdata[6]}<extra></extra>"),
                row=r, col=c)
            shown.add(method)
        # the change against baseline, right of each bar's max
        spec = [(k, cfg) for k, cfg in mine if cfg.method != "baseline" and cfg.change is not None]
        if spec:
            fig.add_trace(go.Scatter(
                x=[cfg.hi for _, cfg in spec], y=[t(k) for k, _ in spec], mode="text",
                text=[f"  {cfg.change:+.1%}" for _, cfg in spec], textposition="middle right",
                textfont=dict(size=13, color=[GOOD if cfg.change > 0 else BAD for _, cfg in spec]),
                showlegend=False, hoverinfo="skip", cliponaxis=False), row=r, col=c)
        top = max(cfg.hi for _, cfg in mine)
        for b in p.baselines(src):
            fig.add_vline(x=b, line=dict(color="#444", dash="dash", width=1.5), row=r, col=c)
        fig.update_xaxes(range=[0, top * 1.2], row=r, col=c)
        fig.update_xaxes(title_text="decode tok/s (bar: mean, whiskers: min-max over trials)", row=r, col=c,
                         title_font=dict(size=12))
    _base_layout(fig, height, barmode="overlay", bargap=0.25)
    return fig


def fig_acceptance(points: list[shape.Point], sources: list[str]) -> go.Figure:
    fig = go.Figure()
    top = max([p.speedup for p in points] + [1.2]) * 1.12
    fig.add_shape(type="rect", xref="paper", x0=0, x1=1, y0=0, y1=1, fillcolor="rgba(198,40,40,0.07)", line_width=0,
                  layer="below")
    fig.add_hline(y=1, line=dict(color="#444", dash="dash", width=1.5))
    fig.add_annotation(x=1, xref="paper", y=1.0, yref="paper", xanchor="right", yanchor="bottom", showarrow=False,
                       text="dashed: the baseline (1x) · shaded: slower than plain decoding",
                       font=dict(color=BAD, size=12))
    fig.add_vline(x=100, line=dict(color="#999", dash="dot", width=1))
    groups: dict[tuple[str, str], list[shape.Point]] = {}
    for p in points:
        groups.setdefault((p.method, p.source), []).append(p)
    many = len(sources) > 1
    losers = sorted((p for p in points if p.acceptance >= 0.995 and p.speedup < 1), key=lambda p: p.speedup)[:4]
    labelled = len(points) <= 16 and len(sources) == 1
    # labels alternate above and below their points, so that neighbours do not run into each other
    ranked = sorted(points, key=lambda p: (p.acceptance, p.speedup))
    place = {id(p): ("top " if i % 2 else "bottom ") + ("left" if p.acceptance > 0.6 else "right")
             for i, p in enumerate(ranked)}
    for (method, src), group in sorted(groups.items(), key=lambda kv: (shape.method_rank(kv[0][0]), kv[0][1])):
        symbol = SYMBOLS[sources.index(src) % len(SYMBOLS)] if src in sources else "circle"
        color = method_color(method)
        # synthetic acceptance: open markers outlined in the method's colour, a trace of their own so that
        # the legend shows the measured points' marker where a method has both
        parts = [(False, [p for p in group if not p.synthetic]), (True, [p for p in group if p.synthetic])]
        parts = [(synthetic, pts) for synthetic, pts in parts if pts]
        for i, (synthetic, pts) in enumerate(parts):
            fig.add_trace(go.Scatter(
                x=[p.acceptance * 100 for p in pts], y=[p.speedup for p in pts],
                mode="markers+text" if labelled else "markers",
                text=["" if p in losers else t(p.key) for p in pts], textfont=dict(size=11, color="#444"),
                textposition=[place[id(p)] for p in pts],
                name=t(f"{method} · {src}" if many else method), legendgroup=method, showlegend=i == 0,
                marker=dict(color=color, size=13, symbol=symbol + "-open" if synthetic else symbol, opacity=0.9,
                            line=dict(color=color, width=2) if synthetic else dict(color="white", width=1)),
                customdata=[[t(p.key), t(p.panel[0]), t(p.panel[1]), t(p.source), p.lossless] for p in pts],
                hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]} · KV %{customdata[2]} · %{customdata[3]}"
                              "<br>acceptance %{x:.1f}%<br>speedup %{y:.2f}x<br>lossless %{customdata[4]}" +
                              ("<br>synthetic acceptance (llama.cpp accepted drafts at a set rate)" if synthetic
                               else "") + "<extra></extra>"))
    if any(p.synthetic for p in points):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="open: synthetic acceptance",
                                 marker=dict(color="#555", size=11, symbol="circle-open", line=dict(width=2))))
    # where a perfect draft still loses, say so next to the point
    for i, p in enumerate(losers):
        fig.add_annotation(x=p.acceptance * 100, y=p.speedup, ax=-40 - 10 * i, ay=-35 - 28 * i,
                           text=f"{t(p.key)}{' · ' + t(p.source) if many else ''}: 100% accepted, "
                                f"{p.speedup - 1:+.0%}", showarrow=True, arrowhead=2,
                           arrowcolor=BAD, font=dict(size=11, color=BAD), xanchor="right",
                           bgcolor="rgba(255,255,255,0.85)")
    fig.update_xaxes(title_text="draft acceptance (accepted / drafted tokens, %)", range=[-4, 108], ticksuffix="%",
                     zeroline=False)
    fig.update_yaxes(title_text="speedup over baseline (mean tok/s ratio)", range=[0, top], ticksuffix="x",
                     zeroline=False)
    entries = len(groups) + any(p.synthetic for p in points)
    legend_rows = (entries + 2) // 3 if many else (entries + 5) // 6
    _base_layout(fig, 520 + 22 * legend_rows)
    fig.update_layout(margin=dict(t=62 + 24 * legend_rows))
    return fig


def fig_prompts(points: list[shape.TrialPoint], panels: list[shape.Panel], sources: list[str]) -> go.Figure:
    fig, height = _grid(panels, sources, extra_px=20)
    prompts = list(dict.fromkeys(p.prompt for p in points))
    shown: set[str] = set()
    any_mismatch = False
    for r, panel in enumerate(panels, 1):
        for c, src in enumerate(sources, 1):
            mine = [p for p in points if p.panel == panel.key and p.source == src]
            if not mine:
                _empty(fig, r, c)
                continue
            relative = all(p.change is not None for p in mine)
            for i, prompt in enumerate(prompts):
                sel = [p for p in mine if p.prompt == prompt]
                if not sel:
                    continue
                any_mismatch |= not all(p.lossless or p.synthetic for p in sel)
                fig.add_trace(go.Scatter(
                    orientation="h", y=[t(p.key) for p in sel],
                    x=[p.change * 100 if relative else p.tps for p in sel], mode="markers",
                    name=t(prompt), legendgroup=prompt, showlegend=prompt not in shown, offsetgroup=prompt,
                    marker=dict(color=PROMPT_COLORS[i % len(PROMPT_COLORS)], size=9, opacity=0.85,
                                symbol=["diamond-open" if p.synthetic else "circle" if p.lossless else "x"
                                        for p in sel],
                                line=dict(color="white", width=0.5)),
                    customdata=[[t(p.key), t(p.prompt), p.trial, p.tps, _pct(p.change) or "-",
                                 "-" if p.acceptance is None else f"{p.acceptance:.1%}",
                                 "synthetic acceptance" if p.synthetic else "yes" if p.lossless else "no"]
                                for p in sel],
                    hovertemplate="<b>%{customdata[0]}</b><br>prompt %{customdata[1]}, trial %{customdata[2]}"
                                  "<br>%{customdata[3]:.1f} tok/s, %{customdata[4]} vs the baseline on this prompt"
                                  "<br>acceptance %{customdata[5]}, same tokens as baseline: %{customdata[6]}"
                                  "<extra></extra>"), row=r, col=c)
                shown.add(prompt)
            if relative:
                xs = [p.change * 100 for p in mine]
                lo, hi = min(xs + [-10.0]), max(xs + [10.0])
                pad = (hi - lo) * 0.06
                fig.update_xaxes(range=[lo - pad, hi + pad], row=r, col=c)
                fig.add_vline(x=0, line=dict(color="#444", dash="dash", width=1.5), row=r, col=c)
                fig.update_xaxes(title_text="decode tok/s vs the baseline's mean on the same prompt",
                                 ticksuffix="%", row=r, col=c, title_font=dict(size=12))
            else:
                fig.update_xaxes(title_text="decode tok/s (no baseline to compare with)", row=r, col=c,
                                 title_font=dict(size=12))
    if any_mismatch:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="× tokens differ from the baseline",
                                 marker=dict(symbol="x", color="#555", size=9)))
    _base_layout(fig, height, scattermode="group", scattergap=0.35)
    return fig


def fig_time(panels: list[shape.Panel], sources: list[str]) -> go.Figure:
    fig, height = _grid(panels, sources)
    shown: set[str] = set()
    for r, c, p, src, mine in _filled_cells(fig, panels, sources):
        mine = [(k, cfg) for k, cfg in mine if None not in cfg.ms_per_token.values()]  # a server has no split
        if not mine:
            _empty(fig, r, c, "no time split (llama-server reports none)")
            continue
        for part in shape.TIME_PARTS:
            fig.add_trace(go.Bar(
                orientation="h", y=[t(k) for k, _ in mine], x=[cfg.ms_per_token[part] for _, cfg in mine],
                name=PART_NAMES[part], legendgroup=part, showlegend=part not in shown,
                marker=dict(color=PART_COLORS[part], line=dict(width=0)), width=0.7,
                customdata=[[t(k), sum(cfg.ms_per_token.values())] for k, cfg in mine],
                hovertemplate="<b>%{customdata[0]}</b><br>" + PART_NAMES[part] +
                              " %{x:.3f} ms per token (of %{customdata[1]:.3f})<extra></extra>"), row=r, col=c)
            shown.add(part)
        totals = [sum(cfg.ms_per_token.values()) for _, cfg in mine]
        fig.add_trace(go.Scatter(x=totals, y=[t(k) for k, _ in mine], mode="text",
                                 text=[f"  {v:.3g} ms" for v in totals], textposition="middle right",
                                 textfont=dict(size=12, color="#333"), showlegend=False, hoverinfo="skip",
                                 cliponaxis=False), row=r, col=c)
        fig.update_xaxes(range=[0, max(totals + [1e-9]) * 1.2], row=r, col=c,
                         title_text="ms per generated token (mean over trials)", title_font=dict(size=12))
    _base_layout(fig, height, barmode="stack", bargap=0.25)
    return fig


def fig_probe(curves: list[shape.ProbeCurve]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.09, subplot_titles=(
        "Verify cost: one pass over K tokens / one decode step",
        "Break-even acceptance for a draft of K-1 tokens"))
    kmax = max(max(c.ks) for c in curves)
    ks_ref = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if k <= kmax]
    fig.add_trace(go.Scatter(x=ks_ref, y=ks_ref, mode="lines", name="K separate steps (no batching gain)",
                             line=dict(color="#aaa", dash="dot", width=1.5), hoverinfo="skip"), row=1, col=1)
    for i, c in enumerate(curves):
        color = CURVE_COLORS[i % len(CURVE_COLORS)]
        group = f"curve{i}"
        fig.add_trace(go.Scatter(
            x=c.ks, y=c.ratio, mode="lines+markers", name=t(c.label), legendgroup=group,
            line=dict(color=color, width=2.2), marker=dict(size=6),
            customdata=[[ms, t(c.device), t(c.model)] for ms in c.median_ms],
            hovertemplate="%{customdata[2]}<br>K=%{x}: T(K)/T(1) = %{y:.2f} (%{customdata[0]:.3f} ms)"
                          "<br>%{customdata[1]}<extra></extra>"), row=1, col=1)
        if c.pred_ratio:
            fig.add_trace(go.Scatter(
                x=c.ks, y=c.pred_ratio, mode="lines", name="bytes read B(K)/B(1), predicted", legendgroup=group,
                showlegend=False, line=dict(color=color, dash="dash", width=1.3),
                customdata=[[t(c.model)] for _ in c.ks],
                hovertemplate="%{customdata[0]}<br>K=%{x}: predicted bytes ratio %{y:.2f}<extra></extra>"), row=1, col=1)
        if c.n:
            fig.add_trace(go.Scatter(
                x=c.n, y=c.break_even, mode="lines+markers", name=t(c.label), legendgroup=group, showlegend=False,
                line=dict(color=color, width=2.2), marker=dict(size=6), connectgaps=False,
                customdata=[[s, t(c.model)] for s in c.max_speedup],
                hovertemplate="%{customdata[1]}<br>draft %{x} tokens: speculation pays above acceptance %{y:.3f}"
                              "<br>at 100%: %{customdata[0]:.2f}x<extra></extra>"), row=1, col=2)
    if any(c.pred_ratio for c in curves):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="dashed: bytes read B(K)/B(1), predicted",
                                 line=dict(color="#555", dash="dash", width=1.3)), row=1, col=1)
    fig.add_annotation(x=0.99, y=0.04, xref="x2 domain", yref="y2 domain", xanchor="right", showarrow=False,
                       text="below its curve, a draft of that length loses to plain decoding",
                       font=dict(size=11, color=BAD))
    ticks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if k <= kmax]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(k) for k in ticks], title_text="K (tokens verified)",
                     row=1, col=1)
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{k}" for k in ticks], title_text="T(K) / T(1)",
                     row=1, col=1)
    nticks = [k for k in ticks if k <= max(kmax - 1, 1)]
    fig.update_xaxes(type="log", tickvals=nticks, ticktext=[str(k) for k in nticks],
                     title_text="draft length K-1", row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], title_text="break-even per-token acceptance", tickformat=".0%", row=1, col=2)
    _base_layout(fig, 560 + 22 * len(curves))
    fig.update_layout(legend=dict(orientation="h", yref="paper", yanchor="top", y=-0.16, x=0, xanchor="left"),
                      margin=dict(b=60 + 22 * len(curves)))
    return fig


# ----------------------------------------------------------------------------------------------
# HTML


CSS = """
:root { --fg: #222; --muted: #666; --line: #e3e3e3; --bg: #fafafa; }
body { font-family: %s; color: var(--fg); margin: 0; background: white; }
main { max-width: 1400px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 27px; margin: 0 0 6px; }
h2 { font-size: 21px; margin: 38px 0 4px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.lead { color: var(--muted); margin: 0 0 16px; }
p.note { color: var(--muted); margin: 4px 0 10px; font-size: 14px; max-width: 1000px; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: var(--bg);
        flex: 1 1 520px; font-size: 13px; }
.card h3 { margin: 2px 0 8px; font-size: 17px; }
.card table td { padding: 1px 10px 1px 0; vertical-align: top; }
.card table td:first-child { color: var(--muted); white-space: nowrap; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
ul.verdicts { margin: 6px 0; padding-left: 20px; }
ul.verdicts li { margin: 3px 0; }
table.data { border-collapse: collapse; font-size: 13px; margin: 6px 0 16px; }
table.data th, table.data td { border-bottom: 1px solid var(--line); padding: 3px 9px; text-align: right;
                               white-space: nowrap; }
table.data th { background: #f1f1f1; position: sticky; top: 0; }
table.data td.l, table.data th.l { text-align: left; }
table.data tr:nth-child(even) td { background: #fbfbfb; }
td.up { color: %s; font-weight: 600; } td.down { color: %s; font-weight: 600; }
span.dot { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
details { margin: 8px 0; } summary { cursor: pointer; color: #0b5cad; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; }
#specsweep-status, #specsweep-errors { display: none; }
#specsweep-message { border: 1px solid %s; color: %s; padding: 6px 10px; border-radius: 6px; }
span.badge { display: inline-block; font-size: 11px; padding: 0 5px; margin-left: 6px; border-radius: 3px;
             border: 1px solid #8a6d00; color: #8a6d00; background: #fff8e1; cursor: help; }
table.outputs td { white-space: normal; vertical-align: top; }
table.outputs td.ex { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px;
                      max-width: 640px; text-align: left; word-break: break-all; }
table.outputs mark { background: #ffe08a; }
ul.verdicts li.warn { color: #8a6d00; }
table.outputs span.note { color: var(--muted); }
table.outputs pre { white-space: pre-wrap; word-break: break-all; max-width: 640px; max-height: 320px;
                    overflow-y: auto; margin: 4px 0; font-size: 12px; background: var(--bg); padding: 6px; }
""" % (FONT, GOOD, BAD, BAD, BAD)

HOOKS = """
(function () {
  var errors = [];
  var expected = %d, drawn = 0;
  function show() {
    var el = document.getElementById("specsweep-errors");
    if (el) { el.textContent = errors.join("\\n"); el.setAttribute("data-count", String(errors.length)); }
  }
  function note(msg) { errors.push(String(msg)); show(); }
  window.addEventListener("error", function (e) { note("error: " + (e.message || e)); });
  window.addEventListener("unhandledrejection", function (e) {
    note("unhandled rejection: " + ((e.reason && e.reason.message) || e.reason));
  });
  var consoleError = console.error;
  console.error = function () {
    note("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
    return consoleError.apply(console, arguments);
  };
  window.specsweepDrawn = function (id) {
    var gd = document.getElementById(id);
    if (!gd || !gd.querySelector(".main-svg")) { note("figure " + id + " drew no SVG"); return; }
    drawn += 1;
    var st = document.getElementById("specsweep-status");
    st.setAttribute("data-drawn", String(drawn));
    if (drawn === expected) { st.setAttribute("data-ready", "yes"); }
  };
})();
"""


# Unpacks plotly.js (gzip, base64, in #specsweep-plotly), runs it, then draws every figure from its
# JSON. It sits at the end of <body>, after everything it reads.
LOADER = """
(function () {
  var st = document.getElementById("specsweep-status");
  function tell(msg) {
    var el = document.getElementById("specsweep-message");
    el.textContent = msg;
    el.hidden = false;
  }
  if (typeof DecompressionStream !== "function" || typeof Response !== "function" || !window.Blob ||
      !Blob.prototype.stream) {
    st.setAttribute("data-plotly", "unsupported");
    tell("The charts need a browser that can unpack gzip (DecompressionStream: Chrome 80+, Firefox 113+, " +
         "Safari 16.4+); the tables below hold every number.");
    return;
  }
  var packed = document.getElementById("specsweep-plotly");
  var bin = atob(packed.textContent.trim()), bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  new Response(stream).text().then(function (js) {
    var s = document.createElement("script");
    s.text = js + "\\n//# sourceURL=" + packed.getAttribute("data-file");
    document.head.appendChild(s);  // an inline script runs as it is inserted...
    s.remove();  // ...and keeps running once taken out: the DOM stays the page's own
    if (!window.Plotly) { throw new Error("plotly.js did not define Plotly"); }
    st.setAttribute("data-plotly", String(window.Plotly.version));
    Array.prototype.forEach.call(document.querySelectorAll("script[data-figure]"), function (el) {
      var id = el.getAttribute("data-figure"), fig = JSON.parse(el.textContent);
      window.Plotly.newPlot(id, fig.data, fig.layout, fig.config).then(function () {
        window.specsweepDrawn(id);
      }, function (e) { console.error("figure " + id + " did not draw: " + e); });
    });
  }).catch(function (e) {
    tell("The charts could not be drawn: " + e);
    console.error("plotly.js: " + e);
  });
})();
"""


def _json_for_script(obj) -> str:
    """JSON that cannot end its <script> element: `<`, `>` and `&` only occur inside strings there,
    where a \\u escape reads the same."""
    return to_json_plotly(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _figure_html(fig: go.Figure, div_id: str) -> str:
    spec = fig.to_dict()
    spec["config"] = {"displaylogo": False, "responsive": True,
                      "toImageButtonOptions": {"format": "png", "filename": div_id, "scale": 2}}
    return (f'<div id="{div_id}" class="plotly-graph-div" style="height:{int(fig.layout.height)}px; width:100%;">'
            f'</div>\n<script type="application/json" data-figure="{div_id}">{_json_for_script(spec)}</script>')


def _header_html(info: dict) -> str:
    rows = []
    c = info.get("contribution")
    origin = {"results": "results folder", "records": "records file", "contribution": "contribution"}.get(
        info["origin"], info["origin"])
    rows.append(("source", f"{esc(origin)} <code>{esc(info['name'])}</code>: {info['n_trials']} trials, "
                           f"{info['n_probes']} probes"))
    if c:
        extra = [f"contributed {esc(c['created'])}" if c.get("created") else "",
                 f"power limit {esc(c['power_limit_w'])} W" if c.get("power_limit_w") is not None else "power limit unknown"]
        clocks = c.get("clocks") or {}
        if clocks.get("graphics_mhz") or clocks.get("memory_mhz"):
            extra.append(f"clocks {esc(clocks.get('graphics_mhz') or '?')} / {esc(clocks.get('memory_mhz') or '?')} MHz "
                         f"(graphics / memory)")
        rows.append(("contribution", "; ".join(x for x in extra if x)))
        if c.get("notes"):
            rows.append(("notes", esc(c["notes"])))
    for run in info["runs"]:
        rows.append(("GPU", esc(run["gpus"])))
        rows.append(("driver / CUDA", f"{esc(run['driver'])} / {esc(run['cuda'])}"))
        rows.append(("CPU / OS", f"{esc(run['cpu'])} / {esc(run['os'])}"))
        rows.append(("llama.cpp", f"<code>{esc(run['llama_cpp'])}</code> (llama-cpp-python {esc(run['llama_cpp_python'])},"
                                  f" specsweep {esc(run['specsweep'])})"))
        what = f"matrix <code>{esc(run['matrix'])}</code>" if run["matrix"] != "probe" else "verify-cost probe"
        rows.append(("run", f"{what}, {esc(run['started'])}"))
        models = "<br>".join(f"{esc(f)} <code>{esc(sha or 'sha256 not recorded')}</code>"
                             for f, sha in run["models"].items())
        rows.append(("models", models or "-"))
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<div class="card"><h3>{esc(info["label"])}</h3><table>{body}</table></div>'


SYNTHETIC_BADGE = ("<span class='badge' title=\"llama.cpp's synthetic acceptance: drafts were accepted at random at a "
                   "set rate, so the tokens are not the target's text and have no lossless verdict\">synthetic</span>")


def _cell(v: str, cls: str = "") -> str:
    return f'<td class="{cls}">{v}</td>' if cls else f"<td>{v}</td>"


def _change_cls(x: float | None) -> str:
    return "" if x is None else ("up" if x > 0 else "down")


def _config_table(panel: shape.Panel, sources: list[str]) -> str:
    many = len(sources) > 1
    head = (["card"] if many else []) + ["config", "method", "trials", "tok/s mean", "min", "max", "vs base",
                                         "accept", "drafted/tok", "ckpt MB/tok", "lossless"] + [
        f"{p} ms/tok" for p in shape.TIME_PARTS]
    out = ["<table class='data'><tr>" + "".join(f"<th class='{'l' if h in ('card', 'config', 'method') else ''}'>"
                                                 f"{esc(h)}</th>" for h in head) + "</tr>"]
    for k in panel.rows:
        for src in sources:
            cfg = panel.configs.get((src, k))
            if cfg is None:
                continue
            cells = ([_cell(esc(src), "l")] if many else []) + [
                _cell(esc(cfg.key) + (SYNTHETIC_BADGE if cfg.n_synthetic else "")
                      + (f" <span class='badge warn' title='telemetry saw a throttle reason'>throttled "
                         f"{cfg.n_throttled}/{cfg.n_trials}</span>" if cfg.n_throttled else ""), "l"),
                _cell(f'<span class="dot" style="background:{method_color(cfg.method)}"></span>{esc(cfg.method)}', "l"),
                _cell(str(cfg.n_trials)), _cell(_num(cfg.mean)), _cell(_num(cfg.lo)), _cell(_num(cfg.hi)),
                _cell("" if cfg.method == "baseline" else (_pct(cfg.change) or "n/a"), _change_cls(cfg.change)
                      if cfg.method != "baseline" else ""),
                _cell("" if cfg.acceptance is None else f"{cfg.acceptance:.1%}"),
                _cell("" if cfg.method == "baseline" or cfg.drafted_per_token is None else f"{cfg.drafted_per_token:.2f}"),
                _cell("" if cfg.ckpt_mb_per_token is None else f"{cfg.ckpt_mb_per_token:.2f}"),
                _cell(esc(cfg.lossless), "" if cfg.all_lossless else "down"),
            ] + [_cell(_num(cfg.ms_per_token[p], 3)) for p in shape.TIME_PARTS]
            out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _prompt_table(rows: list[shape.PromptRow], panel: shape.Panel, sources: list[str]) -> str:
    many = len(sources) > 1
    head = (["card"] if many else []) + ["config", "prompt", "trials", "tok/s mean", "min", "max",
                                         "vs base (same prompt)", "accept"]
    out = ["<table class='data'><tr>" + "".join(f"<th class='{'l' if h in ('card', 'config', 'prompt') else ''}'>"
                                                 f"{esc(h)}</th>" for h in head) + "</tr>"]
    order = {k: i for i, k in enumerate(panel.rows)}
    mine = sorted((r for r in rows if r.panel == panel.key), key=lambda r: (order.get(r.key, 1 << 30),
                                                                           sources.index(r.source), r.prompt))
    for r in mine:
        change = statistics.fmean(r.changes) if r.changes else None
        cells = ([_cell(esc(r.source), "l")] if many else []) + [
            _cell(esc(r.key), "l"), _cell(esc(r.prompt), "l"), _cell(str(len(r.tps))),
            _cell(_num(statistics.fmean(r.tps))), _cell(_num(min(r.tps))), _cell(_num(max(r.tps))),
            _cell(_pct(change), _change_cls(change)),
            _cell("" if r.acceptance is None else f"{r.acceptance:.1%}")]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _probe_table(c: shape.ProbeCurve) -> str:
    be = dict(zip([n + 1 for n in c.n], zip(c.break_even, c.max_speedup)))
    rows = [("T(K) ms", [f"{v:.3f}" if v is not None else "" for v in c.median_ms]),
            ("T(K)/T(1)", [f"{v:.2f}" for v in c.ratio])]
    if c.pred_ratio:
        rows.append(("B(K)/B(1) predicted", [f"{v:.2f}" if v is not None else "" for v in c.pred_ratio]))
    rows.append(("break-even acceptance", ["-" if k not in be else ("never" if be[k][0] is None else f"{be[k][0]:.3f}")
                                           for k in c.ks]))
    rows.append(("speedup at 100%", ["-" if k not in be or be[k][1] is None else f"{be[k][1]:.2f}x" for k in c.ks]))
    head = "<tr><th class='l'>K</th>" + "".join(f"<th>{k}</th>" for k in c.ks) + "</tr>"
    body = "".join("<tr><td class='l'>" + esc(name) + "</td>" + "".join(f"<td>{esc(v)}</td>" for v in vals) + "</tr>"
                   for name, vals in rows)
    sw = f"; a single-token step after a K = 2 batch: {c.switch_ratio:.2f}x T(1)" if c.switch_ratio else ""
    return (f"<h3>{esc(c.label)}</h3><p class='note'>{esc(c.device)}, T(1) = {c.t1_ms:.3f} ms{esc(sw)}</p>"
            f"<div style='overflow-x:auto'><table class='data'>{head}{body}</table></div>")


def _excerpt(before: str, part: str) -> str:
    """Text either side of where two outputs part, the part marked; newlines shown as ↵."""
    def show(x: str) -> str:
        return esc(x).replace("\n", "↵")
    lead = "…" if len(before) >= shape.EXCERPT else ""
    tail = "…" if len(part) >= shape.EXCERPT else ""
    return f"{lead}{show(before)}<mark>{show(part) if part else '(end)'}</mark>{tail}"


def _outputs_table(rows: list[shape.OutputRow], panel: shape.Panel, sources: list[str]) -> str:
    many = len(sources) > 1
    head = (["card"] if many else []) + ["config", "prompt", "tokens", "against the baseline", "where they part",
                                         "text"]
    out = ["<table class='data outputs'><tr>" + "".join(
        f"<th class='{'' if h == 'tokens' else 'l'}'>{esc(h)}</th>"
        for h in head) + "</tr>"]
    order = {k: i for i, k in enumerate(panel.rows)}
    mine = sorted((r for r in rows if r.panel == panel.key),
                  key=lambda r: (order.get(r.key, 1 << 30), sources.index(r.source) if r.source in sources else 0,
                                 r.prompt))
    for r in mine:
        d = r.divergence
        cls = ""
        if r.method == "baseline":
            verdict, where = "the reference", ""
        elif r.base_tokens is None:
            verdict, where = "no baseline output to compare with", ""
        elif d is None:
            verdict, where, cls = "same tokens", "", "up"
        else:
            verdict = f"first differs at token {d.token} (of {r.n_tokens}; baseline {r.base_tokens})"
            if r.synthetic:
                verdict += " — synthetic acceptance: by design"
            where = ("the texts read the same (the tokens split it differently)" if d.char is None else
                     f"baseline: {_excerpt(d.before, d.base)}<br>this: {_excerpt(d.before, d.this)}")
        spread = "" if r.n_distinct == 1 else f" Its {r.n_trials} trials gave {r.n_distinct} different outputs."
        cut = "" if r.n_chars <= len(r.text) else f" The first {len(r.text):,} of {r.n_chars:,} characters shown."
        if r.n_chars:
            text = (f"<details><summary>trial {r.trial}: {r.n_chars:,} characters</summary><pre>{esc(r.text)}</pre>"
                    f"<span class='note'>{esc((spread + cut).strip())}</span></details>")
        else:
            text = f"trial {r.trial}: no text (its tokens decode to nothing).{esc(spread)}"
        cells = ([_cell(esc(r.source), "l")] if many else []) + [
            _cell(esc(r.key) + (SYNTHETIC_BADGE if r.synthetic else ""), "l"), _cell(esc(r.prompt), "l"),
            _cell(str(r.n_tokens)), _cell(verdict, f"l {cls}".strip()), _cell(where, "ex"), _cell(text, "l")]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _server_note(sources: list[Source]) -> str:
    n = sum(t.get("backend") == "server" for s in sources for t in s.trials)
    return f" (and through llama.cpp's llama-server: {n} trials)" if n else ""


def render(sources: list[Source], title: str | None = None) -> str:
    # they import this module's style
    from specsweep.report import analysis_section, backends_section, placement_section

    rows = shape.configs(sources)
    panels = shape.panels(rows)
    trial_sources = [s.label for s in sources if any(c.source == s.label for c in rows)]
    points = shape.speedup_points(rows)
    trial_points = shape.prompt_points(sources, rows)
    curves = shape.probe_curves(sources)
    outputs = shape.outputs(sources, rows)
    analysis = analysis_section.section(sources) if rows else analysis_section.Section("")
    from specsweep.report import predict_section  # it imports this module's style

    predicted_html, predicted_figs = predict_section.section(sources) if rows and curves else ("", [])
    cards = list(dict.fromkeys(s.card for s in sources))
    title = title or "Speculative decoding in llama.cpp: " + ", ".join(cards)
    bundle = plotly_bundle()

    figures: list[tuple[str, str, str, go.Figure]] = []  # (id, heading, note, figure)
    if panels:
        figures.append(("fig-tps", "Decode speed per config against plain decoding",
                        "One panel per target model and KV cache type, configs grouped by method. Bars are the mean "
                        "decode tok/s over every trial, whiskers the fastest and slowest trial; the dashed line is the "
                        "baseline, and the number right of a bar is its change against that baseline.",
                        fig_tps(panels, trial_sources)))
        if points:
            missing = shape.not_plotted(rows)
            note = ("One point per speculative config. Acceptance is accepted over drafted tokens; speedup is "
                    "its mean tok/s over the baseline's. Anything in the shaded band is slower than not "
                    "speculating at all: a point at 100% acceptance there means the draft was always right and "
                    "it still did not pay.")
            if any(p.synthetic for p in points):
                note += (" Open markers: synthetic acceptance (llama.cpp accepted the drafts at random at a set "
                         "rate), so acceptance there is a setting, not the drafter's.")
            if missing:
                note += " Not shown (nothing drafted, or no baseline): " + ", ".join(
                    sorted({c.key for c in missing})) + "."
            figures.append(("fig-acceptance", "Acceptance against speedup", note,
                            fig_acceptance(points, trial_sources)))
        figures.append(("fig-prompts", "Every trial, per prompt",
                        "One point per trial, coloured by prompt, against the baseline's mean tok/s on the same "
                        "prompt: prompts that speed up and prompts that slow down stay apart instead of averaging "
                        "out. A cross marks a trial whose tokens differ from the baseline's, an open diamond a trial "
                        "with synthetic acceptance (its drafts were accepted at random, so its tokens are not text).",
                        fig_prompts(trial_points, panels, trial_sources)))
        figures.append(("fig-time", "Where the time goes",
                        "Mean milliseconds per generated token, split into drafting, the target's verify pass (for "
                        "the baseline: its decode step), rolling rejected tokens back, and the host's own work.",
                        fig_time(panels, trial_sources)))
    if curves:
        figures.append(("fig-probe", "Verify cost (specsweep probe)",
                        "Left: the time of one target pass over K tokens over one ordinary decode step, with the "
                        "expert-union byte prediction (dashed) for MoE models; a curve far below the dotted line "
                        "means batched verification is cheap. Right: the per-token acceptance a draft of K-1 tokens "
                        "needs to break even, with the draft cost each probe recorded.",
                        fig_probe(curves)))
    n_figures = len(figures) + len(analysis.figures) + len(predicted_figs)

    parts = [f"<!doctype html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
             f"<meta name='generator' content='specsweep {esc(__version__)}'>\n"
             f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
             f"<div id='specsweep-status' data-expected='{n_figures}' data-drawn='0'></div>\n"
             f"<pre id='specsweep-errors' data-count='0'></pre>\n"
             f"<script>{HOOKS % n_figures}</script>\n<main>\n"]
    n_trials = sum(len(s.trials) for s in sources)
    n_probes = sum(len(s.probes) for s in sources)
    parts.append(f"<h1>{esc(title)}</h1>\n<p class='lead'>{n_trials} trials and {n_probes} verify-cost probes from "
                 f"{len(sources)} source{'s' if len(sources) != 1 else ''}; greedy decoding, "
                 f"llama.cpp in process through llama-cpp-python{_server_note(sources)}. Generated by specsweep {esc(__version__)} on "
                 f"{esc(time.strftime('%Y-%m-%d'))}.</p>\n<p id='specsweep-message' hidden></p>\n")
    if panels:
        items = []
        for p in panels:
            for src in trial_sources:
                if any(s == src for s, _ in p.configs):
                    who = f"{esc(src)}, " if len(trial_sources) > 1 else ""
                    items.append(f"<li><b>{who}{esc(p.title)}</b>: {esc(shape.verdict(p, src))}</li>")
        for src in sources:
            uneven = uneven_stops(src.trials)
            throttled = sum(bool((t.get("telemetry") or {}).get("throttled")) for t in src.trials)
            if uneven:
                items.append(f"<li class='warn'><b>{esc(src.label)}</b>: with ignore_eos off, arms stopped at "
                             f"different lengths on {len(uneven)} prompt(s) (e.g. {esc(uneven[0])}): their tok/s "
                             f"cover different texts</li>")
            if throttled:
                items.append(f"<li class='warn'><b>{esc(src.label)}</b>: {throttled} trial(s) ran while the GPU "
                             f"throttled (marked in the tables)</li>")
        parts.append("<h2>At a glance</h2>\n<ul class='verdicts'>" + "".join(items) + "</ul>\n")
    parts.append("<h2>Runs shown</h2>\n<div class='cards'>"
                 + "".join(_header_html(shape.header(s)) for s in sources) + "</div>\n")
    for div_id, heading, note, fig in figures:
        parts.append(f"<h2>{esc(heading)}</h2>\n<p class='note'>{esc(note)}</p>\n{_figure_html(fig, div_id)}\n")
    if analysis.html or analysis.figures:
        parts.append("<h2>The analysis: paired changes, the cost model and break-even</h2>\n"
                     "<p class='note'>What <code>specsweep analyze</code> reports on these records: each speculative "
                     "config against the baseline it is paired with, the cost per generated token against how much "
                     "was drafted for it (a line per drafter family), whether that line bends where the target's "
                     "expert coverage saturates, and the acceptance at which speculation breaks even.</p>\n"
                     f"{analysis.html}\n")
        for div_id, heading, note, fig in analysis.figures:
            parts.append(f"<h3>{esc(heading)}</h3>\n<p class='note'>{esc(note)}</p>\n{_figure_html(fig, div_id)}\n")
    if predicted_html:
        parts.append("<h2>Predicted and measured (specsweep predict)</h2>\n<p class='note'>Each probed card's decode "
                     "speed-up per config as <code>specsweep predict</code> gives it from the card's probe and the "
                     "config's acceptance (docs/analysis.md), beside what the card measured: a config the card ran "
                     "is predicted without its own records, one it never ran from its acceptance on the cards that "
                     f"did.</p>\n{predicted_html}\n")
        for div_id, heading, note, fig in predicted_figs:
            parts.append(f"<h3>{esc(heading)}</h3>\n<p class='note'>{esc(note)}</p>\n{_figure_html(fig, div_id)}\n")

    parts.append(placement_section.section(sources))
    parts.append(backends_section.section(sources, rows))
    parts.append("<h2>The numbers</h2>\n")
    prows = shape.prompt_rows(trial_points)
    for p in panels:
        parts.append(f"<h3>{esc(p.title)}</h3>\n<div style='overflow-x:auto'>{_config_table(p, trial_sources)}</div>\n"
                     f"<details><summary>per prompt</summary><div style='overflow-x:auto'>"
                     f"{_prompt_table(prows, p, trial_sources)}</div></details>\n")
    for c in curves:
        parts.append(_probe_table(c) + "\n")
    if outputs:
        parts.append("<h2>What each config generated</h2>\n<p class='note'>Per config and prompt, from the outputs "
                     "the trial records store: where its tokens first part from the baseline's on the same prompt "
                     "(same reference key), with the text either side (↵: a newline), and the first trial's text on "
                     f"demand (at most {shape.TEXT_CAP:,} characters each). On a GPU, batched and one-token passes "
                     "round near-ties apart, so a speculative output may part from the baseline's; with synthetic "
                     "acceptance it does by design.</p>\n")
        for p in panels:
            if any(r.panel == p.key for r in outputs):
                parts.append(f"<h3>{esc(p.title)}</h3>\n<div style='overflow-x:auto'>"
                             f"{_outputs_table(outputs, p, trial_sources)}</div>\n")
    parts.append(f"<footer>specsweep {esc(__version__)} · one self-contained file: plotly.js "
                 f"({esc(bundle.name)}, {esc(bundle.license)} licence) is inlined gzip'd and unpacked in the browser, "
                 f"nothing is fetched when it opens</footer>\n</main>\n")
    parts.append(f"<script type='application/octet-stream' id='specsweep-plotly' data-file='{esc(bundle.file)}' "
                 f"data-bundle='{esc(bundle.name)}'>{bundle.gz_base64}</script>\n<script>{LOADER}</script>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)
