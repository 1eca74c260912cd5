"""The traced expert union on the report page: U(K), the share of a layer's experts a verify of K
tokens read, measured (`trace_experts` trials, `probe --trace-experts` records) against the i.i.d.
formula it replaces, one panel per (card, target) that has traced records; and the per-pass test's
verdict. Nothing is drawn where nothing was traced."""

from __future__ import annotations

import plotly.graph_objects as go

from specsweep.analysis import analyze as an
from specsweep.analysis.coverage import FRACTION
from specsweep.probe import theory
from specsweep.report.style import BAD, CURVE_COLORS, SYMBOLS, base_layout, column, esc, t

PANEL_PX = 380
HEADING = "The expert union, traced"
NOTE = ("The share of a layer's experts one pass of K tokens read, as the router chose them (traced: "
        "replayed after each trial in a context of its own, never timed), averaged over layers; the band "
        "is one standard deviation over passes. Grey dashed: the i.i.d. formula E(1-(1-k/E)^K) at K tokens; "
        "dotted: at the pass's distinct tokens (a token repeated in a batch routes alike). Probe records "
        f"traced with --trace-experts are lines of their own. Red: {FRACTION:.0%} of the experts.")


def _probe_curves(probes: list[dict]) -> dict[str, list[dict]]:
    """Traced probe records by model file."""
    out: dict[str, list[dict]] = {}
    for p in probes:
        if (p.get("curve") or [{}])[0].get("traced") is not None:
            out.setdefault((p.get("model") or {}).get("file", "?"), []).append(p)
    return out


def figure(analyses: list[an.SourceAnalysis], probes: list[dict]) -> go.Figure | None:
    many = len(analyses) > 1
    panels: list[tuple[str, list, list]] = []  # (title, traced families, probe records)
    by_file = _probe_curves(probes)
    for a in analyses:
        targets: dict[str, list] = {}
        for f in a.fits:
            if f.union:
                targets.setdefault(f.target, []).append(f)
        for target, fams in targets.items():
            panels.append((f"{a.source} · {target}" if many else target, fams, by_file.pop(target, [])))
    panels += [(f"probe · {file}", [], recs) for file, recs in by_file.items()]
    if not panels:
        return None
    fig = column([p[0] for p in panels])
    for row, (_, fams, recs) in enumerate(panels, 1):
        e = k_used = None
        k_max = 1
        for i, f in enumerate(fams):
            rows = f.union
            e, k_used = f.trials[0]["experts"]["n_expert"], f.trials[0]["experts"]["n_expert_used"]
            k_max = max(k_max, rows[-1].k)
            color = CURVE_COLORS[i % len(CURVE_COLORS)]
            ks = [r.k for r in rows]
            hi = [min(r.coverage + r.coverage_sd, 1.0) for r in rows]
            lo = [max(r.coverage - r.coverage_sd, 0.0) for r in rows]
            fig.add_trace(go.Scatter(x=ks + ks[::-1], y=hi + lo[::-1], fill="toself", fillcolor=color, opacity=0.15,
                                     line=dict(width=0), showlegend=False, hoverinfo="skip"), row=row, col=1)
            fig.add_trace(go.Scatter(
                x=ks, y=[r.coverage for r in rows], mode="lines+markers", name=t(f.label) + " (verifies)",
                line=dict(color=color, width=2), marker=dict(symbol=SYMBOLS[i % len(SYMBOLS)], size=7),
                customdata=[[r.n_passes, r.iid, r.iid_distinct, r.layer_min, r.layer_max] for r in rows],
                hovertemplate="K = %{x}: %{y:.1%} measured (%{customdata[0]} passes; layers %{customdata[3]:.0%}-"
                              "%{customdata[4]:.0%})<br>i.i.d. %{customdata[1]:.1%}, at distinct tokens "
                              "%{customdata[2]:.1%}<extra></extra>"), row=row, col=1)
            fig.add_trace(go.Scatter(x=ks, y=[r.iid_distinct for r in rows], mode="lines", showlegend=i == 0 and row == 1,
                                     name="i.i.d. at distinct tokens", line=dict(color="#888", dash="dot", width=1.3),
                                     hoverinfo="skip"), row=row, col=1)
        for j, p in enumerate(recs):
            curve = p["curve"]
            e, k_used = p["model"]["n_expert"], p["model"]["n_expert_used"]
            k_max = max(k_max, curve[-1]["k"])
            skew = (p["model"].get("file") or "")
            fig.add_trace(go.Scatter(
                x=[c["k"] for c in curve], y=[c["traced"]["coverage"] for c in curve], mode="lines+markers",
                name=t(f"probe, {(p.get('machine') or {}).get('gpu_name') or 'CPU'}"),
                line=dict(color=CURVE_COLORS[(len(fams) + j) % len(CURVE_COLORS)], width=1.5, dash="dash"),
                marker=dict(size=5), customdata=[[c["traced"]["distinct_tokens"]] for c in curve],
                hovertemplate=t(skew) + "<br>K = %{x} (%{customdata[0]} distinct): %{y:.1%}<extra></extra>"),
                row=row, col=1)
        if e:
            ks = list(range(1, k_max + 1))
            fig.add_trace(go.Scatter(x=ks, y=[theory.expected_union(e, k_used, k) / e for k in ks], mode="lines",
                                     name=f"i.i.d. formula ({e} experts, top-{k_used})", showlegend=row == 1,
                                     line=dict(color="#555", dash="dash", width=1.3), hoverinfo="skip"), row=row, col=1)
        fig.add_hline(y=FRACTION, line=dict(color=BAD, dash="dash", width=1.2), row=row, col=1)
        fig.update_xaxes(title_text="tokens in the pass (K)", type="log", row=row, col=1)
        fig.update_yaxes(title_text="share of a layer's experts read", tickformat=".0%", range=[0, 1.02], row=row, col=1)
    base_layout(fig, PANEL_PX * len(panels) + 120)
    fig.update_layout(legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
                      margin=dict(b=110))
    return fig


def verdicts(analyses: list[an.SourceAnalysis]) -> list[str]:
    """The per-pass test of each traced family: does a pass's time bend where its union saturates?"""
    return [f"{f.target} · {f.label}: {f.pass_test.verdict}" for a in analyses for f in a.fits
            if f.pass_test is not None]


def html(analyses: list[an.SourceAnalysis]) -> str:
    items = verdicts(analyses)
    if not items:
        return ""
    return ("<p class='note'>Each traced pass's own time against its length K:</p><ul class='verdicts'>"
            + "".join(f"<li>{esc(v)}</li>" for v in items) + "</ul>")
