"""`specsweep analyze`: paired changes over blocks, the cost line, the break-even acceptance and the
expert-coverage knee test, on records generated from known numbers, and on the committed records."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from specsweep.analysis import analyze as an
from specsweep.analysis import costmodel, coverage, paired
from specsweep.analysis.paired import PairedRow
from specsweep.cli import main
from specsweep.errors import SpecsweepError
from specsweep.probe import theory
from specsweep.records.sources import Source, load

REPO = Path(__file__).resolve().parents[1]
MOE = {"arch": "qwen35moe", "n_layer": 40, "n_expert": 256, "n_expert_used": 8, "hybrid": True}
DENSE = {"arch": "qwen35", "n_layer": 64, "n_expert": 0, "n_expert_used": 0, "hybrid": True}


def trial(cell: str, method: str, tps: float, *, prompt: str = "p0", block: int | None = None, run: int | None = None,
          index: int = 0, drafted_by_pos: list[int] | None = None, accepted: int = 0, generated: int = 128,
          n_steps: int | None = None, draft_max: int | None = None, ref: str = "R1", target: str = "t.gguf",
          sha: str = "a" * 64, draft: str | None = "d08", shape: dict | None = None, **extra) -> dict:
    dbp = list(drafted_by_pos or [])
    models = {"target": {"name": "t", "file": target, "sha256": sha}}
    if method == "draft" and draft:
        models["draft"] = {"name": draft, "file": f"{draft}.gguf", "sha256": "c" * 64}
    r = {"kind": "trial", "matrix": "m", "cell_id": f"id-{cell}", "cell": cell, "method": method,
         "settings": {"kv": "q8_0", "n_predict": generated, "rollback": "snapshot",
                      **({"draft_max": draft_max} if draft_max else {})},
         "models": models, "reference_key": ref, "prompt_id": prompt, "prompt_kind": prompt, "trial": index,
         "decode_tps": tps, "n_generated": generated, "n_drafted": sum(dbp), "n_accepted": accepted,
         "drafted_by_pos": dbp, "accepted_by_pos": [], "n_steps": generated if n_steps is None else n_steps,
         "n_rollbacks": 0, "time_s": {}, "lossless": True, "manifest": "m1"}
    if block is not None:
        r["block"], r["design"] = block, "blocks"
    if run is not None:
        r["run"] = run
    if shape is not None:
        r["target_shape"] = shape
    r.update(extra)
    return r


def line_trials(lengths, cost, shape=MOE, reps: int = 3, noise: float = 0.25, seed: int = 1,
                method: str = "draft") -> list[dict]:
    """Trials at acceptance 0 (each step drafts L tokens and yields one: x = L) whose ms per token is
    cost(x) plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    out = []
    for length in lengths:
        for i in range(reps):
            ms = cost(float(length)) + rng.normal(0, noise)
            out.append(trial(f"{method} max={length}", method, 1000.0 / ms, index=i, drafted_by_pos=[128] * length,
                             draft_max=length, shape=shape))
    return out


def fam_of(trials: list[dict]) -> costmodel.FamilyFit:
    fits = costmodel.family_fits(trials)
    assert len(fits) == 1
    return fits[0]


# --- coverage per trial ---

def test_coverage_of_a_trial_follows_its_draft_lengths():
    # every step drafts 4 tokens: K = 5
    r = trial("c", "draft", 50.0, drafted_by_pos=[10, 10, 10, 10], n_steps=10)
    assert coverage.mean_coverage(r, 256, 8) == pytest.approx(1 - (1 - 8 / 256) ** 5)
    # 10 steps: 4 drafted 2 tokens, 2 drafted 1, 4 drafted none (K = 3, 2, 1)
    r = trial("c", "draft", 50.0, drafted_by_pos=[6, 4], n_steps=10, draft_max=4)
    assert coverage.verify_lengths(r) == {3.0: 4, 2.0: 2, 1.0: 4}
    assert coverage.verify_lengths(r, drafts_only=True) == {3.0: 4, 2.0: 2}
    c = lambda k: theory.expected_union(256, 8, k) / 256  # noqa: E731
    # the verifies that carried a draft: steps without one are not what the hypothesis is about
    assert coverage.mean_coverage(r, 256, 8) == pytest.approx((4 * c(3) + 2 * c(2)) / 6)
    # as the audit counts it: the configured draft length (draft_max 4: K = 5) of every trial
    assert coverage.configured_coverage(r, 256, 8) == pytest.approx(c(5))
    assert theory.saturation_tokens(256, 8) == 95  # the breakpoint the knee tests below rely on


