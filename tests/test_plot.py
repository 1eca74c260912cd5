"""`specsweep plot` without a browser: loading results, shaping records for the charts, and the
page's HTML (the vendored plotly.js bundle inlined once, gzip'd; every string from records escaped;
at most 1.5 MB with a full device matrix)."""

from __future__ import annotations

import base64
import fnmatch
import gzip
import hashlib
import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.errors import SpecsweepError
from specsweep.records import outputs
from specsweep.records.sources import Source, load, only_card, probe_card
from specsweep.report import analysis_section, bundle, page, shape

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "results" / "probe" / "probe.jsonl"
PAGE_LIMIT = 1_500_000  # bytes: a page must fit a forum's attachment limit
SHA_T, SHA_D = "a" * 64, "c" * 64
BASE = {"target": "a3b", "kv": "q8_0", "flash_attn": True, "n_ctx": 4096, "n_batch": 512, "n_predict": 64,
        "trials": 2, "warmup": 1, "prompts": "default", "prompt_kinds": [], "chat": True, "gpus": [0], "threads": 0,
        "backend_sampling": True, "rollback": "checkpoint"}
REFERENCE = ("target", "kv", "flash_attn", "gpus", "n_predict", "prompts", "prompt_kinds", "chat")


def manifest(mid: str = "m1", gpu: str = "NVIDIA GeForce RTX 3090", **over) -> dict:
    m = {"kind": "manifest", "id": mid, "started": "2026-11-20T10:00:00+0000",
         "argv": ["/home/alice/venv/bin/specsweep", "run", "/home/alice/specsweep/matrices/a3b.toml", "--results",
                  "/home/alice/out/results"],
         "host": "alice-desktop", "os": "Linux 6.1.0", "python": "3.12.3", "cpu": "AMD Ryzen 9 5950X", "cpu_count": 32,
         "gpus": [{"index": 0, "name": gpu, "driver": "550.54.14", "memory_mib": 24576, "pci": "00000000:01:00.0"}],
         "cuda": "12.4", "llama_system_info": "CUDA : ARCHS = 860", "llama_cpp_python": "0.3.36",
         "llama_cpp_commit": "0c1e57098", "specsweep": "0.1.0", "matrix": "/home/alice/specsweep/matrices/a3b.toml",
         "matrix_sha256": "b" * 64,
         "models": {"a3b": {"path": "/home/alice/models/a3b.gguf", "sha256": SHA_T},
                    "d": {"path": "/home/alice/models/draft.gguf", "sha256": SHA_D}}}
    m.update(over)
    return m


def trial(cell: str, method: str = "baseline", tps: float = 100.0, prompt: str = "chat", index: int = 0,
          drafted: int = 0, accepted: int = 0, lossless: bool = True, mid: str = "m1", **settings) -> dict:
    s = dict(BASE, method=method, **settings)
    if method == "draft":
        s.setdefault("draft", "d")
        s.setdefault("draft_max", 4)
    models = {"target": {"name": "a3b", "ref": "synth qwen3.6-35b-a3b (full, Q4_0)", "file": "a3b.gguf",
                         "sha256": SHA_T}}
    if method == "draft":
        models["draft"] = {"name": "d", "ref": "/home/alice/models/draft.gguf", "file": "draft.gguf", "sha256": SHA_D}
    digest = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]  # noqa: E731
    n = 64
    return {"kind": "trial", "matrix": "mine", "cell_id": digest([cell, s]), "cell": cell, "method": method,
            "settings": s, "models": models, "reference_key": digest({k: s.get(k) for k in REFERENCE}),
            "prompt_id": f"default/{prompt}@0", "prompt": prompt, "prompt_kind": prompt, "prompt_tokens": 40,
            "trial": index, "prefill_ms": 10.0, "prefill_tps": 3900.0, "decode_tps": tps, "n_generated": n,
            "n_drafted": drafted, "n_accepted": accepted, "acceptance": accepted / drafted if drafted else None,
            "drafted_by_pos": [], "accepted_by_pos": [], "n_drafted_llama": drafted, "n_accepted_llama": accepted,
            "n_steps": n, "n_rollbacks": 0, "rollback": "seq_rm",
            "time_s": {"decode": n / tps, "draft": 0.2 * n / tps if method == "draft" else 0.0,
                       "verify": 0.7 * n / tps, "rollback": 0.0, "host": 0.1 * n / tps},
            "lossless": lossless, "first_mismatch": None if lossless else 5, "tokens_sha": "0" * 16,
            "finished": "2026-11-20T10:01:00+0000", "manifest": mid}


