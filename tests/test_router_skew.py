"""`synth --router-skew`: the router's values change and nothing else, and the traced routing
becomes uneven as the knob says."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.engine import runtime
from specsweep.probe.measure import expert_load, trace_curve
from specsweep.synth.cards import CARDS
from specsweep.synth.writer import Recipe, write_model


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    d = tmp_path_factory.mktemp("skew")
    card = CARDS["qwen3.6-35b-a3b"].at_scale("tiny")
    out = {}
    for sigma in (0.0, 1.0):
        out[sigma] = d / f"rs{sigma}.gguf"
        write_model(Recipe(card, "tiny", "Q4_0", 0, branch_scale=0.05, router_skew=sigma), out[sigma])
    return out


def test_only_the_routers_values_change(skewed):
    a, b = tensors(skewed[0.0]), tensors(skewed[1.0])
    # the same tensors in the same types and bytes; the header gains the recipe's key (one padded KV)
    assert [(n, t.tensor_type, int(t.n_bytes)) for n, t in a.items()] == \
        [(n, t.tensor_type, int(t.n_bytes)) for n, t in b.items()]
    assert 0 < skewed[1.0].stat().st_size - skewed[0.0].stat().st_size <= 64
    differ = {n for n in a if not np.array_equal(np.asarray(a[n].data), np.asarray(b[n].data))}
    assert differ == {n for n in a if n.endswith(".ffn_gate_inp.weight")} and differ
    for name in differ:
        ra, rb = np.asarray(a[name].data), np.asarray(b[name].data)  # rows: experts
        scale = np.linalg.norm(rb, axis=1) / np.linalg.norm(ra, axis=1)
        assert np.allclose(rb, ra * scale[:, None], rtol=1e-5)  # each expert's row scaled, not turned
        assert np.sqrt(np.mean(scale ** 2)) == pytest.approx(1.0, rel=1e-5) and scale.max() / scale.min() > 2


def test_the_traced_load_is_uneven_with_skew_and_even_without(skewed):
    runtime.init(False)
    load = {}
    for sigma, path in skewed.items():
        with runtime.Model(path, ()) as model:
            traced = trace_curve(model, [1, 4, 16, 64], n_threads=2)
        load[sigma] = traced.load
        assert set(traced.unions) == {1, 4, 16, 64}
    # a fixed text: the same tokens, routed to fewer experts as the spread grows
    assert load[1.0]["busiest_expert"] > 1.25 * load[0.0]["busiest_expert"]  # 16 experts top-4: a mild effect
    assert load[1.0]["experts_for_90pct"] < load[0.0]["experts_for_90pct"]


def test_expert_load_counts_as_documented():
    experts = {0: np.array([[0, 1], [0, 2], [0, 1], [0, 3]])}  # 8 routings: expert 0 four, 1 two
    load = expert_load(experts, 8)
    assert load["busiest_expert"] == 0.5 and load["routings_per_layer"] == 8
    assert load["experts_for_90pct"] == 4 / 8  # 4 + 2 + 1 = 7 of 8 < 90%: the fourth expert too


def test_the_knob_in_a_matrix_and_on_the_command_line(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["synth", "qwen3.5-0.8b", "--scale", "tiny", "--router-skew", "0.5",
                               "-o", str(tmp_path / "d.gguf")])
    assert out.exit_code == 2 and "--router-skew shapes a MoE router; qwen3.5-0.8b is dense" in out.output
    base = tmp_path / "t.gguf"
    assert runner.invoke(main, ["synth", "qwen3.6-35b-a3b", "--scale", "tiny", "--router-skew", "0.3",
                                "-o", str(base)]).exit_code == 0
    like = runner.invoke(main, ["synth", "--like", str(base), "--identical", "-o", str(tmp_path / "l.gguf")])
    assert like.exit_code == 0 and (tmp_path / "l.gguf").read_bytes() == base.read_bytes()  # copied, float32 or not
    m = tmp_path / "m.toml"
    m.write_text('name = "m"\n[models]\nt = { synth = "qwen3.6-35b-a3b", scale = "tiny", router_skew = 0.5 }\n'
                 'd = { synth = "qwen3.5-0.8b", scale = "tiny", router_skew = 0.5 }\n'
                 '[defaults]\ntarget = "t"\ngpus = []\n[[cell]]\nmethod = "baseline"\n')
    out = runner.invoke(main, ["run", str(m), "--dry-run"])
    assert out.exit_code == 2 and "router_skew shapes a MoE router; qwen3.5-0.8b is dense" in out.output
    m.write_text(m.read_text().replace('d = { synth = "qwen3.5-0.8b", scale = "tiny", router_skew = 0.5 }\n', ""))
    out = runner.invoke(main, ["run", str(m), "--dry-run"])
    assert out.exit_code == 0 and "router_skew=0.5" in out.output and "-rs0.5.gguf" in out.output


def test_distinct_batches_hold_no_repeat_and_read_more_experts(skewed):
    """`probe --batch-tokens distinct`: the batch of K tokens has K different ordinary tokens, the
    text's own first; at random routing it reads more experts than the text, which repeats."""
    from specsweep.probe.measure import FILLER, probe_stream
    runtime.init(False)
    with runtime.Model(skewed[0.0], ()) as model:
        stream = probe_stream(model, 8, 200, "distinct")
        batch = stream[8:]
        assert len(batch) == 200 == len(set(batch))
        assert not set(batch) & set(model.control_tokens + model.eog_tokens)
        text = list(dict.fromkeys(model.tokenize(FILLER, parse_special=False)))
        assert batch[:len(text)] == text and stream[:8] == probe_stream(model, 8, 200, "text")[:8]
        assert probe_stream(model, 8, 200, "distinct") == stream  # seeded
        assert trace_curve(model, [128], n_threads=2).distinct_tokens[128] < 100
        assert trace_curve(model, [128], n_threads=2, batch_tokens="distinct").distinct_tokens[128] == 128
