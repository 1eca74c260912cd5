"""Where the weights live: the placement keys (n_cpu_moe, override_tensor, n_gpu_layers, vram_budget,
draft_n_cpu_moe), the estimate per placement against what llama.cpp reports it loaded, the fit of a
vram_budget (the Python approximation on this CPU, llama-fit-params' glue with a stand-in tool),
records and probes that carry the placement, and bad input refused in one line with nothing lost.

On a CPU-only llama.cpp every buffer is host memory, so what is read back here is the list of
tensors an override moved (llama.cpp logs each one); bytes per GPU are for the GPU machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.engine import buffer_types, runtime
from specsweep.errors import SpecsweepError
from specsweep.matrix.load import load
from specsweep.models import fit, placement
from specsweep.models.memory import HOST, placement_memory
from specsweep.models.placement import Override, parse_override, parse_size, placement_flags, target_spec
from specsweep.records.store import read_jsonl
from tests.conftest import run_cli as _run

MOE = "qwen3.6-35b-a3b"  # tiny: 4 layers (3 recurrent, 1 attention), 16 experts; 87 tensors
EXPS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")


# --- parsing --------------------------------------------------------------------------------------

def test_n_cpu_moe_is_llama_cpps_pattern_per_layer():
    # common/common.h: string_format("blk\\.%d%s", i, "\\.ffn_(up|down|gate|gate_up)_(ch|)exps")
    assert placement.n_cpu_moe_patterns(2) == [r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps",
                                                r"blk\.1\.ffn_(up|down|gate|gate_up)_(ch|)exps"]
    spec = target_spec({"n_cpu_moe": 1, "override_tensor": [r"output\.weight=CPU"]})
    assert [o.text for o in spec.overrides] == [r"output\.weight=CPU", r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"]


def test_override_and_size_syntax():
    assert parse_override(r"blk\.1\.attn_q=CUDA0") == Override(r"blk\.1\.attn_q", "CUDA0")
    for bad, message in [("noequals", "is not REGEX=BUFTYPE"), ("=CPU", "is not REGEX=BUFTYPE"),
                         ("a=GPU0", "unknown buffer type 'GPU0'"), ("a=CPU_REPACK", "unknown buffer type"),
                         ("a(=CPU", "not a regular expression"), ("a{1,2}=CPU", "has a comma"), (3, "not a string")]:
        with pytest.raises(SpecsweepError, match=message):
            parse_override(bad)
    assert parse_size("24GiB") == 24 * 2**30 and parse_size("24000 MiB") == 24000 * 2**20
    assert parse_size("25.7GB") == 25_700_000_000 and parse_size("1.5gib") == 3 * 2**29
    for bad in ("24", "24 GiBs", "-1GiB", "0GiB", 24):
        with pytest.raises(SpecsweepError, match="vram_budget"):
            parse_size(bad)


def test_placement_flags_for_llama_server():
    s = {"method": "draft", "n_cpu_moe": 3, "override_tensor": [r"blk\.0\.attn_q\.weight=CPU", "x=CUDA1"],
         "n_gpu_layers": 30, "draft_n_cpu_moe": 2}
    assert placement_flags(s) == ["-ngl", "30", "-ot", r"blk\.0\.attn_q\.weight=CPU,x=CUDA1", "--n-cpu-moe", "3",
                                  "--spec-draft-n-cpu-moe", "2"]
    assert placement_flags({"method": "baseline"}) == []
    budget = {"vram_budget": "24GiB", "gpus": [0]}
    with pytest.raises(SpecsweepError, match="resolve it first"):
        placement_flags(budget)
    fitted = fit.Fit(41, (Override("a", "CPU"), Override("b", "CPU")), "approximation", 24 * 2**30, fit.FIT_TARGET)
    assert placement_flags(budget, fitted) == ["-ngl", "41", "-ot", "a=CPU,b=CPU"]
    assert placement_flags(budget, fit.Fit(None, (), "llama-fit-params", 1, 1)) == []


def test_load_log_is_read_back():
    lines = ["load_tensors: layer   3 assigned to device CUDA0, is_swa = 0\n",
             "tensor blk.0.ffn_up_exps.weight (1536 MiB q4_K) buffer type overridden to CPU_REPACK\n",
             "tensor blk.0.ffn_down_exps.weight (0 MiB q4_0) buffer type overridden to CPU\n",
             "load_tensors:   CPU_Mapped model buffer size =   515.25 MiB\n",
             "load_tensors:        CUDA0 model buffer size = 20798.00 MiB\n",
             "load_tensors:    CUDA_Host model buffer size =     1.50 MiB\n"]
    got = placement.read_load_log(lines)
    assert got.overridden == {"blk.0.ffn_up_exps.weight": "CPU_REPACK", "blk.0.ffn_down_exps.weight": "CPU"}
    assert got.buffers == {"CPU_Mapped": round(515.25 * 2**20), "CUDA0": 20798 * 2**20, "CUDA_Host": round(1.5 * 2**20)}
    assert got.host_bytes == round(516.75 * 2**20) and got.device_bytes == {"CUDA0": 20798 * 2**20}


# --- the matrix -------------------------------------------------------------------------------------

HEAD = f'[models]\nt = {{ synth = "{MOE}", scale = "tiny" }}\n[defaults]\ntarget = "t"\n'


def _matrix(tmp_path, rows: str, name="m.toml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + rows)
    return path


def test_matrix_keys_expand_and_leave_unset_cells_as_they_were(tmp_path):
    plain = load(_matrix(tmp_path, '[[cell]]\nmethod = "baseline"\n', "a.toml")).cells[0]
    m = load(_matrix(tmp_path, '[[cell]]\nmethod = "baseline"\n[[cell]]\nmethod = "baseline"\nn_cpu_moe = [1, 2]\n'
                               '[[cell]]\nmethod = "baseline"\noverride_tensor = [["a=CPU"], ["b=CPU", "c=CPU"]]\n'
                               '[[cell]]\nmethod = "draft"\ndraft = "t"\ndraft_n_cpu_moe = 1\nvram_budget = "24GiB"\n', "b.toml"))
    cells = m.cells
    assert cells[0].id == plain.id and cells[0].reference_key() == plain.reference_key()
    empty = load(_matrix(tmp_path, '[[cell]]\nmethod = "baseline"\noverride_tensor = []\n', "c.toml")).cells[0]
    assert (empty.id, empty.name) == (plain.id, "baseline")  # an empty override list is no placement
    zero = load(_matrix(tmp_path, '[[cell]]\nmethod = "baseline"\nn_cpu_moe = 0\n', "d.toml")).cells[0]
    assert zero.id == plain.id and zero.reference_key() == plain.reference_key()  # no expert moves
    assert [c.name for c in cells[1:5]] == ["baseline ncmoe=1", "baseline ncmoe=2", "baseline ot=1", "baseline ot=2"]
    assert cells[3].settings["override_tensor"] == ["a=CPU"]
    # a placement changes where experts are computed, hence the reference the tokens are compared with
    assert len({c.reference_key() for c in cells[:5]}) == 5
    assert cells[5].name == "draft t max=3 min=0 vram=24GiB draft-ncmoe=1"


@pytest.mark.parametrize("row, message", [
    ('vram_budget = "24GiB"\nn_gpu_layers = 10', "vram_budget cannot be combined with n_gpu_layers"),
    ('vram_budget = "24GiB"\nn_cpu_moe = 10', "vram_budget cannot be combined with n_cpu_moe"),
    ('vram_budget = "24GiB"\noverride_tensor = ["a=CPU"]', "vram_budget cannot be combined with override_tensor"),
    ('vram_budget = "24GiB"\ngpus = [[0, 1]]', "vram_budget places a model on one GPU"),
    ('vram_budget = "24 gigs"', "give a size such as"),
    ('override_tensor = ["a=GPU0"]', "unknown buffer type 'GPU0'"),
    ('n_cpu_moe = -1', "n_cpu_moe = -1 is below 0"),
    ('draft_n_cpu_moe = 1', "has no parameter 'draft_n_cpu_moe'"),
])
def test_matrix_refuses_bad_placements_in_one_line(tmp_path, row, message):
    with pytest.raises(SpecsweepError, match=message) as e:
        load(_matrix(tmp_path, f'[[cell]]\nmethod = "baseline"\n{row}\n'))
    assert "\n" not in e.value.message


# --- the estimate, from the header ------------------------------------------------------------------

def test_estimate_places_layers_and_overrides_as_llama_cpps_loader(tiny_model):
    path = tiny_model(MOE)
    every = placement_memory(path, gpus=(0,), kv_type="f16", n_ctx=256)
    total = sum(every.weights.values())
    assert set(every.weights) == {HOST, "GPU0"} and every.weights[HOST] == 147456  # token_embd: the input layer
    assert every.overridden == {} and every.n_gpu_layers == 5  # 4 layers + the output layer
    # -ngl 2: the output layer and layer 3 (the attention layer, with its KV cache) on the GPU
    two = placement_memory(path, n_gpu_layers=2, gpus=(0,), kv_type="f16", n_ctx=256)
    on_gpu = {t for t, p in two.where.items() if p == "GPU0"}
    assert on_gpu == {t for t in two.where if t.startswith(("blk.3.", "output"))}
    assert two.state == {"GPU0": 256 * 2 * 128 * 2, HOST: every.state["GPU0"] - 256 * 2 * 128 * 2}
    assert sum(two.weights.values()) == total
    # --n-cpu-moe 2: the experts of layers 0 and 1 (3 tensors each) on the host, nothing else moves
    moe = placement_memory(path, target_spec({"n_cpu_moe": 2}).overrides, gpus=(0,))
    assert set(moe.overridden) == {f"blk.{i}.{e}.weight" for i in (0, 1) for e in EXPS}
    assert moe.weights[HOST] == 147456 + 6 * 73728 and sum(moe.weights.values()) == total
    # an override to another device, and two GPUs splitting the layers evenly
    split = placement_memory(path, [Override(r"output\.weight", "CUDA1")], gpus=(0, 1))
    assert split.where["output.weight"] == "GPU1" and split.where["blk.0.attn_qkv.weight"] == "GPU0"
    assert split.where["blk.2.attn_qkv.weight"] == "GPU0" and split.where["blk.3.attn_q.weight"] == "GPU1"
    assert placement_memory(path, gpus=()).weights == {HOST: total}


# --- llama.cpp reads the same placement -------------------------------------------------------------

def _approx(path, budget):
    return fit.approximate_fit(fit.Request(path, path.name, budget, n_ctx=512))


@pytest.mark.parametrize("case", ["n_cpu_moe", "override_tensor", "both", "vram_budget", "vram_budget_tight"])
def test_llama_cpp_moves_the_tensors_the_estimate_says(tiny_model, case):
    path = tiny_model(MOE)
    full = placement_memory(path, gpus=(0,), n_ctx=512).bytes_on("GPU0")
    ngl = None
    if case.startswith("vram_budget"):
        fitted = _approx(path, fit.FIT_TARGET + (full - 1 if case == "vram_budget" else full // 2))
        overrides, ngl = fitted.overrides, fitted.n_gpu_layers
        assert overrides and fitted.source == "approximation"
    else:
        keys = {"n_cpu_moe": {"n_cpu_moe": 3}, "override_tensor": {"override_tensor": [r"blk\.3\.attn_(q|k)\.=CPU",
                                                                                        r"output\.weight=CPU"]},
                "both": {"n_cpu_moe": 1, "override_tensor": [r"blk\.[0-9]+\.ffn_down=CPU"]}}[case]
        overrides = target_spec(keys).overrides
    est = placement_memory(path, overrides, ngl, gpus=(0,), n_ctx=512)
    with runtime.Model(path, (0,), tensor_overrides=overrides, n_gpu_layers=ngl) as model:
        loaded = model.loaded
    assert est.overridden and set(loaded.overridden) == set(est.overridden)
    assert all(est.where[t] == HOST for t in loaded.overridden)
    assert all(b.startswith("CPU") for b in loaded.overridden.values())  # CPU, or its repacking buffer
    assert loaded.buffers and loaded.device_bytes == {}  # a CPU-only llama.cpp: host memory only
    if case == "both":  # -ot's ffn_down (experts and shared expert) in every layer, -ncmoe's experts of layer 0
        assert {t for t in est.overridden if t.startswith("blk.0.")} == {f"blk.0.{e}.weight" for e in EXPS} | {
            "blk.0.ffn_down_shexp.weight"}
        assert len(est.overridden) == 4 * 2 + 2


def test_buffer_types_are_libllamas_own():
    runtime.init()
    have = buffer_types.available()
    assert have["CPU"] == buffer_types.cpu_buffer_type()
    arr = buffer_types.override_array([Override("a", "CPU")], "test")
    assert arr[0].pattern == b"a" and arr[0].buft == buffer_types.cpu_buffer_type() and arr[1].pattern is None
    if "CUDA0" not in have:
        with pytest.raises(SpecsweepError, match="no buffer type 'CUDA0' \\(it has CPU"):
            buffer_types.override_array([Override("a", "CUDA0")], "test")


# --- vram_budget: the fit ---------------------------------------------------------------------------

def test_the_approximation_puts_more_on_the_gpu_the_more_budget_it_has(tiny_model):
    path = tiny_model(MOE)
    full = placement_memory(path, gpus=(0,), n_ctx=512).bytes_on("GPU0")
    assert _approx(path, fit.FIT_TARGET + full) == fit.Fit(None, (), "approximation", fit.FIT_TARGET + full,
                                                           fit.FIT_TARGET, full)
    last = full
    for share in (0.95, 0.8, 0.6, 0.4, 0.2, 0.1):
        f = _approx(path, fit.FIT_TARGET + int(full * share))
        assert f.projected <= full * share and f.projected <= last  # within the budget, less each time
        gpu = placement_memory(path, f.overrides, f.n_gpu_layers, gpus=(0,), n_ctx=512).bytes_on("GPU0")
        assert gpu == f.projected
        last = f.projected
    # fit keeps the *last* layers' experts on the host: at 60% layers 0 (and 1) keep theirs on the GPU
    f = _approx(path, fit.FIT_TARGET + int(full * 0.6))
    where = placement_memory(path, f.overrides, f.n_gpu_layers, gpus=(0,), n_ctx=512).where
    assert where["blk.0.ffn_up_exps.weight"] == "GPU0" and where["blk.3.ffn_up_exps.weight"] == HOST


def test_the_approximation_takes_the_most_layers_of_a_dense_model_that_fit(tiny_model):
    path = tiny_model("qwen3-0.6b")

    def gpu(ngl):
        return placement_memory(path, n_gpu_layers=ngl, gpus=(0,), n_ctx=512).bytes_on("GPU0")

    for ngl in (1, 2, 3, 4):
        f = _approx(path, fit.FIT_TARGET + gpu(ngl) + 1)
        assert (f.n_gpu_layers, f.overrides) == (ngl, ())  # one more layer would not fit
    with pytest.raises(SpecsweepError, match=r"too small for any placement.*about .* MiB would fit its output layer"):
        _approx(path, fit.FIT_TARGET + gpu(1) - 1)


FAKE_TOOL = r'''#!{python}
import os
import subprocess
import sys
open({log!r}, "a").write(" ".join(sys.argv[1:]) + "\n")
print("common_params_fit_impl: projected to use 30000 MiB of device memory vs. 24000 MiB of free device memory", file=sys.stderr)
print("common_params_fit_impl:   - CUDA0 (NVIDIA H200): 41 layers (2 overflowing),  22000 MiB used,   2000 MiB free", file=sys.stderr)
print('-c 4096 -ngl {ngl} -ot "blk\\.38\\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU,blk\\.39\\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU"')
'''


def _fake_tool(folder: Path, ngl=41) -> tuple[Path, Path]:
    folder.mkdir(exist_ok=True)
    tool, log = folder / "llama-fit-params", folder / "argv.log"
    tool.write_text(FAKE_TOOL.format(python=sys.executable, log=str(log), ngl=ngl))
    tool.chmod(0o755)
    return tool, log


def test_llama_fit_params_is_run_with_the_margin_that_leaves_the_budget(tiny_model, tmp_path):
    """llama-fit-params fits to free - margin; the second run's margin makes that budget - 1 GiB."""
    tool, log = _fake_tool(tmp_path / "tool")
    req = fit.Request(tiny_model(MOE), "a3b", 20 * 2**30, gpu=1, kv="f16", n_ctx=8192, n_batch=256)
    f = fit.fit_placement(req, [{"name": "CUDA0"}], tool)
    first, second = log.read_text().splitlines()
    assert "--fit-target 1024" in first and "-mg 1" in first and "-c 8192 -b 256 -ub 256 -ctk f16 -ctv f16" in first
    assert f"--fit-target {24000 - (20 * 1024 - 1024)}" in second
    assert f.source == "llama-fit-params" and f.n_gpu_layers == 41 and f.projected == 22000 * 2**20
    assert [o.text for o in f.overrides] == [rf"blk\.{i}\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU" for i in (38, 39)]
    with pytest.raises(SpecsweepError, match="has only 24000 MiB free"):
        fit.fit_placement(fit.Request(req.path, "a3b", 30 * 2**30), [{"name": "CUDA0"}], tool)
    with pytest.raises(SpecsweepError, match="llama-fit-params, which is not built"):
        fit.fit_placement(req, [{"name": "CUDA0"}], None)
    zero, _ = _fake_tool(tmp_path / "zero", ngl=0)
    with pytest.raises(SpecsweepError, match="too small for any placement .*llama-fit-params puts no layer"):
        fit.fit_placement(req, [{"name": "CUDA0"}], zero)


