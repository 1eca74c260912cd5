"""The traced expert union in the records and the analysis: the record block read back, the
coverage test on measured unions instead of the formula, U(K) and the per-pass test."""

from __future__ import annotations

import numpy as np
import pytest

from specsweep.analysis import analyze as an
from specsweep.analysis import coverage, union
from specsweep.probe import theory
from specsweep.records import expert_union
from specsweep.records.sources import Source
from tests.test_analysis import LENGTHS, fam_of, line_trials

E, K_USED, LAYERS = 256, 8, [0, 1, 2, 3]


def experts_block(n_tokens: list[int], cover, kinds: str | None = None, ms=None, expert_bytes=(1000, 1000, 1000, 2000)):
    """A trial's `experts` block whose pass i reads cover(n_tokens[i], layer) of E experts per layer."""
    kinds = kinds or "v" * len(n_tokens)
    unions = np.array([[max(K_USED, min(E, round(cover(k, il) * E))) for il in LAYERS] for k in n_tokens])
    return expert_union.block([{"v": "verify", "p": "plain", "r": "redecode"}[c] for c in kinds], n_tokens,
                              n_tokens, unions, LAYERS, E, K_USED, list(expert_bytes),
                              [] if ms is None else [m / 1e3 for m in ms], len(n_tokens), 0, 0.5)


def iid(k, _layer=0):
    return theory.expected_union(E, K_USED, k) / E


def test_a_block_reads_back_as_written():
    b = experts_block([1, 5, 9], lambda k, il: 0.1 * k if il < 3 else 0.05 * k, kinds="pvr", ms=[4.0, 6.0, 8.5])
    t = expert_union.read({"experts": b})
    assert t.kinds == "pvr" and list(t.n_tokens) == [1, 5, 9] and list(t.verify_ms) == [4.0, 6.0, 8.5]
    assert t.unions[1].tolist() == [128, 128, 128, 64]  # round(0.5 * 256), round(0.25 * 256)
    assert t.coverage[1] == pytest.approx((128 * 3 + 64) / 4 / E)
    # bytes: each layer's experts' bytes times the share it read
    assert t.bytes_read[1] == pytest.approx(3 * 1000 * 0.5 + 2000 * 0.25)
    assert list(t.select("v")) == [1] and list(t.select("vp")) == [0, 1]
    assert expert_union.read({"n_generated": 3}) is None


def traced_line(lengths, cost, cover, reps=3, seed=4):
    """line_trials (acceptance 0: every step verifies L + 1 tokens) with each trial traced: every
    verify of L + 1 tokens reads cover(L + 1) of the experts."""
    out = line_trials(lengths, cost, reps=reps, seed=seed)
    for r in out:
        k = r["settings"]["draft_max"] + 1
        r["experts"] = experts_block([k] * 20, cover)
    return out


def skewed(k, _layer=0):
    """A union that grows as the i.i.d. one does at a third of the tokens: 95% only at K = 3 x 95."""
    return theory.expected_union(E, K_USED, k / 3.0) / E


def test_the_coverage_test_follows_the_measured_union_not_the_formula():
    lengths = [4, 8, 16, 32, 48, 64, 96, 128]
    f = fam_of(traced_line(lengths, lambda x: 27.0 + 4.0 * x, iid))
    k = coverage.knee_test(f, coverage.routing_for(f.trials, []), n_boot=99, traced=True)
    assert k.coverage_source == "traced" and k.verdict.startswith("measured union: ")
    assert 64 < k.breakpoint_x < 96  # measured = i.i.d. here: 95% between K = 65 and 97
    assert k.n_verifies == 20 * len(lengths) * 3 and k.n_verifies_past == 20 * 2 * 3  # n = 96 and 128
    # routing that reuses experts: no verify up to 129 tokens reaches 95%, whatever the formula says
    f = fam_of(traced_line(lengths, lambda x: 27.0 + 4.0 * x, skewed))
    k = coverage.knee_test(f, coverage.routing_for(f.trials, []), n_boot=99, traced=True)
    assert k.status == "no crossing" and "0 of 480 traced verifies reached 95%" in k.verdict
    formula = coverage.knee_test(f, coverage.routing_for(f.trials, []), n_boot=99)
    assert formula.status == "tested"  # the formula would have tested it at a saturation that never came


def test_analyze_uses_the_trace_and_keeps_the_formula_beside_it():
    trials = traced_line(LENGTHS, lambda x: 27.0 + 4.0 * x, iid)
    (a,) = an.analyze([Source("s", "records", trials)], n_boot=99)
    (f,) = a.fits
    assert f.knee.coverage_source == "traced" and f.knee_formula.coverage_source == "i.i.d. formula"
    rows = {r.k: r for r in f.union}
    assert set(rows) == {n + 1 for n in LENGTHS}
    r = rows[LENGTHS[-1] + 1]
    assert r.n_passes == 60 and r.coverage == pytest.approx(iid(r.k), abs=0.01) and r.iid == pytest.approx(iid(r.k))
    # untraced records keep the formula alone
    (a,) = an.analyze([Source("s", "records", line_trials(LENGTHS, lambda x: 27.0 + 4.0 * x))], n_boot=99)
    assert a.fits[0].knee.coverage_source == "i.i.d. formula" and a.fits[0].knee_formula is None


