"""`specsweep check MATRIX`: vocabulary pairs and memory from GGUF headers, before anything loads;
and `specsweep run` refusing a mismatched draft before its first trial."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from specsweep.cli import main
from tests.test_models_fetch import put_in_cache

ROOT = Path(__file__).resolve().parent.parent
MATRIX = """
name = "chk"
design = "sequential"  # a draft without a baseline: the blocks design would refuse it
[models]
t = { synth = "qwen3.6-35b-a3b", scale = "tiny" }
good = { synth = "qwen3.5-0.8b", scale = "tiny", seed = 3 }
bad = { synth = "qwen3-0.6b", scale = "tiny" }
[defaults]
target = "t"
gpus = []
n_ctx = 512
n_predict = 8
trials = 1
warmup = 0
prompt_kinds = ["chat"]
[[cell]]
method = "draft"
draft = DRAFTS
"""


def write(tmp_path, drafts: str) -> Path:
    path = tmp_path / "chk.toml"
    path.write_text(MATRIX.replace("DRAFTS", drafts))
    return path


def test_check_accepts_the_family_draft_and_refuses_the_other(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    out = CliRunner().invoke(main, ["check", str(write(tmp_path, '["good", "bad"]'))])
    assert out.exit_code == 2
    assert "fit good -> t (draft): ok" in out.output and "fit bad -> t (draft): REFUSED" in out.output
    last = out.output.strip().splitlines()[-1]
    assert last.startswith("specsweep: error: draft bad cannot speculate for target t")
    assert "first differing token: id 1536" in last
    assert "memory draft good" in out.output  # weights + KV estimate against free memory
    ok = CliRunner().invoke(main, ["check", str(write(tmp_path, '"good"'))])
    assert ok.exit_code == 0, ok.output


def test_run_refuses_a_mismatched_draft_before_any_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "results"
    out = CliRunner().invoke(main, ["run", str(write(tmp_path, '["good", "bad"]')), "--results", str(results)])
    assert out.exit_code == 2 and "draft bad cannot speculate for target t" in out.output
    assert not list(results.rglob("trials*.jsonl"))


def test_check_a3b_matrix_on_synthetic_stand_ins(tmp_path, tiny_model):
    """matrices/a3b.toml as shipped, its models.lock names served from a Hugging Face cache that
    holds tiny synthetic stand-ins: the vocab-matched draft passes, a qwen3 one is refused."""
    hub = tmp_path / "hf" / "hub"
    put_in_cache(hub, "unsloth/Qwen3.6-35B-A3B-GGUF", "Qwen3.6-35B-A3B-UD-Q4_K_XL.gguf",
                 tiny_model("qwen3.6-35b-a3b"), revision="9280dd353ab587157920d5bd391ada414d84e552")

    # the stand-ins are not the real files: a copy of the lock without the real files' pinned sha256
    # and size (the shipped lock pins them), so the header checks are what this test exercises
    lock = (ROOT / "models.lock").read_text()
    unpinned = re.sub(r'(?m)^(sha256 = "[0-9a-f]{64}"|size = \d+)\n', "", lock)
    assert unpinned != lock
    (tmp_path / "models.lock").write_text(unpinned.replace('unverified = ["revision", "vocab"]',
                                                           'unverified = ["revision", "sha256", "size", "vocab"]'))

    def check_with(draft_card: str) -> subprocess.CompletedProcess:
        put_in_cache(hub, "unsloth/Qwen3.5-0.8B-GGUF", "Qwen3.5-0.8B-Q4_K_M.gguf", tiny_model(draft_card),
                     revision="main-" + draft_card)
        (hub / "models--unsloth--Qwen3.5-0.8B-GGUF" / "refs" / "main").write_text("main-" + draft_card)
        env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1",
                   SPECSWEEP_LOCK=str(tmp_path / "models.lock"))
        return subprocess.run([sys.executable, "-m", "specsweep", "check", "matrices/a3b.toml"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    good = check_with("qwen3.5-0.8b")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "fit draft -> a3b (draft): ok" in good.stdout
    bad = check_with("qwen3-0.6b")
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("specsweep: error: draft draft cannot speculate for target a3b")
    assert bad.stderr.strip().count("\n") == 0


def test_check_names_cells_the_blocks_design_cannot_pair(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    path = write(tmp_path, '"good"')
    path.write_text(path.read_text().replace('design = "sequential"', 'design = "blocks"'))
    out = CliRunner().invoke(main, ["check", str(path)])
    assert out.exit_code == 2
    assert "design blocks: REFUSED" in out.output and "fit good -> t (draft): ok" in out.output
    assert "blocks with trials that cannot be paired" in out.output.strip().splitlines()[-1]


def test_check_for_a_card_with_less_memory_names_the_fewest_experts_to_offload(tmp_path, monkeypatch):
    """`check --vram SIZE` judges memory for a card of SIZE; a MoE cell that does not fit gets the
    smallest --n-cpu-moe that does (by the same estimate: N fits, N - 1 does not); a dense one is
    told no expert offload helps; a bad size is one line, exit 2."""
    from specsweep.matrix import load as matrix_load
    from specsweep.matrix.models import resolve
    from specsweep.models import placement
    from specsweep.models.memory import TIGHT, placement_memory

    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "vram.toml"
    path.write_text(MATRIX.replace('gpus = []', 'gpus = [0]').split("[[cell]]")[0]
                    + '[models.dense]\nsynth = "qwen3-0.6b"\nscale = "tiny"\n'
                    + '[[cell]]\nmethod = "baseline"\n[[cell]]\nname = "dense"\nmethod = "baseline"\ntarget = "dense"\n')
    matrix = matrix_load.load(path)
    moe = resolve(matrix.models["t"], path, create=True)
    resolve(matrix.models["dense"], path, create=True)
    full = placement_memory(moe, (), None, (0,), kv_type="q8_0", n_ctx=512)
    budget = int(sum(full.devices.values()) * 0.6)  # between every expert on the host and none
    out = CliRunner().invoke(main, ["check", str(path), "--vram", f"{budget}B"])
    assert out.exit_code == 0, out.output
    found = re.search(r"fits with n_cpu_moe = (\d+) \(--n-cpu-moe", out.output)
    assert found, out.output
    n = int(found.group(1))

    def device(k: int) -> int:  # the target is the cell's only model
        pm = placement_memory(moe, tuple(placement.Override(p, "CPU") for p in placement.n_cpu_moe_patterns(k)),
                              None, (0,), kv_type="q8_0", n_ctx=512)
        return sum(pm.devices.values())

    assert device(n) <= TIGHT * budget < device(n - 1)
    tiny = CliRunner().invoke(main, ["check", str(path), "--vram", "1KiB"])
    assert tiny.exit_code == 0 and tiny.output.count("no --n-cpu-moe makes it fit") == 2, tiny.output
    bad = CliRunner().invoke(main, ["check", str(path), "--vram", "lots"])
    assert bad.exit_code == 2 and "--vram" in bad.output and bad.output.strip().count("\n") == 0
