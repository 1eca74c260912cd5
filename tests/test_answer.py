"""The page's first screen and its curves: which config wins per target and card (change, interval,
break-even, llama-server flags, plain decoding, the config to avoid), speed-up against acceptance as
one line per swept drafter and draft length, the published reference layer, and model files named
by what they are rather than by a Hugging Face blob."""

from __future__ import annotations

import json
import re

import pytest

from specsweep.analysis import analyze as an
from specsweep.records.sources import load
from specsweep.report import answer, curves, names, page, scopes, shape, style
from tests.test_plot import REPO, figure_json, manifest, sources_for, trial, write_results

LEVELS = (0.2, 0.4, 0.6, 0.8, 1.0)


def speed(acceptance: float, block: int) -> float:
    """mtp n=2: 0.6x at 0% acceptance, 1.4x at 100% (break-even 50%); the draft model never pays."""
    return 100.0 * (0.6 + 0.8 * acceptance) * (1 + 0.01 * (block - 1))


def at(t: dict, block: int) -> dict:
    """A trial of the blocks design, in block `block` of run 0."""
    return dict(t, block=block, run=0, design="blocks")


def blocks(extra=()) -> list[dict]:
    """Three blocks, two prompts: a baseline, mtp n=2 swept over synthetic acceptance, a draft model
    on text at 70% (-40%), and whatever `extra` makes per (block, prompt)."""
    out = []
    for b in range(3):
        for prompt in ("chat", "code"):
            out.append(at(trial("baseline", "baseline", 100.0 * (1 + 0.01 * (b - 1)), prompt, b), b))
            for a in LEVELS:
                t = trial(f"mtp n=2 a={a}", "mtp", speed(a, b), prompt, b, drafted=100, accepted=int(100 * a),
                          draft_max=2, draft_min=0, synth_len=1 + 2 * a)
                out.append(at(dict(t, synthetic=True, lossless=None), b))
            out.append(at(trial("draft d max=4", "draft", 60.0 * (1 + 0.01 * (b - 1)), prompt, b, drafted=100,
                                accepted=70, draft_max=4, draft_min=0), b))
            out += [f(b, prompt) for f in extra]
    return out


def the_answers(tmp_path, trials=None) -> list[answer.Answer]:
    sources = sources_for(tmp_path, trials or blocks())
    rows = shape.configs(sources)
    units = scopes.scopes(shape.panels(rows), an.analyze(sources, n_boot=200), sources)
    return [answer.answer(u) for u in units]


def test_the_best_config_on_text_wins_over_a_synthetic_bound(tmp_path):
    """A config measured on real text is the verdict when there is one; a synthetic config at 100%
    acceptance is a bound, never the answer."""
    text = lambda b, p: at(trial("mtp n=2 text", "mtp", 125.0 * (1 + 0.01 * (b - 1)), p, b,  # noqa: E731
                                 drafted=100, accepted=75, draft_max=2, draft_min=0), b)
    (a,) = the_answers(tmp_path, blocks([text]))
    assert a.best.cell == "mtp n=2 text" and a.best.change == pytest.approx(0.25, abs=1e-6)
    assert a.plain_tps == pytest.approx(100.0) and a.other_plain == []
    assert a.avoid.cell == "draft d max=4" and a.avoid.change == pytest.approx(-0.4, abs=1e-6)
    html = answer.verdict_html(a)
    assert "<b>mtp n=2 +25% [+25, +25], 3 blocks</b> over plain decoding at 75% acceptance" in html
    assert "llama-server flags: <code>--spec-type draft-mtp --spec-draft-n-max 2 --spec-draft-n-min 0" in html
    assert "--spec-synth" not in html
    assert "draft d n=4" in answer.avoid_html(a) and "-40% even at its best" in answer.avoid_html(a)


def test_synthetic_only_the_best_below_100_percent_with_its_sweeps_break_even(tmp_path):
    (a,) = the_answers(tmp_path)
    assert a.best.cell == "mtp n=2 a=0.8" and a.best.synthetic  # not a=1.0, the bound
    assert a.best.change == pytest.approx(0.24, abs=1e-6)
    lo, hi = a.best.t_interval
    assert lo < 0.24 < hi  # the blocks differ by 1% each way: an interval over three blocks
    assert a.line is not None and a.line.acceptance == pytest.approx(0.5, abs=1e-6)  # 0.6 + 0.8 a = 1
    html = answer.verdict_html(a)
    assert "at acceptance 80% drawn, 80% set (synthetic)" in html  # synth_len 2.6 of 2: 80% set
    assert "break-even 50% accepted" in html and "from its acceptance sweep" in html