def pass_trials(cost, cover, ks=range(2, 130, 3), reps=4, noise=0.05, seed=7):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(reps):
        ks = list(ks)
        ms = [cost(k) + rng.normal(0, noise) for k in ks]
        r = line_trials([16], lambda x: 20.0, reps=1, seed=seed + i)[0]
        r["experts"] = experts_block(ks, cover, ms=ms)
        out.append(r)
    return out


def test_the_pass_test_finds_a_bend_where_the_measured_union_saturates():
    # where a whole number of experts first reaches 95% (the formula's K* = 95 reads 243.3 of 256)
    k95 = next(k for k in range(1, 200) if round(iid(k) * E) >= 0.95 * E)
    bent = pass_trials(lambda k: 4.0 + 0.6 * k - 0.4 * max(k - k95 + 0.5, 0), iid, ks=range(2, 130))
    t = union.pass_test(bent)
    assert t.k_saturation == k95 == 96 and t.k_saturation_iid == 95 and t.hinge.p < 1e-6
    assert t.hinge.slope_before == pytest.approx(0.6, abs=0.02) and t.hinge.slope_after == pytest.approx(0.2, abs=0.03)
    assert "flatter" in t.verdict
    straight = union.pass_test(pass_trials(lambda k: 4.0 + 0.6 * k, iid))
    assert straight.hinge.p > 0.01 and straight.hinge.change_ci[0] < 0 < straight.hinge.change_ci[1]
    assert straight.ms_per_gb is not None and straight.r2_bytes > 0.5  # time follows the bytes read, below saturation


def test_a_union_that_never_saturates_gets_no_pass_test():
    t = union.pass_test(pass_trials(lambda k: 4.0 + 0.6 * k, skewed))
    assert t.k_saturation is None and t.hinge is None and "nothing saturates" in t.verdict


def _probe(slope_after: float, saturate_at: int | None, batch_tokens: str = "distinct") -> dict:
    """A traced probe record: T(K) = 4 + 0.5 K ms up to K = 96, then `slope_after` per token; the
    traced coverage reaches 95% at `saturate_at` (never when None)."""
    rng = np.random.default_rng(1)
    rows = []
    for k in (1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192):
        t = 4 + 0.5 * min(k, 96) + slope_after * max(k - 96, 0)
        cov = 0.99 if saturate_at is not None and k >= saturate_at else 0.5 * min(k, 96) / 96
        rows.append({"k": k, "times_ms": list(t + rng.normal(0, 0.05, 5)),
                     "traced": {"coverage": cov, "bytes": 1e6 * (100 + 20 * min(k, 96) + 2 * max(k - 96, 0))}})
    return {"model": {"file": "m.gguf"}, "settings": {"batch_tokens": batch_tokens},
            "machine": {"gpu_name": "NVIDIA H100 80GB HBM3"}, "curve": rows}


def test_the_probe_knee_finds_a_bend_at_the_traced_saturation_and_none_where_there_is_none():
    bent = union.probe_knee(_probe(0.1, 97))
    assert bent.k_saturation == 112 and bent.hinge.change == pytest.approx(-0.4, abs=0.05)  # first K >= 97
    assert bent.hinge.change_ci[1] < 0 and "flatter" in bent.verdict and "H100" in bent.device
    straight = union.probe_knee(_probe(0.5, 97))
    assert straight.hinge.change_ci[0] < 0 < straight.hinge.change_ci[1]
    assert bent.bytes_per_token[1] < bent.bytes_per_token[0]
    never = union.probe_knee(_probe(0.5, None, "text"))
    assert never.hinge is None and "nothing saturates up to K = 192" in never.verdict
    assert union.probe_knee({"model": {"file": "x"}, "curve": [{"k": 1, "times_ms": [1.0]}]}) is None


def test_analyze_reads_a_folder_of_traced_probes_alone(tmp_path):
    import json

    from click.testing import CliRunner

    from specsweep.cli import main
    (tmp_path / "probe").mkdir()
    rec = _probe(0.1, 97) | {"kind": "probe"}
    rec["model"] |= {"arch": "qwen35moe", "moe": True}
    (tmp_path / "probe" / "probe.jsonl").write_text(json.dumps(rec) + "\n")
    out = CliRunner().invoke(main, ["analyze", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "Traced probes" in out.output and "reaches 95% at K = 112" in out.output
    empty = tmp_path / "empty"
    empty.mkdir()
    out = CliRunner().invoke(main, ["analyze", str(empty)])
    assert out.exit_code == 2 and "error: no trial" in out.output and "Traceback" not in out.output