# --- records, the probe, and bad input with nothing lost --------------------------------------------

RUN = f"""
name = "place"
design = "sequential"
[models]
t = {{ synth = "{MOE}", scale = "tiny" }}
dense = {{ synth = "qwen3.5-0.8b", scale = "tiny" }}
[defaults]
target = "t"
gpus = []
threads = 2
n_ctx = 512
n_predict = 8
trials = 1
warmup = 0
prompt_kinds = ["code"]
[[cell]]
method = "baseline"
n_cpu_moe = 2
[[cell]]
method = "draft"
draft = "t"
n_cpu_moe = 2
draft_n_cpu_moe = 1
[[cell]]
method = "baseline"
gpus = [0]
vram_budget = "1025MiB"
"""


@pytest.fixture
def synth_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))


def test_records_carry_the_placement_and_bad_input_loses_nothing(tmp_path, synth_cache):
    path, results = tmp_path / "place.toml", tmp_path / "results"
    path.write_text(RUN)
    out = _run(path, "--results", results)
    assert out.exit_code == 0, out.output
    assert "vram_budget 1025MiB -> -ngl 5 -ot" in out.output and "(approximation)" in out.output
    records = read_jsonl(results / "place" / "trials.jsonl")
    by = {r["cell"]: r["placement"] for r in records}
    assert set(by) == {"baseline ncmoe=2", "draft t max=3 min=0 ncmoe=2 draft-ncmoe=1", "baseline vram=1025MiB"}
    p = by["baseline ncmoe=2"]
    assert p["n_cpu_moe"] == 2 and p["overridden_tensors"] == 6 == p["estimate"]["overridden_tensors"]
    assert p["buffers"] and p["host_bytes"] == sum(p["buffers"].values()) and p["device_bytes"] == {}
    d = by["draft t max=3 min=0 ncmoe=2 draft-ncmoe=1"]
    assert d["overridden_tensors"] == 6 and d["draft"] == {**d["draft"], "n_cpu_moe": 1, "overridden_tensors": 3}
    v = by["baseline vram=1025MiB"]
    assert v["fit"]["source"] == "approximation" and v["fit"]["n_gpu_layers"] == 5 and v["fit"]["override_tensor"]
    assert v["overridden_tensors"] == v["estimate"]["overridden_tensors"] > 0
    before = (results / "place" / "trials.jsonl").read_bytes()

    for row, message in [
        ('override_tensor = ["nothing_here=CPU"]', r"override_tensor 'nothing_here=CPU' matches no tensor of target t"),
        ("n_cpu_moe = 9", "n_cpu_moe = 9 is beyond the 4 layers of target t"),
        ("n_gpu_layers = 6", "n_gpu_layers = 6 is beyond the 4 layers"),
        ('gpus = [0]\nvram_budget = "1024.05MiB"', "vram_budget 1024.0 MiB is too small for any placement of t"),
        ('method = "draft"\ndraft = "dense"\ndraft_n_cpu_moe = 1', "draft dense has no expert tensors"),
        ('override_tensor = ["output=CUDA7"]', "this llama.cpp has no buffer type 'CUDA7'"),
        ('vram_budget = "8GiB"\nn_gpu_layers = 2', "cannot be combined with n_gpu_layers"),
    ]:
        method = "" if "method" in row else 'method = "baseline"\n'
        path.write_text(RUN + f"[[cell]]\n{method}{row}\n")
        out = _run(path, "--results", results)
        assert out.exit_code == 2, (row, out.output)
        lines = [ln for ln in out.output.strip().splitlines() if not ln.startswith("writing synthetic model")]
        assert len(lines) == 1 and message in lines[0], out.output
        assert (results / "place" / "trials.jsonl").read_bytes() == before


