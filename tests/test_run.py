"""`specsweep run` end to end on tiny synthetic models: records, the table, acceptance, resume,
SIGKILL safety, shards, and one-line errors that keep finished records."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specsweep.records.store import read_jsonl
from tests.conftest import run_cli as run

# These tests are about the sequential design (cell after cell, shards by cell); the blocks design
# has its own in tests/test_run_blocks.py
MATRIX = """
name = "mini"
design = "sequential"
[models]
target    = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
identical = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
unrelated = { synth = "qwen3.5-0.8b", scale = "tiny", seed = 7 }
[defaults]
target = "target"
gpus = []
threads = 2
n_ctx = 512
n_predict = 24
trials = TRIALS
warmup = 0
prompt_kinds = ["chat", "code"]
[[cell]]
method = "baseline"
[[cell]]
name = "draft {draft}"
method = "draft"
draft = ["identical", "unrelated"]
draft_max = 4
[[cell]]
method = "ngram-mod"
n_match = 4
draft_min = 1
draft_max = 8
"""


pytestmark = pytest.mark.usefixtures("module_synth_cache")  # models written once per module


def matrix(tmp_path, trials=1, extra="") -> Path:
    path = tmp_path / "mini.toml"
    path.write_text(MATRIX.replace("TRIALS", str(trials)) + extra)
    return path


def matrix_head(trials=1) -> str:
    """MATRIX up to its first [[cell]]: models and defaults, for tests that write their own rows."""
    return MATRIX.replace("TRIALS", str(trials)).split("[[cell]]")[0]


def trials_of(results: Path) -> list[dict]:
    return [r for p in sorted((results / "mini").glob("trials*.jsonl")) for r in read_jsonl(p)]


def test_run_records_every_trial_and_prints_the_table(tmp_path):
    results = tmp_path / "results"
    out = run(matrix(tmp_path), "--results", results)
    assert out.exit_code == 0, out.output
    records = trials_of(results)
    assert len(records) == 4 * 2  # 4 cells x 2 prompts x 1 trial
    by_cell = {}
    for r in records:
        by_cell.setdefault(r["cell"], []).append(r)
    same, other = by_cell["draft identical"], by_cell["draft unrelated"]
    assert all(r["acceptance"] == 1.0 and r["lossless"] for r in same)
    assert sum(r["n_accepted"] for r in other) / sum(r["n_drafted"] for r in other) < 0.1
    assert all(r["lossless"] for r in records)
    r = same[0]
    assert r["n_generated"] > 24 and r["decode_tps"] > 0 and r["prefill_ms"] > 0
    assert r["accepted_by_pos"] == r["drafted_by_pos"] and len(r["drafted_by_pos"]) == 4
    assert r["rollback"] == "checkpoint" and set(r["time_s"]) == {"decode", "draft", "verify", "rollback", "host"}
    assert len(r["models"]["target"]["sha256"]) == 64
    manifests = read_jsonl(results / "mini" / "manifests.jsonl")
    assert len(manifests) == 1 and manifests[0]["llama_cpp_python"] == "0.3.36"
    assert all(r["manifest"] == manifests[0]["id"] for r in records)
    # the table: a row per cell, identical draft at 100%
    table = out.stdout.splitlines()
    assert table[0].split()[:2] == ["config", "kv"]
    row = next(line for line in table if line.startswith("draft identical"))
    assert "100.0%" in row and row.rstrip().endswith("2/2")


def test_resume_skips_finished_trials_and_adds_new_ones(tmp_path):
    results = tmp_path / "results"
    assert run(matrix(tmp_path), "--results", results).exit_code == 0
    first = trials_of(results)
    again = run(matrix(tmp_path), "--results", results)
    assert again.exit_code == 0 and "nothing to run" in again.output
    assert trials_of(results) == first
    more = run(matrix(tmp_path, trials=2), "--results", results)  # raise trials: only the new ones run
    assert more.exit_code == 0
    records = trials_of(results)
    assert records[: len(first)] == first and len(records) == 2 * len(first)
    keys = [(r["cell_id"], r["prompt_id"], r["trial"]) for r in records]
    assert len(set(keys)) == len(keys)


def test_sigkill_loses_at_most_the_trial_in_flight(tmp_path):
    results = tmp_path / "results"
    path = matrix(tmp_path, trials=6)
    assert run(path, "--results", results, "--dry-run").exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "specsweep", "run", str(path), "--results", str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials_file = results / "mini" / "trials.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if trials_file.is_file() and trials_file.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # simulate the worst moment: a kill in the middle of writing a line
    with open(trials_file, "ab") as f:
        f.write(b'{"kind":"trial","cell_id":"torn')
    kept = trials_of(results)
    assert 5 <= len(kept) < 4 * 2 * 6
    out = run(path, "--results", results)
    assert out.exit_code == 0, out.output
    records = trials_of(results)
    keys = [(r["cell_id"], r["prompt_id"], r["trial"]) for r in records]
    assert len(records) == 4 * 2 * 6 and len(set(keys)) == len(keys)
    assert records[: len(kept)] == kept
    assert all(line.startswith(b"{") and line.endswith(b"}") for line in trials_file.read_bytes().splitlines())


def test_shards_split_the_cells_and_merge(tmp_path):
    results = tmp_path / "results"
    path = matrix(tmp_path)
    for shard in ("1/2", "2/2"):
        assert run(path, "--results", results, "--shard", shard).exit_code == 0
    files = sorted(p.name for p in (results / "mini").glob("trials*.jsonl"))
    assert files == ["trials.shard-1-of-2.jsonl", "trials.shard-2-of-2.jsonl"]
    shard_cells = [{r["cell_id"] for r in read_jsonl(results / "mini" / f)} for f in files]
    assert shard_cells[0].isdisjoint(shard_cells[1]) and len(shard_cells[0] | shard_cells[1]) == 4
    out = run(path, "--results", results)  # the unsharded run sees both shards' records
    assert out.exit_code == 0 and "nothing to run" in out.output
    assert run(path, "--shard", "3/2").exit_code == 2


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """A synthetic model that cannot be written (the cache path runs through a file): one line,
    exit 2, and the run's folder holds no trial."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "file" / "cache"))
    out = run(matrix(tmp_path), "--results", tmp_path / "results")
    assert out.exit_code == 2, out.output
    assert "cannot write" in out.output and "Traceback" not in out.output
    assert not trials_of(tmp_path / "results")


