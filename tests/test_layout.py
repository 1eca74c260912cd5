"""GPU layouts: matrix axes -> llama.cpp's model parameters, a two-GPU dry run on the CPU, and
`specsweep check` warning when a layout asks for GPUs the machine does not have."""

from __future__ import annotations

from pathlib import Path

import llama_cpp as ll
import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.engine.runtime import gpu_placement
from specsweep.errors import SpecsweepError
from specsweep.matrix.load import load

ROOT = Path(__file__).resolve().parent.parent


def test_no_gpu_keeps_every_layer_on_the_cpu():
    p = gpu_placement(())
    assert (p.n_gpu_layers, p.split_mode, p.tensor_split) == (0, ll.LLAMA_SPLIT_MODE_NONE, ())


def test_one_gpu_is_split_mode_none_on_that_gpu():
    p = gpu_placement((1,), "row")
    assert (p.n_gpu_layers, p.split_mode, p.main_gpu, p.tensor_split) == (-1, ll.LLAMA_SPLIT_MODE_NONE, 1, ())


@pytest.mark.parametrize("mode, value", [("layer", ll.LLAMA_SPLIT_MODE_LAYER), ("row", ll.LLAMA_SPLIT_MODE_ROW),
                                         ("tensor", ll.LLAMA_SPLIT_MODE_TENSOR)])
def test_two_gpus_split_evenly_or_by_the_given_shares(mode, value):
    p = gpu_placement((0, 1), mode, n_devices=4)
    assert (p.split_mode, p.main_gpu, p.tensor_split) == (value, 0, (1.0, 1.0, 0.0, 0.0))
    q = gpu_placement((2, 1), mode, (3, 1), n_devices=4)
    assert q.tensor_split == (0.0, 1.0, 3.0, 0.0) and q.main_gpu == 2


@pytest.mark.parametrize("args", [((0, 1), "diagonal", ()), ((0, 1), "layer", (1,)), ((0, 1), "layer", (-1, 2)),
                                  ((0, 20), "layer", ())])
def test_impossible_layouts_are_one_line_errors(args):
    with pytest.raises(SpecsweepError):
        gpu_placement(*args, n_devices=16)


def test_two_gpu_matrix_expands_and_dry_runs_on_the_cpu():
    m = load(ROOT / "matrices" / "a3b-synthetic-2gpu.toml")
    layouts = {(tuple(c.gpus), c.split_mode, c.settings.get("draft_gpu")) for c in m.cells}
    assert layouts == {((0,), "none", None), ((0,), "none", 0), ((0,), "none", 1), ((0, 1), "layer", None),
                       ((0, 1), "row", None)}
    out = CliRunner().invoke(main, ["run", str(ROOT / "matrices" / "a3b-synthetic-2gpu.toml"), "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "load on GPU 0+1 (split row)" in out.output and "load on GPU 0+1 (split layer)" in out.output
    assert "draft 0.8B max=4 on GPU 1" in out.output


def test_bad_tensor_split_in_a_matrix(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[models]\nt = { synth = "qwen3-0.6b", scale = "tiny" }\n[defaults]\ntarget = "t"\n'
                    '[[cell]]\nmethod = "baseline"\ngpus = [[0, 1]]\ntensor_split = [[1, 2, 3]]\n')
    with pytest.raises(SpecsweepError, match="one non-negative share per GPU"):
        load(path)


def test_check_warns_when_a_layout_wants_more_gpus_than_there_are(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("specsweep.run.check.nvidia_smi_free", lambda: [80 << 30])  # one GPU
    path = tmp_path / "m.toml"
    path.write_text('[models]\nt = { synth = "qwen3-0.6b", scale = "tiny" }\n[defaults]\ntarget = "t"\n'
                    '[[cell]]\nname = "split"\nmethod = "baseline"\ngpus = [[0, 1]]\n')
    out = CliRunner().invoke(main, ["check", str(path)])
    assert out.exit_code == 0, out.output
    assert "warning: cell 'split' asks for GPU 1 but this machine has 1 GPU" in out.output