def test_probe_measures_with_experts_on_the_host(tiny_model, tmp_path):
    results = tmp_path / "results"
    base = ["probe", tiny_model(MOE), "--gpus", "", "--k", "1,2,4", "--reps", "1", "--threads", "1", "--results", results]
    out = CliRunner().invoke(main, [*map(str, base), "--n-cpu-moe", "3"])
    assert out.exit_code == 0, out.output
    assert "placement: CPU_Mapped" in out.output and "9 tensors overridden" in out.output
    r = read_jsonl(results / "probe" / "probe.jsonl")[0]
    assert r["placement"]["n_cpu_moe"] == 3 and r["placement"]["overridden_tensors"] == 9
    assert r["placement"]["estimate"]["overridden_tensors"] == 9 and len(r["curve"]) == 3
    for extra, message in [(["--n-cpu-moe", "5"], "beyond the 4 layers of model"),
                           (["--override-tensor", "zzz=CPU"], "matches no tensor of model"),
                           (["--vram-budget", "8GiB"], "vram_budget places a model on one GPU"),
                           (["--gpus", "0", "--vram-budget", "8GiB", "--n-gpu-layers", "2"], "cannot be combined"),
                           (["--n-gpu-layers", "-3"], "must be non-negative")]:
        out = CliRunner().invoke(main, [*map(str, base), *extra])
        assert out.exit_code == 2 and out.output.strip().count("\n") == 0 and message in out.output, out.output
    assert len(read_jsonl(results / "probe" / "probe.jsonl")) == 1