# --- the cost line ---

def test_a_known_line_is_recovered():
    trials = line_trials([1, 2, 4, 8, 16, 32, 64, 128], lambda x: 27.0 + 4.04 * x)
    f = fam_of(trials)
    assert f.n_levels == 8 and f.fit is not None
    assert f.fit.slope == pytest.approx(4.04, abs=0.02) and f.fit.slope_ci[0] < 4.04 < f.fit.slope_ci[1]
    assert f.fit.intercept == pytest.approx(27.0, abs=0.3) and f.fit.intercept_ci[0] < 27.0 < f.fit.intercept_ci[1]
    assert f.fit.r2 > 0.999


def test_one_draft_length_gets_no_line():
    trials = [trial("d", "draft", 1000 / (30 + 0.1 * i), index=i, drafted_by_pos=[128] * 4, draft_max=4)
              for i in range(6)]
    f = fam_of(trials)
    assert f.fit is None and "one draft length" in f.note


def test_baseline_ms_beside_the_fit_and_families_apart():
    trials = line_trials([1, 4, 16], lambda x: 20.0 + 2.0 * x) + [trial("base", "baseline", 250.0, draft=None)]
    big = {"name": "big", "file": "big.gguf"}
    trials += [dict(t, models=dict(t["models"], draft=big), cell_id="big" + t["cell_id"])
               for t in line_trials([1, 4, 16], lambda x: 40.0 + 6.0 * x)]
    fits = costmodel.family_fits(trials)
    assert sorted(f.family for f in fits) == ["draft · big", "draft · d08"]
    by = {f.family: f for f in fits}
    assert by["draft · d08"].fit.slope == pytest.approx(2.0, abs=0.1)
    assert by["draft · big"].fit.slope == pytest.approx(6.0, abs=0.1)
    assert by["draft · d08"].baseline_ms == pytest.approx(4.0)


def test_server_and_stream_records_get_lines_of_their_own():
    """A server's token and four streams' aggregate cost otherwise than one in-process stream's:
    their trials form families of their own instead of bending one line."""
    one = line_trials([1, 4, 16], lambda x: 20.0 + 2.0 * x)
    served = [dict(t, cell_id="s" + t["cell_id"], backend="server", settings=dict(t["settings"], backend="server"))
              for t in line_trials([1, 4, 16], lambda x: 30.0 + 3.0 * x)]
    four = [dict(t, cell_id="p" + t["cell_id"], settings=dict(t["settings"], parallel=4))
            for t in line_trials([1, 4, 16], lambda x: 8.0 + 1.0 * x)]
    by = {f.family: f for f in costmodel.family_fits(one + served + four)}
    assert sorted(by) == ["draft · d08", "draft · d08 [server]", "draft · d08 x4"]
    assert by["draft · d08 [server]"].fit.slope == pytest.approx(3.0, abs=0.1)
    assert by["draft · d08 x4"].fit.intercept == pytest.approx(8.0, abs=0.5)


def test_records_placed_otherwise_get_lines_of_their_own():
    """Experts on the host change the verify cost itself: trials with n_cpu_moe = 20 form their own
    family instead of bending the all-on-GPU line; the label says where the weights were."""
    on_gpu = line_trials([1, 4, 16], lambda x: 20.0 + 2.0 * x)
    offloaded = [dict(t, cell_id="o" + t["cell_id"], settings=dict(t["settings"], n_cpu_moe=20),
                      placement={"n_cpu_moe": 20, "override_tensor": [], "n_gpu_layers": None, "vram_budget": None})
                 for t in line_trials([1, 4, 16], lambda x: 60.0 + 9.0 * x)]
    by = {f.family: f for f in costmodel.family_fits(on_gpu + offloaded)}
    assert sorted(by) == ["draft · d08", "draft · d08 [cpu-moe 20]"]
    assert by["draft · d08"].fit.slope == pytest.approx(2.0, abs=0.1)
    assert by["draft · d08 [cpu-moe 20]"].fit.slope == pytest.approx(9.0, abs=0.2)


