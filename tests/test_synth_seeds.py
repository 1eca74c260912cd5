"""Synthetic acceptance draws per trial: each (cell, run, block, prompt) its own seed, derived
reproducibly from `synth_seed`, recorded, the same for a config in process and through
llama-server; and what that does to a cell's interval (it now holds the draws, not timing noise
only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specsweep import methods
from specsweep.analysis.paired import paired_rows
from specsweep.records.attempts import kept
from specsweep.backends import inprocess
from specsweep.engine import synthetic
from specsweep.engine.speculative import TrialResult
from specsweep.matrix import load as matrix_load
from specsweep.records.store import read_jsonl
from tests.conftest import run_cli as run

pytestmark = pytest.mark.usefixtures("module_synth_cache")

MATRIX = """
name = "seeds"
design = "blocks"
blocks = BLOCKS
[models]
target    = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
identical = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
[defaults]
target = "target"
gpus = []
threads = 2
n_ctx = 512
n_predict = 16
warmup = 0
prompt_kinds = ["chat", "code"]
[[cell]]
method = "baseline"
[[cell]]
name = "draft L={synth_len}"
method = "draft"
draft = "identical"
draft_max = 3
synth_len = [2.0, 3.0]
ROOT
"""


def write(tmp_path: Path, blocks: int = 2) -> Path:
    path = tmp_path / "seeds.toml"
    path.write_text(MATRIX.replace("BLOCKS", str(blocks)).replace("ROOT", ""))
    return path


def spec(results: Path) -> list[dict]:
    return [t for t in read_jsonl(results / "seeds" / "trials.jsonl") if t["method"] != "baseline"]


def test_seeds_are_derived_within_llama_servers_range_and_change_with_every_part():
    s = {"method": "draft"}
    base = methods.trial_seed(s, "cell", 0, 0, "p")
    assert base == methods.trial_seed(dict(s), "cell", 0, 0, "p")  # reproducible
    others = {methods.trial_seed(s, "cell2", 0, 0, "p"), methods.trial_seed(s, "cell", 1, 0, "p"),
              methods.trial_seed(s, "cell", 0, 1, "p"), methods.trial_seed(s, "cell", 0, 0, "q"),
              methods.trial_seed({**s, "synth_seed": 7}, "cell", 0, 0, "p")}
    assert base not in others and len(others) == 5
    seeds = [methods.trial_seed(s, "c", 0, b, "p") for b in range(2000)]
    assert all(0 <= x <= methods.SEED_MAX for x in seeds) and len(set(seeds)) == 2000
    assert methods.base_seed(s) == 42 and methods.base_seed({"synth_seed": 9}) == 9


def test_a_config_draws_alike_in_process_and_through_the_server(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MATRIX.replace("BLOCKS", "1").replace("ROOT", 'backend = ["inprocess", "server"]'))
    cells = [c for c in matrix_load.load(path).cells if c.method == "draft"]
    assert len(cells) == 4 and len({c.id for c in cells}) == 4
    assert len({c.draws_key() for c in cells}) == 2  # one per synth_len, whatever the backend


def test_trials_record_their_seed_and_draw_differently_across_blocks_and_prompts(tmp_path):
    results = tmp_path / "r"
    assert run(write(tmp_path, blocks=2), "--results", results).exit_code == 0
    recs = spec(results)
    assert len(recs) == 2 * 2 * 2  # 2 configs x 2 blocks x 2 prompts
    seeds = {(t["cell_id"], t["block"], t["prompt_id"]): t["synth_seed"] for t in recs}
    assert len(set(seeds.values())) == len(recs)  # every trial its own draws
    cells = {c.id: c for c in matrix_load.load(write(tmp_path, blocks=2)).cells}
    for t in recs:
        cell = cells[t["cell_id"]]
        assert t["synth_seed"] == methods.trial_seed(cell.settings, cell.draws_key(), 0, t["block"], t["prompt_id"])
    # the draws differ: a config's accepted counts are not one number in every block and prompt
    for cid in {t["cell_id"] for t in recs}:
        assert len({(t["n_drafted"], t["n_accepted"]) for t in recs if t["cell_id"] == cid}) > 1
    # reproducible: the same matrix elsewhere draws the same seeds and keeps the same drafts
    again = tmp_path / "again"
    assert run(write(tmp_path, blocks=2), "--results", again).exit_code == 0
    same = {(t["cell_id"], t["block"], t["prompt_id"]): (t["synth_seed"], t["n_drafted"], t["n_accepted"])
            for t in spec(again)}
    assert same == {(t["cell_id"], t["block"], t["prompt_id"]): (t["synth_seed"], t["n_drafted"], t["n_accepted"])
                    for t in recs}


def _draw_engine(speed_of_accepted: float = 1.0):
    """A fake server loop whose speed is set by its draws alone: 24 draws at 50%, 100 tok/s plus
    `speed_of_accepted` per kept draft; the baseline's plain loop runs at 100 tok/s exactly."""
    def spec_trial(ctx, tokens, n_predict, drafter=None, synth=None, use_checkpoints=None):
        rng = synthetic.SynthRng(synth.seed)
        kept_ = sum(rng.uniform() < 0.5 for _ in range(n_predict))
        return TrialResult(tokens=[7] * n_predict, t_decode=n_predict / (100.0 + speed_of_accepted * kept_),
                           n_drafted=n_predict, n_accepted=kept_)

    def plain(ctx, tokens, n_predict, drafter=None, use_checkpoints=None):
        return TrialResult(tokens=[7] * n_predict, t_decode=n_predict / 100.0)
    return spec_trial, plain


def test_a_cells_interval_holds_its_draws(tmp_path, monkeypatch):
    """With one seed for every trial (before), a cell's blocks repeat one draw sequence and its
    interval is as narrow as the timing (here: none); with a seed per trial it widens by the draws."""
    spec_trial, plain = _draw_engine()
    monkeypatch.setattr(inprocess, "run_trial_server", spec_trial)
    monkeypatch.setattr(inprocess, "run_trial", plain)
    widths = {}
    for how in ("per trial", "one seed"):
        if how == "one seed":
            monkeypatch.setattr(methods, "trial_seed", lambda settings, *a: methods.base_seed(settings))
        results = tmp_path / how.replace(" ", "-")
        r = run(write(tmp_path, blocks=4), "--results", results)
        assert r.exit_code == 0, r.output
        rows, missing = paired_rows(kept(read_jsonl(results / "seeds" / "trials.jsonl")))
        assert not missing and len(rows) == 2
        widths[how] = [row.t_interval[1] - row.t_interval[0] for row in rows]
    assert all(w < 1e-9 for w in widths["one seed"]), widths
    assert all(w > 0.01 for w in widths["per trial"]), widths