def test_check_shows_the_split_and_refuses_from_the_header(tmp_path, synth_cache):
    path = _matrix(tmp_path, '[[cell]]\nmethod = "baseline"\nn_cpu_moe = [0, 2]\n')
    out = CliRunner().invoke(main, ["check", str(path)])
    assert out.exit_code == 0, out.output
    assert "placement baseline ncmoe=2: target host 0.00 GiB, GPU0 0.00 GiB (6 tensors overridden; estimate)" in out.output
    assert "placement baseline ncmoe=0" not in out.output  # no expert moves
    path.write_text(HEAD + '[[cell]]\nmethod = "baseline"\noverride_tensor = ["blk\\\\.9\\\\.=CPU"]\n')
    out = CliRunner().invoke(main, ["check", str(path)])
    assert out.exit_code == 2 and "matches no tensor of target t" in out.output.splitlines()[-1]


FIT_TOOL = fit.native_bin() / "llama-fit-params"


def test_llama_cpps_own_flag_parser_moves_the_same_tensors(tiny_model):
    """placement_flags' -ot/--n-cpu-moe, given to a native llama.cpp tool (llama-fit-params loads the
    model without allocating, logging each override), move exactly the tensors the in-process load moves."""
    if not FIT_TOOL.is_file():
        if os.environ.get("SPECSWEEP_REQUIRE_NATIVE") == "1":
            pytest.fail(f"native llama-fit-params not built ({FIT_TOOL})")
        pytest.skip(f"native llama-fit-params not built ({FIT_TOOL})")
    from specsweep.engine.native import native_env

    path = tiny_model(MOE)
    settings = {"n_cpu_moe": 1, "override_tensor": [r"blk\.3\.attn_(q|k)\.=CPU", r"output\.weight=CPU"]}
    proc = subprocess.run([str(FIT_TOOL), "-m", str(path), "-c", "512", "-v", *placement_flags(settings)],
                          capture_output=True, text=True, errors="replace", env=native_env(FIT_TOOL),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    native = placement.read_load_log((proc.stdout + proc.stderr).splitlines())
    with runtime.Model(path, (0,), tensor_overrides=target_spec(settings).overrides) as model:
        assert native.overridden == model.loaded.overridden
    # output\.weight is searched, so blk.3.attn_output.weight moves too, in both
    assert len(native.overridden) == 3 + 2 + 2 and "blk.3.attn_output.weight" in native.overridden


def test_which_layers_experts_a_recorded_placement_put_on_the_host():
    """A fit's own -ot patterns (as llama-fit-params printed them for the 122B-A10B at 24 GiB: part
    of layer 16, then 17-48, 48 being its MTP layer) and --n-cpu-moe's first-N rule; a layer whose
    up-projection stays on the GPU (layer 16 keeps ffn_up) is not on the host."""
    from specsweep.models.placement import experts_on_host

    fit = {"vram_budget": "24GiB", "fit": {"override_tensor": [r"blk\.16\.ffn_(gate|gate_up|down).*=CPU"] + [
        rf"blk\.{i}\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU" for i in range(17, 49)]}}
    assert [experts_on_host(fit, i) for i in (0, 15, 16, 17, 47, 48)] == [False, False, False, True, True, True]
    moe = {"n_cpu_moe": 40}
    assert [experts_on_host(moe, i) for i in (0, 39, 40)] == [True, True, False]  # the MTP layer 40 stays
    assert not experts_on_host({}, 0)
    assert not experts_on_host({"override_tensor": [r"blk\.4\..*=CUDA0", r"blk\..*=CPU"]}, 4)  # first match wins
    assert experts_on_host({"override_tensor": [r"blk\.4\..*=CUDA0", r"blk\..*=CPU"]}, 5)