def test_dry_run_loads_nothing(tmp_path):
    out = run(matrix(tmp_path), "--results", tmp_path / "results", "--dry-run")
    assert out.exit_code == 0
    assert "8 trials to run" in out.output and "draft identical" in out.output
    assert not (tmp_path / "results").exists()


def test_context_too_small_is_one_line_and_keeps_records(tmp_path):
    results = tmp_path / "results"
    assert run(matrix(tmp_path), "--results", results).exit_code == 0
    before = (results / "mini" / "trials.jsonl").read_bytes()
    path = matrix(tmp_path, extra='[[cell]]\nname = "tight"\nmethod = "ngram-mod"\nn_ctx = 64\nn_match = 4\n'
                                  'draft_min = 1\ndraft_max = 8\n')
    out = run(path, "--results", results)
    assert out.exit_code == 2
    assert out.output.strip().count("\n") == 0 and "do not fit n_ctx 64" in out.output  # before any trial
    assert (results / "mini" / "trials.jsonl").read_bytes() == before


def test_a_missing_reference_comes_from_plain_decoding(tmp_path, monkeypatch):
    """With no baseline cell, the tokens a speculative trial is checked against are generated once
    by plain decoding, not by the speculative config under test."""
    from specsweep.backends import inprocess as runner

    made = []
    real = runner.make_drafter
    monkeypatch.setattr(runner, "make_drafter", lambda *a: made.append(1) or real(*a))
    path = tmp_path / "spec-only.toml"
    path.write_text(matrix_head()
                    + '[[cell]]\nmethod = "draft"\ndraft = "identical"\ndraft_max = 4\nprompt_kinds = ["chat"]\n')
    results = tmp_path / "results"
    out = run(path, "--results", results)
    assert out.exit_code == 0, out.output
    assert len(made) == 1  # the one measured trial; the reference used none
    (ref,) = read_jsonl(results / "mini" / "references.jsonl")
    (trial,) = trials_of(results)
    assert trial["lossless"] and len(ref["tokens"]) == 25  # plain decoding stops at n_predict + 1


