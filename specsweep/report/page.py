"""The report page: shaped records -> one self-contained HTML file.

What a visitor sees first is the answer (`answer.py`): per target and card, the config that wins,
by how much with what interval, its llama-server flags and break-even, plain decoding's speed and
the config to avoid. Then speed-up against acceptance as curves (`curves.py`), the per-config
charts (`charts.py`), one chart per target and card that has records, the probe's verify cost, the
analysis (`analysis_section`: paired changes, the cost model, the coverage test, the break-even
lines), predicted beside measured (`predict_section`), where the weights were and the backends
side by side, and the long per-config lists (`tables.py`) folded under <details>.

plotly.js is inlined once, so that the file opens offline: the vendored scatter+bar partial bundle
(`bundle.py`), gzip'd and base64, which the page's loader (`assets.py`) unpacks with the browser's
`DecompressionStream('gzip')` (Chrome 80+, Firefox 113+, Safari 16.4+) and runs; then it draws
every figure from its JSON (`<script type="application/json" data-figure=ID>`, `<` escaped). A
browser without DecompressionStream gets a one-line message (`#specsweep-message`) and the
tables; the status element then says `data-plotly="unsupported"`. Every string that comes from
records (card names, cell and prompt names, model files, ...) is escaped: with `html.escape` in the
page's HTML, and in what plotly draws (trace names, tick labels, titles, hover text) as well, since
plotly.js reads a few HTML-like tags in its text; escaped, plotly shows `<script>` as the text it is.

The page reports on itself for tests and for anyone curious: `#specsweep-status` gets
`data-drawn` (figures whose `Plotly.newPlot` promise resolved), `data-plotly` (plotly.js's version
once unpacked) and `data-ready="yes"` once every figure drew, and `#specsweep-errors` collects
uncaught errors, rejected promises and `console.error` calls.
"""

from __future__ import annotations

import time

import plotly.graph_objects as go

from specsweep import __version__
from specsweep.analysis import analyze as an
from specsweep.records.sources import Source
from specsweep.report import (analysis_section, answer, backends_section, charts, curves, names, placement_section,
                              predict_section, scopes, shape, tables)
from specsweep.report.assets import CSS, HOOKS, LOADER, figure_html, template_html
from specsweep.report.bundle import plotly_bundle
from specsweep.report.style import SYNTHETIC_BADGE, esc  # noqa: F401  (tests and callers read them here)
from specsweep.report.summary import uneven_stops



def _server_note(sources: list[Source]) -> str:
    n = sum(t.get("backend") == "server" for s in sources for t in s.trials)
    return f" (and through llama.cpp's llama-server: {n} trials)" if n else ""


def _warnings(sources: list[Source]) -> list[str]:
    """What qualifies the answer: arms that stopped at different lengths, throttled trials (HTML)."""
    out = []
    for src in sources:
        uneven = uneven_stops(src.trials)
        throttled = sum(bool((t.get("telemetry") or {}).get("throttled")) for t in src.trials)
        if uneven:
            out.append(f"<b>{esc(src.label)}</b>: with ignore_eos off, arms stopped at different lengths on "
                       f"{len(uneven)} prompt(s) (e.g. {esc(uneven[0])}): their tok/s cover different texts")
        if throttled:
            out.append(f"<b>{esc(src.label)}</b>: {throttled} trial(s) ran while the GPU throttled (marked in the "
                       f"tables)")
    return out


def _section(div_base: str, heading: str, note: str, figs: list[go.Figure | None], missing: list[str] = ()) -> str:
    """An h2, its note, and one chart per target and card (the figures that exist)."""
    drawn = [f for f in figs if f is not None]
    if not drawn and not missing:
        return ""
    parts = [f"<h2>{esc(heading)}</h2>\n"] + [f"<p class='note'>{esc(x)}</p>\n" for x in note.split("\n\n")]
    parts += [figure_html(f, f"{div_base}-{i}") + "\n" for i, f in enumerate(drawn, 1)]
    if missing:
        parts.append("<p class='note'>" + esc("; ".join(missing)) + "</p>\n")
    return "".join(parts)


