"""The router's choices traced out of llama.cpp's graph (`trace_experts`), on tiny synthetic MoEs:
against an independent numpy recomputation, replayed exactly, never timed, refused where it
cannot run."""

from __future__ import annotations

import ctypes

import gguf
import llama_cpp as ll
import numpy as np
import pytest

from specsweep.engine import expert_trace, runtime
from specsweep.records import expert_union
from specsweep.records.store import read_jsonl
from tests.conftest import PROMPT
from tests.conftest import run_cli as run

pytestmark = pytest.mark.usefixtures("module_synth_cache")


def _capture(tracer: expert_trace.ExpertTracer, wanted: bytes, store: dict):
    """An eval callback that keeps the F32 tensor `wanted` ([n_embd, n_tokens]) and passes every
    other node to the tracer."""
    get_2d = expert_trace._ggml_base()

    def on_node(t, ask, user_data):
        name = ctypes.string_at(t + expert_trace._NAME_AT, 64).split(b"\0")[0]
        if name != wanted:
            return tracer._on_node(t, ask, user_data)
        if ask:
            return True
        tensor = expert_trace._GgmlTensor.from_address(t)
        n0, n1 = int(tensor.ne[0]), int(tensor.ne[1])
        out = np.empty((n1, n0), dtype=np.float32)
        get_2d(t, out.ctypes.data, 0, n0 * 4, n1, int(tensor.nb[1]), n0 * 4)
        store["x"] = out
        return True

    return ll.ggml_backend_sched_eval_callback(on_node)


@pytest.mark.parametrize("card", ["qwen3.6-35b-a3b", "qwen3-30b-a3b"])
def test_traced_experts_equal_the_router_recomputed_in_numpy(tiny_model, card):
    """Layer 0's traced top-k, for every token of a batch, is the top-k of the router's weights
    (read from the GGUF with gguf-py) applied to the hidden input the layer received."""
    path = tiny_model(card, branch_scale=0.05)
    tracer, store = expert_trace.ExpertTracer(), {}
    callback = _capture(tracer, b"attn_post_norm-0" if card.startswith("qwen3.6") else b"ffn_norm-0", store)
    with runtime.Model(path, ()) as model, \
            runtime.Context(model, runtime.ContextOptions(n_ctx=256, n_batch=64), eval_callback=callback) as ctx:
        tokens = model.tokenize(PROMPT)
        ctx.decode(tokens, 0, all_logits=True)
        ctx.sync()
        traced = tracer.take()
    router = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.0.ffn_gate_inp.weight")
    logits = store["x"] @ np.asarray(router.data, dtype=np.float32).T  # (tokens, E)
    k = traced[0].shape[1]
    expected = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    assert traced[0].shape == (len(tokens), k)
    assert [sorted(r) for r in traced[0]] == [sorted(r) for r in expected]
    assert len(traced) == model.n_layer  # every layer of these cards is MoE
    # a different batch routes differently: the comparison is not vacuous
    assert len({tuple(sorted(r)) for r in traced[0]}) > 1


MATRIX = """
name = "traced"
design = "sequential"
[models]
target    = { synth = "qwen3.6-35b-a3b", scale = "tiny", branch_scale = 0.05, mtp = true }
perturbed = { synth = "qwen3.6-35b-a3b", scale = "tiny", branch_scale = 0.05, perturb = 0.3 }
dense     = { synth = "qwen3.5-0.8b", scale = "tiny", branch_scale = 0.05 }
[defaults]
target = "target"
gpus = []
threads = 2
n_ctx = 512
n_predict = 40
trials = 1
warmup = 0
prompt_kinds = ["chat"]
trace_experts = true
"""

CELLS = """
[[cell]]
method = "baseline"
[[cell]]
name = "draft perturbed ckpt"
method = "draft"
draft = "perturbed"
draft_max = 4
rollback = "checkpoint"
[[cell]]
name = "mtp synth"
method = "mtp"
draft_max = 6
synth_len = 2.5
"""