# --- the knee test ---

LENGTHS = [1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128]  # coverage crosses 95% at K = 95 (94 drafted)


def test_a_straight_line_has_no_knee():
    f = fam_of(line_trials(LENGTHS, lambda x: 27.0 + 4.04 * x, seed=3))
    k = coverage.knee_test(f, coverage.routing_for(f.trials, []), n_boot=199)
    assert k.role == "moe" and k.status == "tested"
    assert 80 < k.breakpoint_x < 96 and k.n_misplaced == 0  # between the last length before 95% and the first past
    assert k.at_saturation.p > 0.05 and k.verdict.startswith("no knee")
    assert k.at_saturation.change_ci[0] < 0 < k.at_saturation.change_ci[1]
    assert k.search is not None and k.search["p"] > 0.05
    assert k.residuals["n_past"] == 9 and k.residuals["n_before"] == 27


def test_a_knee_at_saturation_is_found():
    knee = 88.0
    f = fam_of(line_trials(LENGTHS, lambda x: 27.0 + 4.0 * x + 3.0 * max(x - knee, 0.0), seed=3))
    k = coverage.knee_test(f, coverage.routing_for(f.trials, []), n_boot=199)
    assert k.status == "tested" and k.verdict.startswith("knee at coverage 95%")
    h = k.at_saturation
    assert h.p < 1e-6 and h.slope_before == pytest.approx(4.0, abs=0.1) and h.slope_after == pytest.approx(7.0, abs=0.3)
    assert "steeper" in k.verdict
    assert k.search["p"] < 0.05  # the search finds it too, after its own bootstrap
    assert k.residuals["mean_past"] > 0  # the line runs under the points past saturation


def test_a_dense_target_is_the_control():
    f = fam_of(line_trials(LENGTHS, lambda x: 27.0 + 4.04 * x, shape=DENSE, seed=3))
    k = coverage.knee_test(f, coverage.routing_for(f.trials, []), n_boot=199)
    assert k.role == "control" and k.status == "tested"
    assert k.verdict.startswith("control (dense target") and "no knee" in k.verdict
    assert 80 < k.breakpoint_x < 96  # the same x as a 256-expert top-8 target's


def test_a_dense_control_uses_a_moe_of_the_same_records():
    moe = [dict(t, models={"target": {"file": "moe.gguf", "sha256": "e" * 64}, "draft": t["models"]["draft"]},
                cell_id="moe-" + t["cell_id"])
           for t in line_trials(LENGTHS, lambda x: 27.0 + 4.04 * x,
                                shape={**MOE, "n_expert": 128}, seed=5)]
    dense = line_trials(LENGTHS, lambda x: 30.0 + 5.0 * x, shape=DENSE, seed=6)
    (a,) = an.analyze([Source("s", "records", moe + dense)], n_boot=200)
    ks = {f.target: f.knee for f in a.fits}
    assert ks["moe.gguf"].role == "moe" and ks["t.gguf"].role == "control"
    assert ks["t.gguf"].routing.n_expert == 0
    assert "128 experts top-8" in ks["t.gguf"].verdict
    # K* = 47 for 128 experts top-8: the breakpoint moves to the lengths around it (32 .. 48)
    assert ks["t.gguf"].breakpoint_x == ks["moe.gguf"].breakpoint_x and 32 < ks["t.gguf"].breakpoint_x < 48


def test_few_draft_lengths_are_not_tested():
    f = fam_of(line_trials([4, 16, 64], lambda x: 27.0 + 4.0 * x))
    k = coverage.knee_test(f, coverage.routing_for(f.trials, []))
    assert k.status == "not enough draft lengths" and "not enough draft lengths to test" in k.verdict