def render(sources: list[Source], title: str | None = None) -> str:
    sources = names.readable(sources)  # a model named by its Hugging Face blob gets its own name
    rows = shape.configs(sources)
    panels = shape.panels(rows)
    trial_sources = [s.label for s in sources if any(c.source == s.label for c in rows)]
    trial_points = shape.prompt_points(sources, rows)
    probe_curves = shape.probe_curves(sources)
    outputs = shape.outputs(sources, rows)
    analyses = an.analyze(sources) if rows else []
    analysis = analysis_section.section(sources, analyses) if rows else analysis_section.Section("")
    predicted_html, predicted_figs = predict_section.section(sources) if rows and probe_curves else ("", [])
    units = scopes.scopes(panels, analyses, sources)
    cards = list(dict.fromkeys(s.card for s in sources))
    title = title or "Speculative decoding in llama.cpp: " + ", ".join(cards)
    bundle = plotly_bundle()

    body = []  # everything between the title and the footer, in order
    if units:
        body.append(answer.block_html([answer.answer(u) for u in units], _warnings(sources)))
    body.append(_section("fig-curves", "Speed-up against acceptance", curves.note(units),
                         [curves.figure(u) for u in units]))
    if units:
        body.append(_section(
            "fig-tps", "Decode speed per config",
            "One chart per target (and KV cache type) and card, configs grouped by method. Bars are the mean decode "
            "tok/s over every trial, whiskers the fastest and slowest trial; the dashed line is the baseline, and "
            "the number right of a bar is its change against that baseline (means, not paired).",
            [charts.fig_tps(u.panel, u.source) for u in units]))
        body.append(_section(
            "fig-prompts", "Every trial, per prompt",
            "One point per trial, coloured by prompt, against the baseline's mean tok/s on the same prompt: prompts "
            "that speed up and prompts that slow down stay apart instead of averaging out. A cross marks a trial "
            "whose tokens differ from the baseline's, an open diamond a trial with synthetic acceptance (its drafts "
            "were accepted at random, so its tokens are not text).",
            [charts.fig_prompts(trial_points, u.panel, u.source) for u in units]))
        times = [charts.fig_time(u.panel, u.source) for u in units]
        body.append(_section(
            "fig-time", "Where the time goes",
            "Mean milliseconds per generated token, split into drafting, the target's verify pass (for the "
            "baseline: its decode step), rolling rejected tokens back, and the host's own work.", times,
            [f"{u.title}: no time split (llama-server reports none)" for u, f in zip(units, times) if f is None]))
    if probe_curves:
        body.append(_section(
            "fig-probe", "Verify cost (specsweep probe)",
            "Left: the time of one target pass over K tokens over one ordinary decode step, with the expert-union "
            "byte prediction (dashed) for MoE models; a curve far below the dotted line means batched verification "
            "is cheap. Right: the per-token acceptance a draft of K-1 tokens needs to break even, with the draft "
            "cost each probe recorded.", [charts.fig_probe(probe_curves)]))
    if analysis.html or analysis.figures:
        body.append("<h2>The analysis: paired changes, the cost model and break-even</h2>\n"
                    "<p class='note'>What <code>specsweep analyze</code> reports on these records: each speculative "
                    "config against the baseline it is paired with, the cost per generated token against how much "
                    "was drafted for it (a line per drafter family), whether that line bends where the target's "
                    "expert coverage saturates, and the acceptance at which speculation breaks even.</p>\n"
                    f"{analysis.html}\n")
        body += [f"<h3>{esc(h)}</h3>\n<p class='note'>{esc(n)}</p>\n{figure_html(f, i)}\n"
                 for i, h, n, f in analysis.figures]
    if predicted_html:
        body.append("<h2>Predicted and measured (specsweep predict)</h2>\n<p class='note'>Each probed card's decode "
                    "speed-up per config as <code>specsweep predict</code> gives it from the card's probe and the "
                    "config's acceptance (docs/analysis.md), beside what the card measured: a config the card ran "
                    "is predicted without its own records, one it never ran from its acceptance on the cards that "
                    f"did. These are projections from a model, labelled as such.</p>\n{predicted_html}\n")
        body += [f"<h3>{esc(h)}</h3>\n<p class='note'>{esc(n)}</p>\n{figure_html(f, i)}\n"
                 for i, h, n, f in predicted_figs]
    body.append(placement_section.section(sources))
    body.append(backends_section.section(sources, rows))
    body.append(_numbers(panels, trial_sources, trial_points, probe_curves))
    body.append(_outputs(outputs, panels, trial_sources))
    body.append("<h2>Runs shown</h2>\n<details><summary>the machines, software and model files behind each source"
                "</summary><div class='cards'>" + "".join(tables.header_html(shape.header(s)) for s in sources)
                + "</div></details>\n")
    n_figures = sum(x.count('<script type="application/json" data-figure=') for x in body)

    n_trials = sum(len(s.trials) for s in sources)
    n_probes = sum(len(s.probes) for s in sources)
    head = (f"<!doctype html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<meta name='generator' content='specsweep {esc(__version__)}'>\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<div id='specsweep-status' data-expected='{n_figures}' data-drawn='0'></div>\n"
            f"<pre id='specsweep-errors' data-count='0'></pre>\n"
            f"<script>{HOOKS % n_figures}</script>\n<main>\n"
            f"<h1>{esc(title)}</h1>\n<p class='lead'>{n_trials} trials and {n_probes} verify-cost probes from "
            f"{len(sources)} source{'s' if len(sources) != 1 else ''}; greedy decoding, llama.cpp in process through "
            f"llama-cpp-python{_server_note(sources)}. Generated by specsweep {esc(__version__)} on "
            f"{esc(time.strftime('%Y-%m-%d'))}.</p>\n<p id='specsweep-message' hidden></p>\n")
    foot = (f"<footer>specsweep {esc(__version__)} · one self-contained file: plotly.js "
            f"({esc(bundle.name)}, {esc(bundle.license)} licence) is inlined gzip'd and unpacked in the browser, "
            f"nothing is fetched when it opens</footer>\n</main>\n{template_html()}\n"
            f"<script type='application/octet-stream' id='specsweep-plotly' data-file='{esc(bundle.file)}' "
            f"data-bundle='{esc(bundle.name)}'>{bundle.gz_base64}</script>\n<script>{LOADER}</script>\n"
            "</body>\n</html>\n")
    return head + "".join(body) + foot