def test_nothing_wins_the_verdict_says_so_and_gives_no_flags(tmp_path):
    slow = [t for t in blocks() if t["method"] != "mtp"]
    (a,) = the_answers(tmp_path, slow)
    html = answer.verdict_html(a)
    assert html.startswith("no config beats plain decoding") and "llama-server flags" not in html


def test_flags_name_the_draft_model_and_a_placement():
    s = {"method": "draft", "draft_max": 4, "draft_min": 1, "kv": "q8_0", "n_cpu_moe": 20, "synth_len": 3.0}
    flags, placed = answer.server_flags(s, {"draft": {"file": "qwen3.5-0.8b.gguf"}})
    assert flags.startswith("-md qwen3.5-0.8b.gguf --spec-type draft-simple --spec-draft-n-max 4 --spec-draft-n-min 1")
    assert placed == "--n-cpu-moe 20" and "synth" not in flags
    fitted = {"fit": {"n_gpu_layers": 49, "override_tensor": ["a=CPU", "b=CPU"]}}
    assert answer.server_flags({"method": "mtp", "draft_max": 2, "vram_budget": "24GiB"}, {}, fitted)[1] == \
        "-ngl 49 -ot a=CPU,b=CPU"
    both = {"method": "draft", "draft_max": 4, "vram_budget": "24GiB", "draft_n_cpu_moe": 8}  # the draft's own
    assert answer.server_flags(both, {}, fitted)[1] == "-ngl 49 -ot a=CPU,b=CPU --spec-draft-n-cpu-moe 8"
    assert answer.server_flags(both, {}, None)[1] == ""  # a budget no record resolved: no flags, no guess


def test_the_page_opens_with_the_answer_before_any_chart(tmp_path):
    text = page.render(sources_for(tmp_path, blocks()))
    start = text.index("<section id='specsweep-answer'>")
    assert start < text.index("data-figure=") and start < text.index("<h2>Speed-up against acceptance</h2>")
    assert text.index("<h1>") < start and "Runs shown" in text[text.index("data-figure="):]  # run facts below
    assert "no records" not in text


def test_a_sweep_is_a_curve_with_its_break_even_and_points_stay_points(tmp_path):
    sources = sources_for(tmp_path, blocks())
    text = page.render(sources)
    fig = figure_json(text, "fig-curves-1")
    by_name = {tr.get("name"): tr for tr in fig["data"] if tr.get("name")}
    line = by_name["mtp n=2"]
    assert line["mode"] == "lines+markers" and line["x"] == [pytest.approx(100 * a) for a in LEVELS]
    assert line["y"] == [pytest.approx(0.6 + 0.8 * a, abs=1e-6) for a in LEVELS]
    assert line["error_y"]["array"] and line["error_y"]["arrayminus"]  # the t-interval over blocks
    mark = next(tr for tr in fig["data"] if tr.get("legendgroup") == line["legendgroup"] and tr.get("y") == [1.0])
    assert mark["x"] == [pytest.approx(50.0, abs=1e-4)] and mark["marker"]["symbol"] == "line-ns"
    # the draft model on text is a point; nothing of it is a line
    assert by_name["draft: measured"]["mode"] == "markers" and by_name["draft: measured"]["x"] == [pytest.approx(70)]
    ref = by_name[curves.reference()["name"]]
    assert ref["visible"] == "legendonly" and len(ref["x"]) == len(curves.reference()["points"])
    assert fig["layout"]["title"]["text"].startswith("a3b.gguf · KV q8_0")