def test_routing_from_a_probe_record_or_a_reason():
    trials = line_trials(LENGTHS, lambda x: 27.0 + 4.0 * x, shape=None)
    f = fam_of(trials)
    probe = {"kind": "probe", "model": {"file": "t.gguf", "n_expert": 256, "n_expert_used": 8, "moe": True}}
    r = coverage.routing_for(f.trials, [probe])
    assert (r.n_expert, r.n_used) == (256, 8) and "same file" in r.source
    other = {"kind": "probe", "model": {"file": "other.gguf", "n_expert": 128, "n_expert_used": 8}}
    assert coverage.routing_for(f.trials, [other]) is None
    k = coverage.knee_test(f, None)
    assert k.role == "untested" and "skipped" in k.verdict and "t.gguf" in k.verdict


def test_coverage_that_never_saturates_says_so():
    f = fam_of(line_trials([1, 2, 4, 8, 16, 32], lambda x: 27.0 + 4.0 * x, seed=2))
    k = coverage.knee_test(f, coverage.routing_for(f.trials, []), n_boot=99)
    assert k.status == "no crossing" and "below 95% coverage" in k.verdict


# --- paired statistics ---

def blocks_records(effects: list[float], run: int = 0, base_tps: float = 100.0, cell: str = "spec") -> list[dict]:
    """Blocks of two prompts: the baseline drifts from block to block and differs by prompt; the
    config's log ratio to the baseline in block b is effects[b] on both prompts."""
    out = []
    for b, d in enumerate(effects):
        for j, prompt in enumerate(("p0", "p1")):
            base = base_tps * math.exp(0.05 * b + 0.2 * j + 0.01 * run)
            out.append(trial("baseline", "baseline", base, prompt=prompt, block=b, run=run, draft=None))
            out.append(trial(cell, "draft", base * math.exp(d), prompt=prompt, block=b, run=run, draft="same",
                             drafted_by_pos=[64, 32], accepted=40, position=1))
    return out


def test_known_log_ratios_give_the_t_interval():
    effects = [0.10, 0.14, 0.08, 0.12, 0.11, 0.05, 0.13]
    rows, missing = paired.paired_rows(blocks_records(effects))
    (r,) = rows
    assert not missing and r.design == "blocks" and r.n_blocks == 7 and r.n_pairs == 14
    m, se = statistics.fmean(effects), statistics.stdev(effects) / math.sqrt(7)
    q = stats.t.ppf(0.975, 6)
    assert r.change == pytest.approx(math.exp(m) - 1)
    assert r.t_interval == pytest.approx((math.exp(m - q * se) - 1, math.exp(m + q * se) - 1))
    lo, hi = r.bootstrap_interval
    assert math.exp(min(effects)) - 1 <= lo < r.change < hi <= math.exp(max(effects)) - 1
    assert hi - lo < r.t_interval[1] - r.t_interval[0]  # the percentile bootstrap is narrower at n = 7
    assert r.acceptance == pytest.approx(40 / 96)


def test_few_blocks_get_no_bootstrap_interval():
    (r,), _ = paired.paired_rows(blocks_records([0.1, 0.2, 0.15]))
    assert r.t_interval is not None and r.bootstrap_interval is None


def test_unpaired_trials_are_counted_named_and_refused_on_demand():
    recs = [r for r in blocks_records([0.1, 0.12, 0.09, 0.11, 0.1])
            if not (r["method"] == "baseline" and r["block"] == 3 and r["prompt_id"] == "p1")]
    recs.append(trial("elsewhere", "draft", 50.0, prompt="p0", block=0, ref="R9", drafted_by_pos=[5]))
    rows, missing = paired.paired_rows(recs)
    by = {r.cell: r for r in rows}
    assert by["spec"].n_unpaired == 1 and by["spec"].n_pairs == 9 and by["spec"].n_blocks == 5
    assert by["elsewhere"].change is None and by["elsewhere"].n_unpaired == 1
    named = {(u.cell, u.block, u.prompt_id) for u in missing}
    assert named == {("spec", 3, "p1"), ("elsewhere", 0, "p0")}
    assert any("reference key" in u.reason for u in missing)
    with pytest.raises(SpecsweepError, match="block 3"):
        paired.require_paired(recs)
    paired.require_paired(blocks_records([0.1, 0.2]))  # nothing missing: no error


def test_an_older_sequential_trial_does_not_pair_with_a_block():
    recs = blocks_records([0.1, 0.1]) + [trial("old", "draft", 50.0, prompt="p0", index=0, drafted_by_pos=[3])]
    rows, missing = paired.paired_rows(recs)
    assert {r.cell: r.n_pairs for r in rows} == {"spec": 4, "old": 0}
    (u,) = missing
    assert u.cell == "old" and "sequential design" in u.reason