def _numbers(panels: list[shape.Panel], trial_sources: list[str], trial_points, probe_curves) -> str:
    """Every number behind the charts, per target, folded: long lists open on demand."""
    if not panels and not probe_curves:
        return ""
    parts = ["<h2>The numbers</h2>\n"]
    prows = shape.prompt_rows(trial_points)
    for p in panels:
        n = len(p.configs)
        parts.append(f"<h3>{esc(p.title)}</h3>\n<details><summary>per config ({n} config{'s' if n != 1 else ''})"
                     f"</summary><div style='overflow-x:auto'>{tables.config_table(p, trial_sources)}</div></details>\n"
                     f"<details><summary>per prompt</summary><div style='overflow-x:auto'>"
                     f"{tables.prompt_table(prows, p, trial_sources)}</div></details>\n")
    if probe_curves:
        parts.append(f"<details><summary>verify cost per K ({len(probe_curves)} probe"
                     f"{'s' if len(probe_curves) != 1 else ''})</summary>"
                     + "".join(tables.probe_table(c) + "\n" for c in probe_curves) + "</details>\n")
    return "".join(parts)


def _outputs(outputs: list[shape.OutputRow], panels: list[shape.Panel], trial_sources: list[str]) -> str:
    if not outputs:
        return ""
    parts = ["<h2>What each config generated</h2>\n<p class='note'>Per config and prompt, from the outputs the trial "
             "records store: where its tokens first part from the baseline's on the same prompt (same reference "
             "key), with the text either side (↵: a newline), and the first trial's text on demand (at most "
             f"{shape.TEXT_CAP:,} characters each). On a GPU, batched and one-token passes round near-ties apart, so "
             "a speculative output may part from the baseline's; with synthetic acceptance it does by design.</p>\n"]
    for p in panels:
        n = sum(r.panel == p.key for r in outputs)
        if n:
            parts.append(f"<h3>{esc(p.title)}</h3>\n<details><summary>{n} outputs</summary>"
                         f"<div style='overflow-x:auto'>{tables.outputs_table(outputs, p, trial_sources)}</div>"
                         f"</details>\n")
    return "".join(parts)