def test_a_traced_replay_sees_what_the_timed_trial_saw(tmp_path):
    (tmp_path / "m.toml").write_text(MATRIX + CELLS)
    out = run(tmp_path / "m.toml", "--results", tmp_path / "r")
    assert out.exit_code == 0, out.output
    trials = read_jsonl(tmp_path / "r" / "traced" / "trials.jsonl")
    assert {r["cell"] for r in trials} == {"baseline", "draft perturbed ckpt", "mtp synth"}
    for r in trials:
        t = expert_union.read(r)
        assert t is not None, r["cell"]
        # every output the loop read (at least one per pass; synthetic acceptance reads no more),
        # read again from the replay, is the same token
        assert t.outputs_checked >= len(t.kinds) and t.mismatches == 0, r["cell"]
        assert len(t.kinds) == r["n_steps"]  # one traced pass per target decode of the loop
        assert t.verify_ms is not None and t.verify_ms.sum() == pytest.approx(r["time_s"]["verify"] * 1e3, rel=1e-3)
        assert t.unions.min() >= t.n_used and t.unions.max() <= t.n_expert
        assert (t.n_tokens[np.array([k == "p" for k in t.kinds])] == 1).all()
    kinds = {r["cell"]: expert_union.read(r).kinds for r in trials}
    assert set(kinds["baseline"]) == {"p"}
    assert "r" in kinds["draft perturbed ckpt"]  # partial acceptance: restores and re-decodes
    assert "v" in kinds["mtp synth"]


def test_no_timed_figure_comes_from_a_traced_context(tmp_path, monkeypatch):
    """Contexts made with the eval callback decode only in the replay, after the trial's timed loop;
    the timed loops run on contexts without one."""
    from specsweep.backends import inprocess

    traced, calls, state = set(), [], {"timing": False}
    make, decode, measure = runtime.Context.__init__, runtime.Context._decode, inprocess.InProcessCell.measure

    def spy_init(self, model, opts=runtime.ContextOptions(), other=None, eval_callback=None):
        make(self, model, opts, other, eval_callback)
        if eval_callback is not None:
            traced.add(id(self))

    def spy_decode(self, *args, **kwargs):
        calls.append((id(self) in traced, state["timing"]))
        return decode(self, *args, **kwargs)

    def spy_measure(self, streams, seed=None):
        state["timing"] = True
        try:
            return measure(self, streams, seed)
        finally:
            state["timing"] = False

    monkeypatch.setattr(runtime.Context, "__init__", spy_init)
    monkeypatch.setattr(runtime.Context, "_decode", spy_decode)
    monkeypatch.setattr(inprocess.InProcessCell, "measure", spy_measure)
    (tmp_path / "m.toml").write_text(MATRIX + CELLS)
    assert run(tmp_path / "m.toml", "--results", tmp_path / "r").exit_code == 0
    assert traced and any(t for t, _ in calls)  # the traced contexts did decode
    assert not any(t and timing for t, timing in calls)  # never while a trial was timed


@pytest.mark.parametrize("extra, message", [
    ('target = "dense"\n', "trace_experts needs a MoE target"),
    ("parallel = 2\n", "trace_experts replays one in-process stream"),
    ('backend = "server"\n', "trace_experts replays one in-process stream"),
])
def test_what_cannot_be_traced_is_one_line(tmp_path, extra, message):
    (tmp_path / "m.toml").write_text(MATRIX + "[[cell]]\nmethod = \"baseline\"\n" + extra)
    out = run(tmp_path / "m.toml", "--results", tmp_path / "r")
    assert out.exit_code == 2
    assert message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()[-1]) > 0


def test_an_untraced_cell_records_no_union(tmp_path):
    (tmp_path / "m.toml").write_text(MATRIX.replace("trace_experts = true", "") + "[[cell]]\nmethod = \"baseline\"\n")
    assert run(tmp_path / "m.toml", "--results", tmp_path / "r").exit_code == 0
    (r,) = read_jsonl(tmp_path / "r" / "traced" / "trials.jsonl")
    assert "experts" not in r and expert_union.read(r) is None