def test_only_the_last_attempt_of_a_block_counts():
    recs = blocks_records([0.1, 0.1, 0.1, 0.1, 0.1])
    redo = [dict(r, attempt=1) for r in recs if r["block"] == 2]
    for r in recs:
        if r["block"] == 2 and r["method"] != "baseline":
            r["decode_tps"] /= 3  # the interrupted attempt: would pull the change down
    (r,), _ = paired.paired_rows(recs + redo)
    assert r.change == pytest.approx(math.exp(0.1) - 1) and r.n_kept == 10


def test_run_to_run_spread_is_apart_from_the_interval():
    recs = []
    for run, shift in enumerate((0.0, 0.06, -0.04)):
        recs += blocks_records([0.10 + shift, 0.12 + shift, 0.08 + shift], run=run)
    (r,), _ = paired.paired_rows(recs)
    per_run = [math.exp(0.10 + s) - 1 for s in (0.0, 0.06, -0.04)]
    assert [x.change for x in r.runs] == pytest.approx(per_run)
    assert r.run_spread["n_runs"] == 3
    assert r.run_spread["stdev"] == pytest.approx(statistics.stdev(per_run))
    assert (r.run_spread["min"], r.run_spread["max"]) == pytest.approx((min(per_run), max(per_run)))
    assert r.n_blocks == 9


def test_sequential_records_pair_by_trial_index_and_say_so():
    recs = []
    for i, d in enumerate((0.2, 0.25)):
        recs.append(trial("baseline", "baseline", 100.0 + i, index=i, draft=None))
        recs.append(trial("spec", "draft", (100.0 + i) * math.exp(d), index=i, drafted_by_pos=[3]))
    (a,) = an.analyze([Source("s", "records", recs)])
    (r,) = a.paired
    assert r.design == "sequential" and r.n_blocks == 2 and r.change == pytest.approx(math.exp(0.225) - 1)
    assert any("sequential" in n and "trial index" in n for n in a.notes)


def test_throttled_and_synthetic_are_carried():
    recs = blocks_records([0.1, 0.1])
    recs[1]["telemetry"] = {"available": True, "throttled": True}
    recs[1]["synthetic"] = True
    (r,), _ = paired.paired_rows(recs)
    assert r.n_throttled == 1 and r.synthetic


def test_synthetic_configs_show_the_acceptance_drawn_beside_the_one_set():
    from specsweep.analysis import records as rec
    from specsweep.analysis.command import paired_text
    from specsweep.report.summary import cell_stats, table

    recs = blocks_records([0.1, 0.1])
    for r in recs[1::2]:  # the speculative trials: L = 2.5 over 3 positions asks for 50%, drew 40 of 96
        r.update(synthetic=True, n_accepted=40, drafted_by_pos=[32, 32, 32], n_drafted=96)
        r["settings"] = {**r["settings"], "draft_max": 3, "synth_len": 2.5}
    assert rec.configured_acceptance(recs[1]) == pytest.approx(0.5, abs=1e-6)
    assert rec.configured_acceptance(recs[0]) is None
    (a,) = an.analyze([Source("s", "records", recs)])
    assert "41.7% drawn, 50.0% set" in paired_text(a)
    assert "41.7% drawn, 50.0% set" in table(cell_stats(recs))
    assert rec.acceptance_label(0.25, None) == "25.0%" and rec.acceptance_label(None, None) == ""


# --- break-even ---

def row(acc: float, speedup: float, target: str = "t.gguf") -> PairedRow:
    return PairedRow(cell_id=f"c{acc}", cell=f"c{acc}", method="draft", reference_key="R", target=target,
                     target_key=target, design="blocks", n_kept=6, tps_mean=1.0, tps_min=1.0, tps_max=1.0,
                     baseline_tps=1.0, n_pairs=6, n_blocks=6, mean_log=math.log(speedup), change=speedup - 1,
                     t_interval=None, bootstrap_interval=None, acceptance=acc, n_drafted=100,
                     n_accepted=int(acc * 100))