PRIOR_RUNS = """
[[cell]]
name = "ngram-cache prior {lookup_prior_runs}"
method = "ngram-cache"
lookup_prior_runs = [0, 2]
prompt_kinds = ["chat"]
"""


def test_prior_runs_let_ngram_cache_draft_what_the_baseline_said(tmp_path):
    """`lookup_prior_runs = 2`: the dynamic cache of two earlier runs of the prompt drafts the
    baseline's continuation (near-total acceptance, still lossless); without it ngram-cache drafts
    only from the text so far."""
    path = tmp_path / "prior.toml"
    path.write_text(matrix_head() + '[[cell]]\nmethod = "baseline"\n' + PRIOR_RUNS)
    results = tmp_path / "results"
    out = run(path, "--results", results)
    assert out.exit_code == 0, out.output
    by_cell = {t["cell"]: t for t in trials_of(results) if t["method"] == "ngram-cache"}
    cold, warm = by_cell["ngram-cache prior 0"], by_cell["ngram-cache prior 2"]
    assert warm["lossless"] and cold["lossless"]
    assert warm["n_drafted"] >= 16 and warm["acceptance"] >= 0.9
    assert warm["n_accepted"] > cold["n_accepted"] + 8
    assert warm["settings"]["lookup_prior_runs"] == 2


def test_prior_runs_zero_is_the_cell_recorded_before_the_key_existed(tmp_path):
    from specsweep.matrix import load as matrix_load

    ids = []
    for extra in ("", "lookup_prior_runs = 0\n"):
        path = tmp_path / "m.toml"
        path.write_text(matrix_head() + '[[cell]]\nmethod = "ngram-cache"\n' + extra)
        ids.append(matrix_load.load(path).cells[0].id)
    assert ids[0] == ids[1]
    path.write_text(matrix_head() + '[[cell]]\nmethod = "ngram-cache"\nlookup_prior_runs = -1\n')
    out = run(path, "--dry-run")
    assert out.exit_code == 2 and "lookup_prior_runs" in out.output and out.output.strip().count("\n") == 0


def test_target_option_runs_one_target_and_resume_does_the_rest(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(matrix_head()
                    + '[[cell]]\nmethod = "baseline"\ntarget = ["target", "unrelated"]\nprompt_kinds = ["chat"]\n')
    results = tmp_path / "results"
    out = run(path, "--results", results, "--target", "unrelated")
    assert out.exit_code == 0, out.output
    assert [t["models"]["target"]["name"] for t in trials_of(results)] == ["unrelated"]
    out = run(path, "--results", results, "--target", "nope")
    assert out.exit_code == 2 and "no cell has target 'nope'" in out.output and "target, unrelated" in out.output
    assert run(path, "--results", results).exit_code == 0
    assert sorted(t["models"]["target"]["name"] for t in trials_of(results)) == ["target", "unrelated"]


def test_the_summary_names_the_target_when_a_matrix_has_several():
    from specsweep.report.summary import cell_stats, table

    def rec(cell: str, target: str, tps: float) -> dict:
        return {"kind": "trial", "cell_id": cell + target, "cell": cell, "method": "baseline",
                "settings": {"kv": "q8_0", "n_predict": 8}, "reference_key": target, "decode_tps": tps,
                "n_drafted": 0, "n_accepted": 0, "lossless": True, "models": {"target": {"name": target}}}

    one = table(cell_stats([rec("baseline", "a3b", 10.0)]))
    assert "target" not in one.splitlines()[0]
    two = table(cell_stats([rec("baseline", "a3b", 10.0), rec("baseline", "dense27", 5.0)])).splitlines()
    assert two[0].split()[:2] == ["config", "target"]
    assert two[2].split()[:2] == ["baseline", "a3b"] and two[3].split()[:2] == ["baseline", "dense27"]
