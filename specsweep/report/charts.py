"""The per-config charts and the probe's: one figure per target (and KV type) and card that has
records, so that no chart is an empty panel. Each takes a `shape.Panel` and the card's label (a
source's label: its card, and the run's name where two runs share a card).

- `fig_tps`: decode tok/s per config (mean, min-max whiskers), the change against the baseline;
- `fig_prompts`: every trial against the baseline's mean on the same prompt;
- `fig_time`: ms per generated token split into draft, verify, rollback and host (None where the
  records have no split: llama-server reports none);
- `fig_probe`: T(K)/T(1) and the break-even acceptance per draft length, from probe records.
"""

from __future__ import annotations

import plotly.graph_objects as go

from specsweep.report import shape
from specsweep.report.style import (BAD, CURVE_COLORS, GOOD, PART_COLORS, PART_NAMES, PROMPT_COLORS, ROW_PX,
                                    base_layout, chart_layout, method_color, pct, subplots, t, wrap)


def title(panel: shape.Panel, source: str, extra: str = "") -> str:
    """A chart's title: the target and KV type, the card; wrapped and escaped."""
    return wrap(f"{panel.title} · {source}{extra}")


def configs_of(panel: shape.Panel, source: str) -> list[tuple[str, shape.Config]]:
    return [(k, panel.configs[(source, k)]) for k in panel.rows if (source, k) in panel.configs]


def _rows_axis(fig: go.Figure, keys: list[str]) -> None:
    """Config rows top down; the range fixed to the rows, since plotly pads a category axis for
    the text traces (the change labels) by rows that hold nothing."""
    fig.update_yaxes(categoryorder="array", categoryarray=[t(k) for k in reversed(keys)], automargin=True,
                     ticks="", showgrid=False, range=[-0.6, len(keys) - 0.4])


def _height(n_rows: int) -> int:
    return max(n_rows, 2) * ROW_PX + 40


def fig_tps(panel: shape.Panel, source: str) -> go.Figure:
    mine = configs_of(panel, source)
    fig = go.Figure()
    for method in dict.fromkeys(cfg.method for _, cfg in mine):
        sel = [(k, cfg) for k, cfg in mine if cfg.method == method]
        fig.add_trace(go.Bar(
            orientation="h", y=[t(k) for k, _ in sel], x=[cfg.mean for _, cfg in sel], name=t(method),
            marker=dict(color=method_color(method), line=dict(width=0)), width=0.7,
            error_x=dict(type="data", symmetric=False, array=[cfg.hi - cfg.mean for _, cfg in sel],
                         arrayminus=[cfg.mean - cfg.lo for _, cfg in sel], thickness=1.3, width=4, color="#333"),
            customdata=[[t(cfg.key), cfg.lo, cfg.hi, cfg.n_trials,
                         "(baseline)" if cfg.method == "baseline" else (pct(cfg.change) or "n/a"),
                         cfg.acceptance_text or "-", cfg.lossless] for _, cfg in sel],
            hovertemplate="<b>%{customdata[0]}</b><br>mean %{x:.1f} tok/s (min %{customdata[1]:.1f}, "
                          "max %{customdata[2]:.1f}, %{customdata[3]} trials)<br>vs baseline %{customdata[4]}"
                          "<br>acceptance %{customdata[5]}, lossless %{customdata[6]}<extra></extra>"))
    # the change against baseline, right of each bar's max
    spec = [(k, cfg) for k, cfg in mine if cfg.method != "baseline" and cfg.change is not None]
    if spec:
        fig.add_trace(go.Scatter(
            x=[cfg.hi for _, cfg in spec], y=[t(k) for k, _ in spec], mode="text",
            text=[f"  {cfg.change:+.1%}" for _, cfg in spec], textposition="middle right",
            textfont=dict(size=13, color=[GOOD if cfg.change > 0 else BAD for _, cfg in spec]),
            showlegend=False, hoverinfo="skip", cliponaxis=False))
    base = panel.baselines(source)
    for b in base:
        fig.add_vline(x=b, line=dict(color="#444", dash="dash", width=1.5))
    extra = (" · baseline " + " / ".join(f"{b:.1f}" for b in base) + " tok/s (dashed)") if base else ""
    chart_layout(fig, _height(len(mine)), title(panel, source, extra), barmode="overlay", bargap=0.25)
    _rows_axis(fig, [k for k, _ in mine])
    fig.update_xaxes(range=[0, max(cfg.hi for _, cfg in mine) * 1.2], title_font=dict(size=12),
                     title_text="decode tok/s (bar: mean, whiskers: min-max over trials)")
    return fig