def test_break_even_is_recovered_with_an_interval():
    rng = np.random.default_rng(4)
    accs = np.linspace(0.05, 0.95, 12)
    rows = [row(float(a), float(0.55 + 1.2 * a + rng.normal(0, 0.02))) for a in accs]
    (b,) = costmodel.break_even(rows)
    assert b.acceptance == pytest.approx(0.375, abs=0.02)
    assert b.interval[0] < b.acceptance < b.interval[1] and b.interval[1] - b.interval[0] < 0.1
    assert b.note == ""


def test_break_even_not_estimable():
    (few,) = costmodel.break_even([row(0.2, 0.9), row(0.8, 1.3)])
    assert few.acceptance is None and "not estimable" in few.note and "2 speculative config" in few.note
    (falling,) = costmodel.break_even([row(0.2, 1.2), row(0.5, 1.0), row(0.8, 0.7)])
    assert falling.acceptance is None and "does not rise" in falling.note
    (never,) = costmodel.break_even([row(0.2, 0.3), row(0.5, 0.4), row(0.9, 0.5)])
    assert never.acceptance > 1 and "no break-even within 0-100%" in never.note


# --- the command ---

def write_results(tmp_path: Path, recs: list[dict]) -> Path:
    d = tmp_path / "results" / "mine"
    d.mkdir(parents=True)
    (d / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


def test_cli_prints_and_writes_json(tmp_path):
    recs = blocks_records([0.1, 0.12, 0.08, 0.11, 0.1]) + line_trials(LENGTHS, lambda x: 27.0 + 4.04 * x, seed=8)
    d = write_results(tmp_path, recs)
    out = tmp_path / "a.json"
    r = CliRunner().invoke(main, ["analyze", str(d), "--json", str(out)])
    assert r.exit_code == 0, r.output
    for part in ("Paired change", "Cost model", "Break-even", "Expert coverage", "no knee"):
        assert part in r.output
    doc = json.loads(out.read_text())
    (src,) = doc["sources"]
    fit = next(f for f in src["fits"] if f["n_levels"] == len(LENGTHS))
    assert fit["fit"]["slope"] == pytest.approx(4.04, abs=0.05) and fit["knee"]["status"] == "tested"
    assert "trials" not in fit
    spec = next(p for p in src["paired"] if p["cell"] == "spec")
    assert spec["n_blocks"] == 5 and spec["change"] == pytest.approx(math.exp(0.102) - 1)


@pytest.mark.parametrize("case", ["missing", "empty", "probes only", "unpaired"])
def test_cli_bad_input_is_one_line(tmp_path, case):
    args = ["analyze"]
    if case == "missing":
        args.append(str(tmp_path / "nope"))
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        args.append(str(tmp_path / "empty"))
    elif case == "probes only":
        p = tmp_path / "probe.jsonl"
        p.write_text(json.dumps({"kind": "probe", "model": {"file": "x.gguf"}}) + "\n")
        args.append(str(p))
    else:
        recs = blocks_records([0.1, 0.1]) + [trial("lonely", "draft", 5.0, block=0, ref="R7", drafted_by_pos=[2])]
        args += [str(write_results(tmp_path, recs)), "--require-paired"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0 and r.output.startswith("specsweep: error:")


# --- the committed records ---

def _finite(v) -> bool:
    return v is None or (isinstance(v, float) and math.isfinite(v))


def test_runs_on_the_committed_records():
    sources = load([REPO / "results" / "a3b-synthetic", REPO / "results" / "active-contrast-synthetic",
                         REPO / "results" / "probe"])
    analyses = an.analyze(sources, n_boot=300)
    assert len(analyses) == 2
    for a in analyses:
        assert a.paired and a.fits and a.break_even
        for r in a.paired:
            assert r.change is not None and math.isfinite(r.change)
            assert all(_finite(x) for x in r.t_interval or ())
        fitted = [f.fit for f in a.fits if f.fit is not None]
        assert fitted and all(math.isfinite(x) for f in fitted for x in (f.slope, f.intercept, f.r2))
        for b in a.break_even:
            assert _finite(b.acceptance)
        assert all(f.knee is not None and f.knee.verdict for f in a.fits)
    json.dumps(an.to_json(analyses), allow_nan=False)
