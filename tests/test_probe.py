"""`specsweep probe`: the expert-union and bytes arithmetic, the break-even solver, and the CLI end
to end on tiny models on the CPU (an attention-only MoE, a hybrid MoE through checkpoint restore,
a dense model with a measured draft), with its one-line errors."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.probe import theory
from specsweep.probe.measure import known_bandwidth_gbs
from specsweep.records.store import read_jsonl
from specsweep.synth.cards import CARDS
from specsweep.synth.fill import nbytes, storage_type
from specsweep.synth.tensors import tensor_specs

# --- the expert union ---


def test_expected_union_known_numbers():
    assert theory.expected_union(256, 8, 1) == pytest.approx(8.0)
    assert theory.expected_union(256, 8, 2) == pytest.approx(8 + 8 * (1 - 8 / 256))  # 15.75
    assert theory.expected_union(256, 8, 0) == 0.0
    assert theory.expected_union(16, 16, 3) == 16.0
    assert theory.expected_union(256, 8, 10_000) == pytest.approx(256.0)


def test_saturation_definitions_reproduce_about_94():
    # (1 - 8/256)^K <= 0.05  <=>  K >= ln 0.05 / ln(31/32) = 94.36: "about 94"; the first whole batch is 95
    assert theory.saturation_continuous(256, 8) == pytest.approx(math.log(0.05) / math.log(1 - 1 / 32))
    assert theory.saturation_continuous(256, 8) == pytest.approx(94.36, abs=0.01)
    assert theory.saturation_tokens(256, 8) == 95
    assert theory.expected_union(256, 8, 94) < 0.95 * 256 <= theory.expected_union(256, 8, 95)
    assert theory.saturation_approx(256, 8) == pytest.approx(32 * math.log(20))  # 95.9
    assert theory.saturation_tokens(128, 8) == 47  # Qwen3-30B-A3B
    assert theory.saturation_tokens(16, 16) == 1
    with pytest.raises(ValueError):
        theory.saturation_tokens(0, 0)


# --- bytes per pass ---

def _toy(tied: bool = False):
    """2 layers: routed experts 1600 B (E=16), shared 100 B, attention 200 B, norm 10 B; vocab 64
    with 10-byte embedding rows; output head 1000 B and output norm 4 B."""
    tensors = [("token_embd.weight", (8, 64), 640), ("output_norm.weight", (8,), 4)]
    if not tied:
        tensors.append(("output.weight", (8, 64), 1000))
    for il in range(2):
        tensors += [(f"blk.{il}.attn_norm.weight", (8,), 10),
                    (f"blk.{il}.attn_q.weight", (8, 8), 100),
                    (f"blk.{il}.attn_k.weight", (8, 4), 50),
                    (f"blk.{il}.attn_v.weight", (8, 4), 50),
                    (f"blk.{il}.ffn_gate_exps.weight", (8, 4, 16), 800),
                    (f"blk.{il}.ffn_down_exps.weight", (4, 8, 16), 800),
                    (f"blk.{il}.ffn_up_shexp.weight", (8, 4), 100)]
    return theory.model_bytes_from_tensors(tensors, "toy", n_expert=16, n_expert_used=4)


def test_bytes_per_pass_known_numbers():
    mb = _toy()
    assert mb.is_moe and not mb.tied and mb.embd_row == 10 and mb.head == 1004
    assert mb.kv_elements == 2 * (4 + 4)
    # per layer: 310 read whole + 1600 * U(K)/16; plus head 1004 and K rows of 10
    assert theory.pass_bytes(mb, 1) == pytest.approx(2 * (310 + 1600 * 4 / 16) + 1004 + 10)  # 2434
    u2 = theory.expected_union(16, 4, 2)
    assert theory.pass_bytes(mb, 2) == pytest.approx(2 * (310 + 100 * u2) + 1004 + 20)
    assert theory.pass_bytes(mb, 1, union=False) == pytest.approx(2 * (310 + 1600) + 1004 + 10)
    assert theory.kv_bytes(mb, 100, "f16") == 16 * 100 * 2
    assert theory.pass_bytes(mb, 1, 100, "q8_0") - theory.pass_bytes(mb, 1) == pytest.approx(16 * 100 * 34 / 32)
    classes = mb.classes()
    assert classes["experts"] == 3200 and classes["shared"] == 200 and classes["attention"] == 400
    assert sum(classes.values()) == 640 + 4 + 1000 + 2 * 1910


def test_tied_head_reads_the_table_once():
    mb = _toy(tied=True)
    assert mb.tied and mb.embd_row == 0 and mb.head == 644
    assert theory.pass_bytes(mb, 3) - theory.pass_bytes(mb, 1) == pytest.approx(2 * 100 * (
        theory.expected_union(16, 4, 3) - 4))


def test_bytes_ratio_monotone_and_bounded():
    mb = _toy()
    ratios = [theory.bytes_ratio(mb, k) for k in range(1, 200)]
    assert ratios[0] == 1.0
    assert all(b > a for a, b in zip(ratios, ratios[1:]))
    for k, r in zip(range(1, 200), ratios):
        upper = theory.pass_bytes(mb, k, union=False) / theory.pass_bytes(mb, 1)
        assert r <= upper + 1e-12


def test_dense_model_reads_the_same_bytes_whatever_k():
    tensors = [("token_embd.weight", (8, 64), 640), ("output.weight", (8, 64), 640),
               ("blk.0.ffn_up.weight", (8, 32), 256), ("blk.0.attn_q.weight", (8, 8), 64)]
    mb = theory.model_bytes_from_tensors(tensors, "dense")
    assert not mb.is_moe
    assert theory.pass_bytes(mb, 64) - theory.pass_bytes(mb, 1) == 63 * 10  # only the embedding rows


def test_full_shape_a3b_prediction():
    card = CARDS["qwen3.6-35b-a3b"]
    tensors = [(s.name, s.shape, nbytes(s, storage_type(s, "Q4_0"))) for s in tensor_specs(card)]
    mb = theory.model_bytes_from_tensors(tensors, card.arch, card.n_expert, card.n_expert_used)
    assert mb.n_expert == 256 and mb.n_expert_used == 8
    # the delta net's attn_qkv/attn_gate count as ssm in its layers: attention is 10 of 40 layers
    assert sum(1 for layer in mb.layers if layer.attention) == 10
    assert sum(1 for layer in mb.layers if layer.kv_elements) == 10
    b1 = theory.pass_bytes(mb, 1)
    assert 1.5e9 < b1 < 2.0e9  # ~1.7 GB of 19.6 GB read per token: "A3B"
    assert theory.bytes_ratio(mb, 2) == pytest.approx(1.31, abs=0.01)
    assert 10 < theory.bytes_ratio(mb, 128) < theory.pass_bytes(mb, 1, union=False) / b1


def test_read_model_bytes_on_a_tiny_gguf(tiny_model):
    path = tiny_model("qwen3.6-35b-a3b")
    mb = theory.read_model_bytes(path)
    assert mb.arch == "qwen35moe" and mb.n_expert == 16 and mb.n_expert_used == 4
    assert mb.header["block_count"] == 4
    import gguf

    total = sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors)
    assert sum(mb.classes().values()) == total
    assert mb.file_bytes == path.stat().st_size


# --- break-even ---

def test_expected_tokens():
    assert theory.expected_tokens(4, 1.0) == 5
    assert theory.expected_tokens(4, 0.0) == 1
    assert theory.expected_tokens(2, 0.5) == pytest.approx(1.75)
    values = [theory.expected_tokens(8, a / 100) for a in range(101)]
    assert all(b > a for a, b in zip(values, values[1:]))


def test_break_even_known_values():
    # n=1, T(2) = 1.5 t1: 1 + a = 1.5
    assert theory.break_even_acceptance(1, 1.5, 1.0) == pytest.approx(0.5, abs=1e-8)
    # n=2, T(3) = 2 t1: 1 + a + a^2 = 2, a = golden ratio - 1
    assert theory.break_even_acceptance(2, 2.0, 1.0) == pytest.approx((math.sqrt(5) - 1) / 2, abs=1e-8)
    # the draft cost adds to the verify: n=1, T(2) = 1.2, D = 0.3 is the first case again
    assert theory.break_even_acceptance(1, 1.2, 1.0, 0.3) == pytest.approx(0.5, abs=1e-8)


def test_break_even_edges():
    for n in (1, 3, 7, 15):
        t_verify, t1, d = 0.8 * (n + 1), 1.0, 0.1 * n
        if t_verify + d < (n + 1) * t1:  # full acceptance wins, so some a < 1 breaks even
            a = theory.break_even_acceptance(n, t_verify, t1, d)
            assert a is not None and 0 < a < 1
            assert theory.speedup(n, a, t_verify, t1, d) == pytest.approx(1.0, abs=1e-6)
            assert theory.speedup(n, min(a + 0.01, 1.0), t_verify, t1, d) > 1.0
            assert theory.speedup(n, 1.0, t_verify, t1, d) > 1.0
    assert theory.break_even_acceptance(3, 4.0, 1.0) is None  # (n+1) t1 = T(4): never wins
    assert theory.break_even_acceptance(3, 3.5, 1.0, 0.5) is None
    assert theory.break_even_acceptance(3, 0.9, 1.0) == 0.0  # cheaper than one step: always wins
    # a dearer draft needs a higher acceptance
    assert theory.break_even_acceptance(4, 2.0, 1.0, 0.5) > theory.break_even_acceptance(4, 2.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        theory.break_even_acceptance(1, 1.0, 0.0)


# --- measurement helpers ---

def test_known_gpus():
    assert known_bandwidth_gbs("NVIDIA H100 80GB HBM3") == 3350
    assert known_bandwidth_gbs("NVIDIA H100 PCIe") == 2000
    assert known_bandwidth_gbs("NVIDIA H200") == 4800
    assert known_bandwidth_gbs("NVIDIA GeForce RTX 3090") == 936
    assert known_bandwidth_gbs("NVIDIA A100-SXM4-80GB") == 2039
    assert known_bandwidth_gbs("NVIDIA GeForce RTX 4060") is None and known_bandwidth_gbs(None) is None


# --- the CLI ---

def _probe(*args):
    return CliRunner().invoke(main, ["probe", *map(str, args)])


def _cpu(results, *extra):
    return ["--gpus", "", "--k", "1,2,4,8", "--reps", "2", "--threads", "1", "--results", results, *extra]


@pytest.mark.parametrize("card,rollback,outputs", [("qwen3-30b-a3b", "seq_rm", "logits"),
                                                    ("qwen3.6-35b-a3b", "checkpoint", "sampled")])
def test_probe_cli_records_a_curve(tiny_model, tmp_path, card, rollback, outputs):
    results = tmp_path / "results"
    out = _probe(tiny_model(card), *_cpu(results, "--outputs", outputs, "--draft-ms", "0.01", "--bandwidth-gbs", "50"))
    assert out.exit_code == 0, out.output
    assert "B(K)/B(1)" in out.output and "expert union: 16 experts, top-4" in out.output
    assert "first whole batch K = 11" in out.output and "baseline decoding reaches" in out.output
    records = read_jsonl(results / "probe" / "probe.jsonl")
    assert len(records) == 1
    r = records[0]
    assert r["kind"] == "probe" and r["model"]["file"] == tiny_model(card).name
    assert r["model"]["size_bytes"] == tiny_model(card).stat().st_size and r["model"]["moe"]
    assert r["settings"]["rollback"] == rollback and r["settings"]["outputs"] == outputs
    assert r["settings"]["ks"] == [1, 2, 4, 8] and r["output_mismatches"] == 0
    assert [row["k"] for row in r["curve"]] == [1, 2, 4, 8]
    for row in r["curve"]:
        assert len(row["times_ms"]) == 2 and all(t > 0 for t in row["times_ms"])
        assert row["median_ms"] > 0 and row["min_ms"] <= row["median_ms"]
        assert row["pred_ratio"] >= 1.0
    assert r["curve"][0]["ratio"] == 1.0 and "break_even" not in r["curve"][0]
    assert r["curve"][3]["draft_ms"] == pytest.approx(0.07)
    assert r["union"]["k_saturation"] == 11 and r["bandwidth"]["peak_gbs"] == 50
    assert 0 < r["bandwidth"]["share"] and r["bandwidth"]["achieved_gbs"] > 0
    assert r["machine"]["cpu_count"] >= 1


def test_probe_cli_dense_with_measured_draft(tiny_model, tmp_path):
    results = tmp_path / "results"
    path = tiny_model("qwen3-0.6b")
    out = _probe(path, *_cpu(results, "--draft", path, "--depth", "40"))
    assert out.exit_code == 0, out.output
    assert "dense model" in out.output and "B(K)/B(1)" not in out.output
    assert "peak bandwidth unknown" in out.output
    r = read_jsonl(results / "probe" / "probe.jsonl")[0]
    assert r["union"] is None and r["settings"]["pos0"] == 40
    assert r["draft"]["source"] == "measured" and r["draft"]["ms_per_token"] > 0
    assert r["bandwidth"]["kv_bytes"] > 0 and r["bandwidth"]["share"] is None


def test_probe_cli_errors_are_one_line(tiny_model, tmp_path):
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_text("hello")
    model = tiny_model("qwen3-0.6b")
    cases = [
        ([tmp_path / "missing.gguf", "--gpus", ""], "model file not found"),
        ([not_gguf, "--gpus", ""], "is not a GGUF file"),
        ([model, "--gpus", "", "--k", "1,600"], "exceeds --n-batch 512"),
        ([model, "--gpus", "", "--k", "1,two"], "--k takes token counts"),
        ([model, "--gpus", "", "--k", "0,1"], "at least 1"),
        ([model, "--gpus", "", "--draft-ms", "1", "--draft", model], "not both"),
        ([model, "--gpus", "x"], "--gpus takes GPU indices"),
        ([model, "--gpus", "", "--depth", "9000"], "training context"),
    ]
    for args, message in cases:
        out = _probe(*args, "--results", tmp_path / "results")
        assert out.exit_code == 2, (args, out.output)
        assert out.output.strip().count("\n") == 0 and message in out.output, out.output
    assert not (tmp_path / "results").exists()