def test_the_reference_layer_names_its_source_and_commit_and_matches_the_findings():
    ref = curves.reference()
    assert ref["source"] == "https://github.com/thc1006/qwen3.6-speculative-decoding-rtx3090"
    assert re.fullmatch(r"[0-9a-f]{40}", ref["commit"]) and ref["path"].endswith("README.md")
    # the numbers docs/findings.md cites from the audit (its table of the 3090 arms)
    findings = (REPO / "docs" / "findings.md").read_text(encoding="utf-8")
    findings = findings[findings.index("**The audit's 3090 arms"):findings.index("Every sign reproduces")]
    cited = {(m, n): float(c) for m, n, c in
             re.findall(r"\| (DFlash|MTP|0\.8B draft) n(\d) at [\d.]+% \| ([+-][\d.]+)% \|", findings)}
    method = {"DFlash": "dflash", "MTP": "mtp", "0.8B draft": "draft"}
    points = {(p["method"], p["draft_max"]): p for p in ref["points"]}
    assert len(cited) == 5
    for (m, n), change in cited.items():
        assert points[(method[m], int(n))]["change"] * 100 == pytest.approx(change, abs=0.05)
    assert all(p["interval"][0] <= p["change"] <= p["interval"][1] and 0 <= p["acceptance"] <= 1
               for p in ref["points"])
    note = curves.note([])
    assert ref["commit"][:12] in note and ref["source"] in note and "off until its legend entry is clicked" in note


def test_a_model_in_the_hugging_face_cache_is_named_by_its_own_name(tmp_path):
    blob = "a5fd3b62" + "0" * 56
    path = f"/home/alice/.cache/huggingface/hub/models--g--gemma/snapshots/{'9' * 40}/gemma.gguf"
    trials = []
    for t in blocks():
        t = json.loads(json.dumps(t))
        t["models"]["target"].update(file=blob, sha256=blob, ref=path)
        trials.append(t)
    probe = {"kind": "probe", "model": {"file": blob, "path": "/x/blobs/" + blob, "header": {"name": "Gemma 3"}},
             "settings": {"gpus": [0], "kv": "q8_0"}, "curve": [{"k": 1, "ratio": 1.0, "median_ms": 5.0}]}
    d = write_results(tmp_path / "r", trials, [manifest()])
    (d / "probe.jsonl").write_text(json.dumps(probe) + "\n")
    sources = load([d])
    text = page.render(sources)
    assert "a5fd3b62" not in text and "gemma.gguf · KV q8_0" in text
    # the same file everywhere: trials and the probe of the same blob
    (readable,) = names.readable(sources)
    assert {p["model"]["file"] for p in readable.probes} == {"gemma.gguf"}
    assert names.model_name({"file": blob, "ref": "models.lock:gemma3"}) == "gemma3"
    assert names.model_name({"file": blob, "path": "/x/blobs/" + blob, "header": {"name": "Gemma 3"}}) == "Gemma 3"
    assert names.model_name({"file": "t.gguf"}) == "t.gguf"
    assert sources[0].trials[0]["models"]["target"]["file"] == blob  # the records themselves are not changed


def test_titles_wrap_left_of_the_toolbar_and_subplot_titles_are_named():
    title = style.wrap("qwen3.6-35b-a3b-full-ud-q4_k_xl-s0-b0.05-mtp.gguf · KV q8_0 · NVIDIA H200 · placement")
    assert all(len(line) <= style.TITLE_CHARS for line in title.split("<br>"))
    assert style.wrap("a" * 130, 50).count("<br>") == 2
    assert style.wrap("<b>x</b> · y") == "&lt;b&gt;x&lt;/b&gt; · y"
    fig = style.subplots(["one", "two"], rows=1, cols=2)
    fig.add_annotation(text="a label", x=0, y=0)
    assert [a.name for a in fig.layout.annotations] == [style.SUBPLOT_TITLE, style.SUBPLOT_TITLE, None]


def test_a_merged_community_file_answers_one_row_per_card(tmp_path):
    from specsweep.contrib import merge
    from tests.test_contrib import contribution_file

    a = contribution_file(tmp_path, "a.json")
    b = contribution_file(tmp_path, "b.json", card="NVIDIA H100 80GB HBM3", mid="m2")
    out = tmp_path / "community.jsonl"
    assert not merge.merge([a, b], out).rejected
    text = page.render(load([out]))
    block = text[text.index("<section id='specsweep-answer'>"):text.index("</section>")]
    rows = re.findall(r"<tr><td class='l'>(.*?)</td>", block)
    # per card, the q8_0 target (a draft and two n-gram configs) and the f16 one (its baseline only)
    cards = [re.sub(r"<wbr>", "", r.split("<span class='note'>")[1]) for r in rows]
    assert sorted(cards) == sorted(["NVIDIA GeForce RTX 3090</span>", "NVIDIA H100 80GB HBM3</span>"] * 2)
    assert block.count("plain decoding only: no speculative config ran here") == 2
