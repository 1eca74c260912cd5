"""The analysis on the report page: figures in the page's (id, heading, note, figure) form, and
every string from records escaped, in the HTML and in what plotly draws."""

from __future__ import annotations

import json
import math

import pytest

from specsweep.records.sources import Source
from specsweep.report import analysis_section, assets
from tests.test_analysis import LENGTHS, blocks_records, line_trials

EVIL = "<script>alert(1)</script>"


def records() -> list[dict]:
    recs = line_trials(LENGTHS, lambda x: 27.0 + 4.04 * x, seed=8)
    for i, acc in enumerate((10, 40, 70, 90)):  # four configs: acceptance 10%-94%, speed-up rising with it
        for r in blocks_records([math.log(0.6 + 0.01 * acc)] * 5, cell=f"spec {i}"):
            if r["method"] == "baseline" and i:
                continue
            if r["method"] != "baseline":
                r["n_accepted"] = acc
            recs.append(r)
    recs[0]["cell"] = EVIL
    for r in recs:
        r["models"]["target"]["file"] = "<b>t.gguf"
    return recs


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def test_section_has_three_figures_and_escapes_records():
    sec = analysis_section.section([Source("mine", "records", records())])
    assert [f[0] for f in sec.figures] == ["fig-cost", "fig-coverage", "fig-break-even"]
    assert "<script" not in sec.html and "&lt;b&gt;t.gguf" in sec.html
    assert "no knee" in sec.html and "break-even acceptance" in sec.html
    for div_id, heading, note, fig in sec.figures:
        drawn = list(_strings(json.loads(fig.to_json())))
        assert not any("<script" in s or "<b>t.gguf" in s for s in drawn), div_id
        assert assets.figure_html(fig, div_id).count(f'id="{div_id}"') == 1
    cost = sec.figures[0][3]
    legend = [tr.name for tr in cost.data if tr.showlegend is not False and tr.name]
    fit = next(f.fit for f in sec.analyses[0].fits if f.fit is not None)
    assert any(f"{fit.slope:.3f} x, R² {fit.r2:.3f}" in name for name in legend)  # the line and its R^2
    be = sec.analyses[0].break_even[0]
    assert be.acceptance is not None and 0 < be.acceptance < 1
    assert any(f"break-even {be.acceptance:.0%}" in (a.text or "") for a in sec.figures[2][3].layout.annotations)


def test_no_trials_no_section():
    probe = {"kind": "probe", "model": {"file": "x.gguf"}}
    sec = analysis_section.section([Source("p", "records", [], [], [probe])])
    assert sec.html == "" and sec.figures == []


def test_traced_records_add_the_union_figure_and_the_pass_verdicts():
    """Traced trials (and traced probes) get 'The expert union, traced', one panel per target, with
    the measured union drawn as recorded; untraced records get no such figure (above)."""
    from specsweep.records import expert_union
    from tests.test_union import iid, pass_trials

    recs = pass_trials(lambda k: 4.0 + 0.6 * k, iid)
    for r in recs:
        r["models"]["target"]["file"] = "<b>t.gguf"
    probe = {"kind": "probe", "model": {"file": "p.gguf", "n_expert": 256, "n_expert_used": 8},
             "machine": {"gpu_name": None},
             "curve": [{"k": k, "traced": {"coverage": iid(k) * 0.9, "distinct_tokens": k}} for k in (1, 4, 16)]}
    sec = analysis_section.section([Source("mine", "records", recs, [], [probe])])
    ids = [f[0] for f in sec.figures]
    assert "fig-union" in ids
    fig = sec.figures[ids.index("fig-union")][3]
    assert [a.text for a in fig.layout.annotations if a.text and "gguf" in a.text] == ["&lt;b&gt;t.gguf", "probe · p.gguf"]
    measured = next(tr for tr in fig.data if tr.name and tr.name.endswith("(verifies)"))
    first = expert_union.read(recs[0])
    assert measured.x[0] == first.n_tokens[0] and measured.y[0] == pytest.approx(first.coverage[0])
    assert "per traced pass" not in sec.html and "a pass&#x27;s time goes" in sec.html  # the per-pass verdict, escaped
    assert "<b>t.gguf" not in sec.html
