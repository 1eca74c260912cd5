"""The blocks design through the real runner: balanced orders, pairing with the block's baseline,
resume by block, `--runs`, telemetry on a machine without a GPU, and one-line errors.

The drift test replaces the engine's trial with a fake whose speed drifts as trials go by (every
cell equally fast: the true effect is zero) and runs the same matrix in both designs through
`specsweep run`: cell after cell, the later cells look faster by the drift, with an interval that
excludes zero; in blocks, paired with their block's baseline in Williams orders, they do not.
"""

from __future__ import annotations

import numpy as np
import pytest

from specsweep.analysis.paired import paired_rows
from specsweep.records.attempts import kept
from specsweep.engine.speculative import TrialResult
from specsweep.records.store import read_jsonl
from specsweep.run import blocks as blocks_mod
from specsweep.backends import inprocess as runner_mod
from tests.conftest import run_cli as run

MATRIX = """
name = "blk"
design = "DESIGN"
[models]
target    = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
identical = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
[defaults]
target = "target"
gpus = []
threads = 2
n_ctx = 512
n_predict = 16
trials = TRIALS
warmup = 0
prompt_kinds = ["chat", "code"]
[[cell]]
method = "baseline"
[[cell]]
method = "draft"
draft = "identical"
[[cell]]
method = "ngram-mod"
n_match = 4
draft_min = 1
draft_max = 8
[[cell]]
method = "ngram-simple"
size_n = 2
size_m = 4
"""


pytestmark = pytest.mark.usefixtures("module_synth_cache")  # models written once per module


def write(tmp_path, design="blocks", trials=4, top="") -> object:
    """The matrix; `top`: top-level lines (before [models])."""
    path = tmp_path / "blk.toml"
    path.write_text(MATRIX.replace("DESIGN", design).replace("TRIALS", str(trials)).replace("[models]", top + "[models]", 1))
    return path


def records(results):
    return read_jsonl(results / "blk" / "trials.jsonl")


def drifting_engine(drift=0.005, noise=0.002, seed=3):
    """A fake trial: every cell at the same speed, which drifts up by `drift` per trial run (with a
    little seeded noise), and the same tokens (so every trial is lossless)."""
    state = {"n": 0, "rng": np.random.default_rng(seed)}

    def fake(ctx, tokens, n_predict, drafter=None, use_checkpoints=None):
        state["n"] += 1
        tps = 100.0 * (1 + drift * state["n"]) * (1 + noise * state["rng"].standard_normal())
        return TrialResult(tokens=[7] * n_predict, t_decode=n_predict / tps)
    return fake


def estimates(results) -> dict:
    rows, missing = paired_rows(kept(records(results)))
    assert not missing
    return {r.cell: r for r in rows}


def test_drift_biases_the_sequential_design_and_not_the_blocks(tmp_path, monkeypatch):
    out = {}
    for design in ("sequential", "blocks"):
        monkeypatch.setattr(runner_mod, "run_trial", drifting_engine())
        results = tmp_path / design
        r = run(write(tmp_path, design), "--results", results)
        assert r.exit_code == 0, r.output
        out[design] = estimates(results)
    # cell after cell: the last cells ran last, so their (zero) effect looks like a gain, and the
    # interval over the paired trials, measured at one time each, is narrow enough to exclude zero
    seq = out["sequential"]
    assert all(r.design == "sequential" for r in seq.values())
    biased = [r for r in seq.values() if r.t_interval[0] > 0]
    assert biased, {k: (r.change, r.t_interval) for k, r in seq.items()}
    assert max(r.change for r in seq.values()) > 0.05
    # blocks: each change is paired with the baseline of its own block, in balanced orders
    blk = out["blocks"]
    assert all(r.design == "blocks" and r.n_blocks == 4 for r in blk.values())
    for r in blk.values():
        lo, hi = r.t_interval
        assert lo <= 0 <= hi and abs(r.change) < 0.01, (r.cell, r.change, r.t_interval)


