"""Predicted beside measured on the report page (`specsweep predict`'s model, docs/analysis.md).

For every card that has a probe of a target its sources hold trials of (same shape, KV type and
GPU count), every config recorded with that target on any card is predicted for the card:
- a config the card measured is predicted without its own records (costs from the card's other
  arms, else from the other configs of its arm), so the two columns are not one number twice;
- a config only other cards ran is predicted from its acceptance there, which is how merged
  contributions answer a card that probed but never ran it.
One table per target shape (a measured and a predicted column per card) and a figure of predicted
against measured speed-up. Every string from records is escaped.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import plotly.graph_objects as go

from specsweep.analysis import predict as pr
from specsweep.analysis import records as rec
from specsweep.analysis.predict_validation import THRESHOLD
from specsweep.errors import SpecsweepError
from specsweep.records.sources import Source
from specsweep.report.style import CURVE_COLORS, base_layout, change_cls, esc, pct, t


@dataclass
class Row:
    card: str
    shape: str
    target: str
    config: str
    method: str
    measured: dict | None  # the card's paired measurement
    predicted: pr.Prediction | None
    how: str  # "held out: other arms" / "held out: same arm" / "from its acceptance elsewhere" / why not


def rows(sources: list[Source]) -> list[Row]:
    """Predicted (and measured) per card and config; [] when no probe covers the trials."""
    try:
        datas = pr.card_data(sources)
    except SpecsweepError:
        return []
    out = []
    for data in datas:
        profiles = pr.profiles_for(sources, data.shape)
        if not profiles:
            continue
        measured = pr.measured_rows(data.trials) if data.trials else {}
        here = rec.speculative_by(data.trials, "cell")
        for prof, trials in profiles:
            mine = here.get(prof.label)
            m = measured.get(str(mine[0].get("cell_id"))) if mine else None
            try:
                if mine:
                    got, tier = pr.predict_held_out(data, prof, mine, n_boot=0, with_break_even=False)
                    how = f"held out: {tier}"
                else:
                    s = pr.settings_of(trials)
                    got = pr.predict_one(data, prof, s["n_predict"], s["rollback"], s["loop"],
                                         pr.base_loop_of(data.trials, s["loop"]), n_boot=0, with_break_even=False)
                    how = "from its acceptance on another card"
            except SpecsweepError as e:
                got, how = None, f"not predicted: {e.message}"
            out.append(Row(data.card, str(data.shape), data.curve.file, prof.label, prof.method, m, got, how))
    return out


def table(rs: list[Row]) -> str:
    cards = list(dict.fromkeys(r.card for r in rs))
    configs = list(dict.fromkeys(r.config for r in rs))
    by = {(r.card, r.config): r for r in rs}
    head = "<tr><th class='l'>config</th>" + "".join(
        f"<th>{esc(c)}<br>measured</th><th>{esc(c)}<br>predicted</th>" for c in cards) + "<th class='l'>notes</th></tr>"
    out = ["<table class='data'>", head]
    for cfg in configs:
        cells = [f"<td class='l'>{esc(cfg)}</td>"]
        notes = []
        for c in cards:
            r = by.get((c, cfg))
            m = None if r is None or r.measured is None else r.measured["change"]
            p = None if r is None or r.predicted is None else r.predicted.change
            cells.append(f"<td class='{change_cls(m)}'>{esc(pct(m))}</td>")
            cells.append(f"<td class='{change_cls(p)}'>{esc(pct(p))}</td>")
            if r is not None and (r.predicted is None or r.measured is None):
                notes.append(f"{c}: {r.how}")
        cells.append(f"<td class='l'>{esc('; '.join(notes))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def figure(rs: list[Row]) -> go.Figure | None:
    both = [r for r in rs if r.measured is not None and r.predicted is not None]
    if not both:
        return None
    fig = go.Figure()
    top = max([1.1] + [1 + r.measured["change"] for r in both] + [r.predicted.speedup for r in both]) * 1.05
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", line=dict(color="#444", dash="dash", width=1.2),
                             name="predicted = measured", hoverinfo="skip"))
    for i, card in enumerate(dict.fromkeys(r.card for r in both)):
        mine = [r for r in both if r.card == card]
        fig.add_trace(go.Scatter(
            x=[1 + r.measured["change"] for r in mine], y=[r.predicted.speedup for r in mine], mode="markers",
            name=t(card), marker=dict(color=CURVE_COLORS[i % len(CURVE_COLORS)], size=9, line=dict(color="white", width=1)),
            customdata=[[t(r.config), t(r.target), t(r.how)] for r in mine],
            hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<br>measured %{x:.2f}x, predicted %{y:.2f}x"
                          "<br>%{customdata[2]}<extra></extra>"))
    base_layout(fig, 520)
    fig.update_xaxes(title_text="measured speed-up (paired)", range=[0, top], ticksuffix="x")
    fig.update_yaxes(title_text="predicted speed-up", range=[0, top], ticksuffix="x")
    return fig


def section(sources: list[Source]) -> tuple[str, list[tuple[str, str, str, go.Figure]]]:
    """(HTML, figures) of the predicted-against-measured part of the page; ("", []) without probes."""
    rs = rows(sources)
    if not rs:
        return "", []
    parts = []
    both = [r for r in rs if r.measured is not None and r.predicted is not None]
    if both:
        med = statistics.median(abs(r.predicted.change - r.measured["change"]) * 100 for r in both)
        signed = [r for r in both if abs(r.measured["change"]) > THRESHOLD]
        right = sum((r.predicted.change > 0) == (r.measured["change"] > 0) for r in signed)
        parts.append(f"<p class='note'>{len(both)} configs both measured and predicted here: median |error| "
                     f"{med:.1f} points of speed-up; sign right in {right} of {len(signed)} with a measured change "
                     f"beyond ±3%.</p>")
    for shape in dict.fromkeys(r.shape for r in rs):
        mine = [r for r in rs if r.shape == shape]
        parts.append(f"<h3>{esc(shape)}</h3>\n<div style='overflow-x:auto'>{table(mine)}</div>")
    fig = figure(rs)
    figures = []
    if fig is not None:
        figures.append(("fig-predicted", "Predicted against measured speed-up",
                        "One point per config a card both probed and measured: its paired speed-up against the "
                        "speed-up predicted from the card's probe and the config's acceptance, with the config's own "
                        "records left out of the costs. On the dashed line the prediction is exact.", fig))
    return "\n".join(parts), figures