def fig_prompts(points: list[shape.TrialPoint], panel: shape.Panel, source: str) -> go.Figure | None:
    mine = [p for p in points if p.panel == panel.key and p.source == source]
    if not mine:
        return None
    keys = [k for k, _ in configs_of(panel, source)]
    prompts = list(dict.fromkeys(p.prompt for p in points))
    relative = all(p.change is not None for p in mine)
    fig = go.Figure()
    mismatch = False
    for i, prompt in enumerate(prompts):
        sel = [p for p in mine if p.prompt == prompt]
        if not sel:
            continue
        mismatch |= not all(p.lossless or p.synthetic for p in sel)
        fig.add_trace(go.Scatter(
            orientation="h", y=[t(p.key) for p in sel], x=[p.change * 100 if relative else p.tps for p in sel],
            mode="markers", name=t(prompt), offsetgroup=prompt,
            marker=dict(color=PROMPT_COLORS[i % len(PROMPT_COLORS)], size=9, opacity=0.85,
                        symbol=["diamond-open" if p.synthetic else "circle" if p.lossless else "x" for p in sel],
                        line=dict(color="white", width=0.5)),
            customdata=[[t(p.key), t(p.prompt), p.trial, p.tps, pct(p.change) or "-",
                         p.acceptance_text or "-",
                         "synthetic acceptance" if p.synthetic else "yes" if p.lossless else "no"] for p in sel],
            hovertemplate="<b>%{customdata[0]}</b><br>prompt %{customdata[1]}, trial %{customdata[2]}"
                          "<br>%{customdata[3]:.1f} tok/s, %{customdata[4]} vs the baseline on this prompt"
                          "<br>acceptance %{customdata[5]}, same tokens as baseline: %{customdata[6]}"
                          "<extra></extra>"))
    if mismatch:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="× tokens differ from the baseline",
                                 marker=dict(symbol="x", color="#555", size=9)))
    chart_layout(fig, _height(len(keys)), title(panel, source), scattermode="group", scattergap=0.35)
    _rows_axis(fig, keys)
    if relative:
        xs = [p.change * 100 for p in mine]
        lo, hi = min(xs + [-10.0]), max(xs + [10.0])
        pad = (hi - lo) * 0.06
        fig.add_vline(x=0, line=dict(color="#444", dash="dash", width=1.5))
        fig.update_xaxes(range=[lo - pad, hi + pad], ticksuffix="%", title_font=dict(size=12),
                         title_text="decode tok/s vs the baseline's mean on the same prompt")
    else:
        fig.update_xaxes(title_text="decode tok/s (no baseline to compare with)", title_font=dict(size=12))
    return fig


def fig_time(panel: shape.Panel, source: str) -> go.Figure | None:
    """None where no config has a time split (llama-server reports none)."""
    mine = [(k, cfg) for k, cfg in configs_of(panel, source) if None not in cfg.ms_per_token.values()]
    if not mine:
        return None
    fig = go.Figure()
    for part in shape.TIME_PARTS:
        fig.add_trace(go.Bar(
            orientation="h", y=[t(k) for k, _ in mine], x=[cfg.ms_per_token[part] for _, cfg in mine],
            name=PART_NAMES[part], marker=dict(color=PART_COLORS[part], line=dict(width=0)), width=0.7,
            customdata=[[t(k), sum(cfg.ms_per_token.values())] for k, cfg in mine],
            hovertemplate="<b>%{customdata[0]}</b><br>" + PART_NAMES[part] +
                          " %{x:.3f} ms per token (of %{customdata[1]:.3f})<extra></extra>"))
    totals = [sum(cfg.ms_per_token.values()) for _, cfg in mine]
    fig.add_trace(go.Scatter(x=totals, y=[t(k) for k, _ in mine], mode="text", text=[f"  {v:.3g} ms" for v in totals],
                             textposition="middle right", textfont=dict(size=12, color="#333"), showlegend=False,
                             hoverinfo="skip", cliponaxis=False))
    chart_layout(fig, _height(len(mine)), title(panel, source), barmode="stack", bargap=0.25)
    _rows_axis(fig, [k for k, _ in mine])
    fig.update_xaxes(range=[0, max(totals + [1e-9]) * 1.2], title_font=dict(size=12),
                     title_text="ms per generated token (mean over trials)")
    return fig


def fig_probe(curves: list[shape.ProbeCurve]) -> go.Figure:
    fig = subplots([wrap("Verify cost: one pass over K tokens / one decode step", 36),
                    wrap("Break-even acceptance for a draft of K-1 tokens", 36)], rows=1, cols=2,
                   horizontal_spacing=0.1)
    kmax = max(max(c.ks) for c in curves)
    ticks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if k <= kmax]
    fig.add_trace(go.Scatter(x=ticks, y=ticks, mode="lines", name="K separate steps (no batching gain)",
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
                hovertemplate="%{customdata[0]}<br>K=%{x}: predicted bytes ratio %{y:.2f}<extra></extra>"),
                row=1, col=1)
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
                       text="below its curve, a draft<br>of that length loses", font=dict(size=11, color=BAD))
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(k) for k in ticks], title_text="K (tokens verified)",
                     row=1, col=1)
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{k}" for k in ticks], title_text="T(K) / T(1)",
                     row=1, col=1)
    nticks = [k for k in ticks if k <= max(kmax - 1, 1)]
    fig.update_xaxes(type="log", tickvals=nticks, ticktext=[str(k) for k in nticks],
                     title_text="draft length K-1", row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], title_text="break-even per-token acceptance", tickformat=".0%", row=1, col=2)
    # the legend (one long line per probe) below the charts, where the toolbar is not
    base_layout(fig, 560 + 22 * len(curves))
    fig.update_layout(legend=dict(orientation="h", yref="paper", yanchor="top", y=-0.16, x=0, xanchor="left"),
                      margin=dict(t=90, b=60 + 22 * len(curves)))
    return fig