def test_blocks_are_recorded_in_balanced_williams_orders(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_mod, "run_trial", drifting_engine(drift=0))
    results = tmp_path / "r"
    assert run(write(tmp_path), "--results", results).exit_code == 0
    recs = records(results)
    assert len(recs) == 4 * 4 * 2  # 4 cells x 4 blocks x 2 prompts
    assert {t["design"] for t in recs} == {"blocks"} and {t["attempt"] for t in recs} == {0}
    group = ["baseline", "draft", "ngram-mod", "ngram-simple"]  # the group's cells: the matrix order
    orders = []
    for b in range(4):
        first_prompt = [t for t in recs if t["block"] == b][:4]
        orders.append([group.index(t["method"]) for t in first_prompt])
        assert [t["position"] for t in first_prompt] == [0, 1, 2, 3]
    assert orders == blocks_mod.williams(4) and blocks_mod.is_balanced(orders)
    # the second prompt of a block runs the order backwards
    second = [t for t in recs if t["block"] == 0][4:]
    assert [group.index(t["method"]) for t in second] == orders[0][::-1]
    assert all(t["telemetry"] == {"available": False, "reason": "no GPU (CPU run)"} or
               t["telemetry"].get("available") is False for t in recs)


def test_an_interrupted_block_runs_again_whole_as_a_new_attempt(tmp_path, monkeypatch):
    calls = {"n": 0}
    inner = drifting_engine(drift=0)

    def dies_in_block_two(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8 + 8 + 4:  # (a reference is decoded once too) in the middle of block 2
            raise KeyboardInterrupt
        return inner(*a, **k)

    monkeypatch.setattr(runner_mod, "run_trial", dies_in_block_two)
    results = tmp_path / "r"
    r = run(write(tmp_path), "--results", results)
    assert r.exit_code == 130
    first = records(results)
    partial = [t for t in first if t["block"] == 2]
    assert len([t for t in first if t["block"] < 2]) == 16 and 0 < len(partial) < 8
    monkeypatch.setattr(runner_mod, "run_trial", drifting_engine(drift=0))
    assert run(write(tmp_path), "--results", results).exit_code == 0
    recs = records(results)
    assert len(recs) == len(first) + 8 * 2  # block 2 again (attempt 1) and block 3
    assert {t["attempt"] for t in recs if t["block"] == 2} == {0, 1}
    assert len([t for t in kept(recs) if t["block"] == 2]) == 8  # only the whole attempt counts
    assert "nothing to run" in run(write(tmp_path), "--results", results).output


def test_runs_repeat_the_matrix_in_fresh_processes(tmp_path):
    results = tmp_path / "r"
    r = run(write(tmp_path, trials=1, top='blocks = 1\n'), "--results", results, "--runs", "2")
    assert r.exit_code == 0, r.output
    recs = records(results)
    assert sorted({t["run"] for t in recs}) == [0, 1] and len(recs) == 2 * 4 * 2
    assert "run-to-run spread" in r.output
    again = run(write(tmp_path, trials=1, top='blocks = 1\n'), "--results", results, "--runs", "2")
    assert again.exit_code == 0 and len(records(results)) == len(recs)  # both runs resume to nothing


@pytest.mark.parametrize("top,args,message", [
    ("", ["--runs", "0"], "--runs 0: give at least 1"),
    ('blocks = 0\n', [], "blocks = 0: give a whole number"),
    ('blocks = "x"\n', [], "give a whole number"),
])
def test_bad_design_input_is_one_line(tmp_path, top, args, message):
    r = run(write(tmp_path, top=top), "--results", tmp_path / "r", *args)
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1


def test_unknown_design_and_unpairable_blocks_are_one_line(tmp_path):
    r = run(write(tmp_path, design="latin"), "--results", tmp_path / "r")
    assert r.exit_code == 2 and "unknown design 'latin'" in r.output
    path = write(tmp_path)
    path.write_text(path.read_text().replace('[[cell]]\nmethod = "baseline"\n', ""))
    r = run(path, "--results", tmp_path / "r")
    assert r.exit_code == 2 and "blocks with trials that cannot be paired" in r.output
    assert len(r.output.strip().splitlines()) == 1