def write_results(root: Path, trials: list[dict], manifests: list[dict], name: str = "mine") -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "trials.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trials))
    (d / "manifests.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifests))
    return d


def sample_trials() -> list[dict]:
    """A bimodal cell: ngram-mod is 50% faster on code and 50% slower on chat, about even on average."""
    out = []
    for i in range(2):
        out += [trial("draft d max=4", "draft", 60.0 + i, "chat", i, drafted=40, accepted=40),
                trial("draft d max=4", "draft", 62.0 + i, "code", i, drafted=40, accepted=40),
                trial("baseline", "baseline", 100.0 + i, "chat", i), trial("baseline", "baseline", 100.0 - i, "code", i),
                trial("ngram-mod n=8", "ngram-mod", 50.0, "chat", i, drafted=10, accepted=2),
                trial("ngram-mod n=8", "ngram-mod", 150.0, "code", i, drafted=30, accepted=27),
                trial("ngram-mod n=24", "ngram-mod", 98.0, "chat", i),
                trial("baseline", "baseline", 120.0, "chat", i, kv="f16")]
    return out


def sources_for(tmp_path: Path, trials=None, manifests=None) -> list[Source]:
    d = write_results(tmp_path / "results", trials or sample_trials(), manifests or [manifest()])
    return load([d])


def test_panels_group_configs_by_method_and_compare_with_their_baseline(tmp_path):
    rows = shape.configs(sources_for(tmp_path))
    panels = shape.panels(rows)
    assert [p.key for p in panels] == [("a3b.gguf", "q8_0"), ("a3b.gguf", "f16")]
    q8 = panels[0]
    # the baseline was recorded after the draft cell; it still comes first, then draft, then ngram-mod
    assert q8.rows == ["baseline", "draft d max=4", "ngram-mod n=8", "ngram-mod n=24"]
    src = "NVIDIA GeForce RTX 3090"
    base, draft = q8.configs[(src, "baseline")], q8.configs[(src, "draft d max=4")]
    assert base.mean == pytest.approx(100.0) and base.lo == 99.0 and base.hi == 101.0
    assert draft.baseline == pytest.approx(100.0)
    assert draft.change == pytest.approx(statistics_mean([60, 62, 61, 63]) / 100 - 1)
    assert draft.acceptance == 1.0 and draft.n_trials == 4
    assert draft.ms_per_token["draft"] > 0 and base.ms_per_token["draft"] == 0
    assert sum(base.ms_per_token.values()) == pytest.approx(0.8e3 * statistics_mean([1 / 100, 1 / 99, 1 / 101, 1 / 100]))
    f16 = panels[1]
    assert f16.rows == ["baseline"] and f16.baselines(src) == [120.0]


def statistics_mean(xs):
    return sum(xs) / len(xs)


def test_same_named_cells_of_one_panel_are_told_apart_by_their_settings(tmp_path):
    trials = [trial("baseline", "baseline", 100.0), trial("baseline", "baseline", 90.0, n_predict=128),
              trial("draft", "draft", 50.0, drafted=8, accepted=4), trial("draft", "draft", 40.0, drafted=8,
                                                                           accepted=4, n_predict=128)]
    rows = shape.configs(sources_for(tmp_path, trials))
    assert sorted(c.key for c in rows) == ["baseline [n_predict=128]", "baseline [n_predict=64]",
                                           "draft [n_predict=128]", "draft [n_predict=64]"]
    by_key = {c.key: c for c in rows}
    assert by_key["draft [n_predict=128]"].change == pytest.approx(40 / 90 - 1)  # its own baseline


def test_per_prompt_points_keep_the_bimodal_tails(tmp_path):
    sources = sources_for(tmp_path)
    rows = shape.configs(sources)
    points = [p for p in shape.prompt_points(sources, rows) if p.key == "ngram-mod n=8"]
    cell = next(c for c in rows if c.key == "ngram-mod n=8")
    assert cell.change == pytest.approx(0.0, abs=0.01)  # on average nothing happens...
    by_prompt = {p.prompt: p.change for p in points}
    assert by_prompt["code"] == pytest.approx(150 / 99.5 - 1) and by_prompt["chat"] == pytest.approx(50 / 100.5 - 1)
    assert len(points) == 4  # one per trial, none averaged away
    table = {(r.key, r.prompt): r for r in shape.prompt_rows(points)}
    assert len(table[("ngram-mod n=8", "code")].tps) == 2


def test_probe_curves_from_the_recorded_h100_probes():
    curves = shape.probe_curves(load([PROBES]))
    assert len(curves) == sum(1 for line in open(PROBES) if line.strip())
    dense = [c for c in curves if c.model == "qwen3.6-27b.gguf"]
    assert len(dense) == 1 and dense[0].pred_ratio is None
    moe = [c for c in curves if c.model == "qwen3.6-35b-a3b.gguf" and c.kv == "q8_0" and c.outputs == "sampled"]
    c = moe[0]
    assert c.ks[0] == 1 and c.ratio[0] == 1.0 and c.pred_ratio[0] == pytest.approx(1.0)
    assert c.n == [k - 1 for k in c.ks[1:]] and all(0 < a < 1 for a in c.break_even)
    assert c.switch_ratio > 2  # the CUDA graph re-capture after a K = 2 batch
    assert "draft qwen3.5-0.8b.gguf" in c.label and c.device.startswith("NVIDIA H100")
    assert any(c.draft == "free draft" for c in curves)


def test_header_names_machine_software_and_models_but_no_host_or_path(tmp_path):
    source = sources_for(tmp_path)[0]
    info = shape.header(source)
    (run,) = info["runs"]
    assert run["gpus"] == "NVIDIA GeForce RTX 3090 (24576 MiB)" and run["driver"] == "550.54.14"
    assert run["cuda"] == "12.4" and run["llama_cpp"] == "0c1e57098"
    assert run["models"] == {"a3b.gguf": SHA_T, "draft.gguf": SHA_D} and run["matrix"] == "a3b.toml"
    text = json.dumps(info)
    assert "alice" not in text and "/home" not in text


def test_load_accepts_folders_a_folder_of_folders_and_files(tmp_path):
    root = tmp_path / "results"
    write_results(root, sample_trials(), [manifest()], "one")
    write_results(root, [dict(t, manifest="m2") for t in sample_trials()],
                  [manifest("m2", gpu="NVIDIA H100 80GB HBM3")], "two")
    # a folder of results folders: one source each, named after its card
    got = load([root])
    assert [s.name for s in got] == ["one", "two"]
    assert [s.label for s in got] == ["NVIDIA GeForce RTX 3090", "NVIDIA H100 80GB HBM3"]
    # a trials file picks up the manifests beside it
    (single,) = load([root / "one" / "trials.jsonl"])
    assert single.manifests and single.card == "NVIDIA GeForce RTX 3090"
    # ... and, named as a file, skips a torn last line (bad bytes included) as a folder's reading does
    torn = root / "one" / "trials.jsonl"
    torn.write_bytes(torn.read_bytes() + b'{"kind": "trial", "cell_id": "\xff')
    assert len(load([torn])[0].trials) == len(single.trials) == len(load([root / "one"])[0].trials)
    # the same card twice: labels keep them apart
    a, b = load([root / "one", root / "one"])
    assert a.label != b.label
    probes = load([PROBES])[0]
    assert len(probes.probes) == sum(1 for line in open(PROBES) if line.strip())
    # a file of several cards' probes is named after the card most of them ran on
    cards = [probe_card(json.loads(line)) for line in open(PROBES) if line.strip()]
    assert {"NVIDIA H100 80GB HBM3", "NVIDIA H200"} <= set(cards)
    assert probes.card == max(set(cards), key=cards.count)
    with pytest.raises(SpecsweepError, match="results not found"):
        load([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecsweepError, match="no trial or probe records"):
        load([tmp_path / "empty"])


def test_a_block_run_again_after_an_interruption_counts_once(tmp_path):
    """An interrupted block runs again whole as a new attempt: the page counts the last attempt
    only, as the run's summary and the analysis do."""
    first = [dict(t, block=0, attempt=0, decode_tps=1.0) for t in sample_trials()]
    again = [dict(t, block=0, attempt=1) for t in sample_trials()]
    (source,) = sources_for(tmp_path, first + again)
    assert len(source.trials) == len(again) and all(t["attempt"] == 1 for t in source.trials)


def test_cpu_runs_are_named_after_the_cpu(tmp_path):
    trials = [trial("baseline", "baseline", 100.0, gpus=[])]
    assert sources_for(tmp_path, trials)[0].card == "AMD Ryzen 9 5950X"


def figure_ids(text: str) -> list[str]:
    return re.findall(r'<div id="(fig-[a-z0-9-]+)" class="plotly-graph-div"', text)


def figure_json(text: str, div_id: str) -> dict:
    m = re.search(r'<script type="application/json" data-figure="%s">(.*?)</script>' % div_id, text, re.S)
    return json.loads(m.group(1))


def test_page_inlines_the_vendored_bundle_once_gzipped_and_fetches_nothing(tmp_path):
    sources = sources_for(tmp_path) + load([PROBES])
    text = page.render(sources)
    meta = json.loads((bundle.VENDOR / "plotly.json").read_text())
    blobs = re.findall(r"<script type='application/octet-stream' id='specsweep-plotly'[^>]*>([^<]*)</script>", text)
    assert len(blobs) == 1
    js = gzip.decompress(base64.b64decode(blobs[0]))
    assert hashlib.sha256(js).hexdigest() == meta["file_sha256"]  # exactly the vendored file
    assert b"plotly.js (basic - minified) v" + meta["version"].encode() in js[:200]
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs()[:400] not in text  # not the full build as text
    assert "DecompressionStream" in text and "specsweep-message" in text
    assert not re.search(r"<script[^>]*\bsrc=", text) and "<link" not in text
    figures = figure_ids(text)
    # one chart per target and card with records: the f16 panel ran its baseline only, so it has no
    # curves; then the probe, then the analysis
    assert figures[:8] == ["fig-curves-1", "fig-tps-1", "fig-tps-2", "fig-prompts-1", "fig-prompts-2", "fig-time-1",
                           "fig-time-2", "fig-probe-1"]
    assert set(figures[8:]) <= {"fig-cost", "fig-coverage", "fig-break-even"}
    # the figures' template is on the page once, not in every figure
    assert text.count('id="specsweep-template"') == 1
    assert all("template" not in figure_json(text, div_id)["layout"] for div_id in figures)
    assert f"data-expected='{len(figures)}'" in text
    for div_id in figures:  # every figure's JSON parses, with its config
        assert figure_json(text, div_id)["config"]["displaylogo"] is False
    # the header and the table hold the numbers and the facts
    assert SHA_T in text and "0c1e57098" in text and "550.54.14" in text and "12.4" in text
    assert "-38.5%" in text  # draft d max=4 against its baseline, in the table
    assert "/home/alice" not in text and "alice-desktop" not in text
    assert f"{meta['package']} {meta['version']}" in text and meta["license"] in text


def test_a_broken_bundle_is_a_one_line_error(tmp_path, monkeypatch):
    fake = tmp_path / "vendor"
    shutil.copytree(bundle.VENDOR, fake)
    gz = fake / "plotly-basic.min.js.gz"
    gz.write_bytes(gz.read_bytes()[:-10])
    monkeypatch.setattr(bundle, "VENDOR", fake)
    bundle.plotly_bundle.cache_clear()
    try:
        with pytest.raises(SpecsweepError, match="does not match its recorded sha256"):
            bundle.plotly_bundle()
        gz.unlink()
        bundle.plotly_bundle.cache_clear()
        with pytest.raises(SpecsweepError, match="missing or unreadable.*vendor-plotly.sh"):
            bundle.plotly_bundle()
    finally:
        bundle.plotly_bundle.cache_clear()


def test_the_vendored_bundle_ships_with_the_package():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["specsweep"]
    files = {p.name for p in bundle.VENDOR.iterdir()}
    assert {"plotly-basic.min.js.gz", "LICENSE", "plotly.json", "README.md"} <= files
    for name in files:  # each vendored file matches a package-data pattern
        rel = f"report/vendor/{name}"
        assert any(fnmatch.fnmatch(rel, pat) for pat in data), rel
    assert "MIT" in (bundle.VENDOR / "LICENSE").read_text()


@pytest.mark.parametrize("folders", [["methods-synthetic", "cost-model-synthetic", "probe"],
                                     ["a3b-synthetic", "probe"]])
def test_a_page_of_a_committed_device_folder_is_at_most_1_5_mb(folders):
    sources = load([REPO / "results" / f for f in folders])
    text = page.render(sources)
    size = len(text.encode("utf-8"))
    assert size <= PAGE_LIMIT, f"{size / 1e6:.2f} MB"
    assert len(figure_ids(text)) >= 5
    # the basic bundle registers scatter, bar and pie: nothing else may be drawn
    types = {tr.get("type") for div_id in figure_ids(text) for tr in figure_json(text, div_id)["data"]}
    assert types <= {"scatter", "bar"}, types


def test_strings_from_records_are_escaped_everywhere(tmp_path):
    evil = "<script>alert(1)</script>"
    trials = [dict(t, cell=evil if t["method"] == "draft" else t["cell"], prompt=evil if t["prompt"] == "code"
                   else t["prompt"]) for t in sample_trials()]
    for t in trials:  # stored outputs: the text is from the model, so escaped as well
        t["output"] = outputs.pack([1, 2, 3] if t["method"] == "baseline" else [1, 2, 4], evil + " </script>")
    sources = sources_for(tmp_path, trials, [manifest(gpu=evil, cpu="<b>cpu</b>")])
    assert sources[0].card == evil
    text = page.render(sources, title="<i>mine</i>")
    assert evil not in text and "<script>alert" not in text and "<b>cpu</b>" not in text and "<i>mine</i>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # our own script tags only: hooks, one JSON per figure, the template, the packed bundle and its loader
    assert text.count("<script") == 1 + len(figure_ids(text)) + 3  # + the figures' template
    assert text.count("</script") == text.count("<script")
    assert "What each config generated" in text


def test_synthetic_configs_are_marked_in_the_table_and_the_curves_chart(tmp_path):
    trials = sample_trials()
    for i in range(2):
        for prompt in ("chat", "code"):
            t = trial("draft d max=4 p=0.5", "draft", 70.0 + i, prompt, i, drafted=40, accepted=20, draft_p=0.5)
            trials.append(dict(t, lossless=None, first_mismatch=None, synthetic=True))
    sources = sources_for(tmp_path, trials)
    text = page.render(sources)
    assert text.count('<td class="l">draft d max=4 p=0.5' + page.SYNTHETIC_BADGE) == 1  # the config table
    assert '<td class="l">draft d max=4' + page.SYNTHETIC_BADGE not in text
    assert ">synthetic</span>" in page.SYNTHETIC_BADGE
    fig = figure_json(text, "fig-curves-1")
    draft = {tr["name"]: tr for tr in fig["data"] if tr.get("name", "").startswith("draft")}
    # one synthetic level is no sweep: a point, open, apart from the config measured on text
    assert draft["draft: measured"]["marker"]["symbol"] == "circle"
    assert draft["draft: synthetic"]["marker"]["symbol"] == "circle-open"
    assert draft["draft: synthetic"]["x"] == [pytest.approx(50.0)]


def test_synthetic_configs_show_the_acceptance_drawn_beside_the_one_set(tmp_path):
    """A synthetic config's acceptance reads as `analyze` gives it (drawn, then set) in the config
    table, the per-prompt table, the hover text and the answer; a config on text has no set rate."""
    trials = sample_trials()
    for i in range(2):
        for prompt in ("chat", "code"):  # synth_len 3 of 4 drafted: llama.cpp's rates average 50%
            t = trial("draft d max=4 L=3", "draft", 70.0 + i, prompt, i, drafted=40, accepted=22, synth_len=3.0)
            trials.append(dict(t, lossless=None, first_mismatch=None, synthetic=True))
    text = page.render(sources_for(tmp_path, trials))
    label = "55.0% drawn, 50.0% set"
    rows = re.findall(r"<tr><td class=\"l\">(.*?)</tr>", text)
    mine = [r for r in rows if r.startswith("draft d max=4 L=3")]
    assert len(mine) == 3 and all(f"<td>{label}</td>" in r for r in mine)  # per config, per prompt (2)
    text_rows = [r for r in rows if r.startswith("draft d max=4<")]
    assert text_rows and all("<td>100.0%</td>" in r and " set<" not in r for r in text_rows)
    tps = figure_json(text, "fig-tps-1")
    hover = {c[0]: c[5] for tr in tps["data"] for c in tr.get("customdata") or []}
    assert hover["draft d max=4 L=3"] == label and hover["draft d max=4"] == "100.0%"
    curves = figure_json(text, "fig-curves-1")
    assert any(c[0] == "draft d max=4 L=3" and c[4].startswith(label) for tr in curves["data"]
               for c in tr.get("customdata") or [])
    answer = text[text.index("id='specsweep-answer'"):text.index("</section>")]
    assert "at acceptance 55% drawn, 50% set (synthetic)" in answer


def with_outputs(trials: list[dict], long_text: int = 0) -> list[dict]:
    """Stored outputs: baselines generate 0..9 and 'abcdefghij'; draft d max=4 parts at token 6
    ('abcdefXYZ'); ngram-mod n=8's two trials on chat differ from each other."""
    for t in trials:
        if t["method"] == "baseline":
            t["output"] = outputs.pack(list(range(10)), "abcdefghij" + "x" * long_text)
        elif t["method"] == "draft":
            t["output"] = outputs.pack(list(range(6)) + [77, 78, 79], "abcdefXYZ")
        elif t["cell"] == "ngram-mod n=8" and t["prompt"] == "chat":
            t["output"] = outputs.pack(list(range(10)) if t["trial"] == 0 else [5] * 10, "abcdefghij")
        else:
            t["output"] = outputs.pack(list(range(10)), "abcdefghij")
    return trials


def test_outputs_show_where_each_config_parts_from_its_baseline(tmp_path):
    sources = sources_for(tmp_path, with_outputs(sample_trials(), long_text=3000))
    rows = shape.configs(sources)
    got = {(r.key, r.prompt, r.panel[1]): r for r in shape.outputs(sources, rows)}
    draft = got[("draft d max=4", "chat", "q8_0")]
    assert draft.divergence.token == 6 and draft.divergence.char == 6
    assert draft.divergence.before == "abcdef" and draft.divergence.this == "XYZ"
    assert draft.divergence.base == "ghij" + "x" * (shape.EXCERPT - 4)
    assert draft.base_tokens == 10 and draft.n_tokens == 9 and draft.n_trials == 2 and draft.n_distinct == 1
    same = got[("ngram-mod n=8", "code", "q8_0")]
    assert same.divergence is None and same.base_tokens == 10
    spread = got[("ngram-mod n=8", "chat", "q8_0")]
    assert spread.n_distinct == 2 and spread.trial == 0 and spread.divergence is None  # trial 0 is shown
    base = got[("baseline", "chat", "q8_0")]
    assert base.base_tokens is None and len(base.text) == shape.TEXT_CAP and base.n_chars == 3010
    # the f16 baseline has no speculative config; nothing compares with a baseline of another KV type
    assert got[("baseline", "chat", "f16")].divergence is None
    text = page.render(sources)
    assert "first differs at token 6 (of 9; baseline 10)" in text
    assert "abcdef<mark>XYZ</mark>" in text and "same tokens" in text
    assert f"The first {shape.TEXT_CAP:,} of 3,010 characters shown." in text
    assert "Its 2 trials gave 2 different outputs." in text
    assert text.count("<details><summary>trial ") == len(got)


def test_records_without_outputs_leave_the_outputs_section_out(tmp_path):
    text = page.render(sources_for(tmp_path))
    assert "What each config generated" not in text


def test_the_analysis_is_on_the_page_with_both_knee_verdicts():
    sources = load([REPO / "results" / "cost-model-synthetic", PROBES])
    text = page.render(sources)
    # the analysis, then what `predict` gives for the probed card beside what it measured
    assert figure_ids(text)[-4:] == ["fig-cost", "fig-coverage", "fig-break-even", "fig-predicted"]
    assert "The analysis: paired changes, the cost model and break-even" in text
    assert "Predicted and measured (specsweep predict)" in text
    (a,) = analysis_section.section(sources).analyses
    for f in a.fits:
        assert page.esc(f.knee.verdict) in text and page.esc(f.knee_configured.verdict) in text
        assert f"R² {f.fit.r2:.3f}" in json.dumps(figure_json(text, "fig-cost"), ensure_ascii=False)
    assert "at the configured draft length (as the audit counted)" in text
    be = a.break_even[0]
    assert f"{be.target}: " in text


def test_only_card_keeps_the_records_of_one_card():
    both = load([PROBES])
    assert {probe_card(p) for p in both[0].probes} >= {"NVIDIA H100 80GB HBM3", "NVIDIA H200"}
    (h200,) = only_card(both, "h200")
    assert h200.probes and all(probe_card(p) == "NVIDIA H200" for p in h200.probes)
    assert h200.card == h200.label == "NVIDIA H200"
    (h100,) = only_card(both, "H100")
    assert len(h100.probes) + len(h200.probes) == len(both[0].probes)
    with pytest.raises(SpecsweepError, match="no trial or probe records measured on a card named like 'A100'"):
        only_card(both, "A100")


def test_plot_command_writes_the_page_and_errors_are_one_line(tmp_path):
    d = write_results(tmp_path / "results", sample_trials(), [manifest()])
    out = tmp_path / "plots" / "mine.html"
    r = CliRunner().invoke(main, ["plot", str(d), str(PROBES), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("<!doctype html>") and "wrote" in r.output
    bad = CliRunner().invoke(main, ["plot", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and bad.output.strip().count("\n") == 0 and "results not found" in bad.output
    other = CliRunner().invoke(main, ["plot", str(d), "--card", "H100", "-o", str(tmp_path / "none.html")])
    assert other.exit_code == 2 and other.output.strip().count("\n") == 0 and "named like 'H100'" in other.output
    assert not (tmp_path / "none.html").exists()


def test_the_page_shows_draft_economy_throttling_and_uneven_stops(tmp_path):
    """The config table carries drafted tokens and checkpoint MB per generated token and a throttled
    badge; at a glance warns when arms with ignore_eos off stopped at different lengths."""
    trials = sample_trials()
    hot = {"available": True, "throttled": True}
    for t in trials:
        if t["cell"] == "draft d max=4":
            t["ckpt"] = {"saves": 10, "restores": 5, "bytes": 64 * 2_000_000}
            t["telemetry"] = hot
        if t["cell"] == "ngram-mod n=8" and t["prompt"] == "chat":
            t["n_generated"] = 20  # stopped at an end-of-generation token; the baseline ran on
    text = page.render(sources_for(tmp_path, trials))
    assert "<th class=''>drafted/tok</th>" in text and "<th class=''>ckpt MB/tok</th>" in text
    assert "<td>0.62</td>" in text and "<td>2.00</td>" in text  # 40 drafted / 64 tokens; 128 MB / 64
    assert text.count("throttled 4/4</span>") == 1
    assert "ran while the GPU throttled" in text
    assert "with ignore_eos off, arms stopped at different lengths on 1 prompt(s)" in text
    for t in trials:
        t["settings"]["ignore_eos"] = True
    assert "arms stopped at different lengths" not in page.render(sources_for(tmp_path / "again", trials))


def test_the_backends_section_keeps_each_cards_streams_apart(tmp_path):
    """Two cards that ran the same two-stream matrix share cell ids: each row's per-stream tok/s is
    its own card's."""
    from specsweep.report import backends_section

    def two_streams(tps: float, mid: str) -> list[dict]:
        out = []
        for i in range(2):
            for cell, method, total in (("baseline x2", "baseline", 2 * tps), ("ngram-mod n=8 x2", "ngram-mod", tps)):
                t = trial(cell, method, total, "chat", i, drafted=10, accepted=5, mid=mid, parallel=2)
                t["streams"] = [{"decode_tps": total / 2}, {"decode_tps": total / 2}]
                out.append(t)
        return out

    fast = write_results(tmp_path / "a", two_streams(100.0, "m1"), [manifest("m1")], "fast")
    slow = write_results(tmp_path / "b", two_streams(10.0, "m2"), [manifest("m2", gpu="NVIDIA GeForce RTX 3060")],
                         "slow")
    sources = load([fast, slow])
    rows = shape.configs(sources)
    assert rows[0].cell_id in {r.cell_id for r in rows if r.source != rows[0].source}  # the same cells
    html = backends_section.section(sources, rows)
    cells = re.findall(r"<tr><td>(.*?)</td><td>.*?</td><td>2</td><td>([\d.]+)</td><td>([\d.]+)</td>", html)
    assert sorted(cells) == [("baseline", "20.0", "10.0"), ("baseline", "200.0", "100.0"),
                             ("ngram-mod n=8", "10.0", "5.0"), ("ngram-mod n=8", "100.0", "50.0")]


def test_a_server_cell_has_no_time_split_rather_than_a_zero_one(tmp_path):
    """llama-server reports no draft/verify/rollback/host split: its row's columns stay blank and the
    time chart says so instead of drawing zero-length bars."""
    trials = []
    for i in range(2):
        for t in (trial("baseline", "baseline", 100.0 + i, "chat", i, backend="server"),
                  trial("draft d max=4", "draft", 80.0 + i, "chat", i, drafted=40, accepted=30, backend="server")):
            t["time_s"] = {"decode": t["time_s"]["decode"], **{part: None for part in shape.TIME_PARTS}}
            trials.append(t)
    sources = sources_for(tmp_path, trials)
    rows = shape.configs(sources)
    assert all(v is None for c in rows for v in c.ms_per_token.values())
    text = page.render(sources)
    assert "0.000" not in text and "no time split (llama-server reports none)" in text
    # a split that was measured as zero still shows as one
    assert shape.configs(sources_for(tmp_path / "inproc"))[0].ms_per_token["rollback"] == 0.0


def test_the_page_says_where_each_placements_weights_were(tmp_path):
    """Trials with the experts of 20 layers on the host: the page's placement section gives each
    placement's GPU bytes (llama.cpp's device buffers, not the mapped file), the estimate's host
    bytes and its own baseline; a run with the default placement has no such section."""
    def placed(t: dict, n: int | None, gpu_gib: float, host_gib: float) -> dict:
        block = {"n_cpu_moe": n, "override_tensor": [], "n_gpu_layers": None, "vram_budget": None,
                 "buffers": {"CPU_Mapped": 20 * 2**30, "CUDA0": gpu_gib * 2**30},
                 "estimate": {"weights": {"host": host_gib * 2**30, "GPU0": gpu_gib * 2**30}},
                 "overridden_tensors": 60 if n else 0}
        return dict(t, placement=block, cell_id=f"{t['cell_id']}-{n}",
                    settings=dict(t["settings"], **({"n_cpu_moe": n} if n else {})))

    trials = []
    for i in range(2):
        trials += [placed(trial("baseline", "baseline", 130.0 + i, "chat", i), None, 20.3, 0.5),
                   placed(trial("baseline", "baseline", 60.0 + i, "chat", i), 20, 10.1, 10.7),
                   placed(trial("draft d max=4", "draft", 50.0, "chat", i, drafted=40, accepted=30), 20, 10.1, 10.7)]
    text = page.render(sources_for(tmp_path, trials))
    assert "Where the weights were" in text
    rows = re.findall(r"<tr><td>[^<]*</td><td>a3b.gguf</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                      r"<td>([^<]*)</td><td>[^<]*</td><td>([^<]*)</td><td></td></tr>", text)
    assert sorted(rows) == [("cpu-moe 20", "10.10", "10.70", "60", "60.5"),
                            ("every layer on the GPU", "20.30", "0.50", "0", "130.5")]
    assert "Where the weights were" not in page.render(sources_for(tmp_path / "plain"))
    # a placement that was only probed (llama.cpp's fit for a 24 GiB card) gets a row with its T(1)
    probe = {"kind": "probe", "time": "2026-12-02T09:43:44+0000", "t1_ms": 67.4, "curve": [],
             "model": {"file": "a10b.gguf"}, "settings": {"gpus": [0], "kv": "q8_0"},
             "placement": {"n_cpu_moe": None, "override_tensor": [], "n_gpu_layers": None, "vram_budget": "24GiB",
                           "fit": {"source": "llama-fit-params", "n_gpu_layers": 49, "override_tensor": ["a=CPU"] * 33},
                           "buffers": {"CPU_Mapped": 64 * 2**30, "CUDA0": 22 * 2**30}, "overridden_tensors": 99}}
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "probe.jsonl").write_text(json.dumps(probe) + "\n")
    text = page.render(sources_for(tmp_path / "plain2") + load([tmp_path / "probes"]))
    row = re.search(r"<tr><td>[^<]*\(probe\)</td><td>a10b.gguf</td><td>fit 24GiB</td><td>22.00</td><td></td>"
                    r"<td>99</td><td>-ngl 49, 33 -ot \(llama-fit-params\)</td><td></td><td>([^<]*)</td></tr>", text)
    assert row and row.group(1) == "67.4"
    # a repeat of that probe: the newest T(1), and the repeats' range (host jitter shows on the page)
    again = dict(probe, time="2026-12-02T11:58:44+0000", t1_ms=31.8)
    (tmp_path / "probes" / "probe.jsonl").write_text(json.dumps(probe) + "\n" + json.dumps(again) + "\n")
    text = page.render(sources_for(tmp_path / "plain3") + load([tmp_path / "probes"]))
    assert "<td>31.8 (2 probes: 31.8-67.4)</td>" in text
