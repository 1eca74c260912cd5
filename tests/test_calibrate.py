"""`specsweep probe --calibrate`: its matrix is enough to fit the loop's costs (records generated from
known costs on exactly its grid give them back, and predict configs outside it), it runs through
the ordinary runner on the CPU, and predict then takes the card's calibration first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from specsweep.analysis import loopsim
from specsweep.analysis import predict as pr
from specsweep.analysis.profiles import Profile
from specsweep.cli import main
from specsweep.matrix import load as matrix_load
from specsweep.probe import calibrate
from specsweep.records.sources import load
from tests.test_predict import TRUE, probe_record, t_of, trial, true_ms


def calibration_records(folder: Path) -> str:
    """Records of the calibration matrix's own cells (MTP on a hybrid MoE target), with the counts and
    times the known cost model gives (tests/test_predict.py)."""
    name = calibrate.matrix_name(Path("target.gguf"), "Test GPU", "0" * 16)
    folder.mkdir(parents=True)
    path = folder / "calibration.toml"
    path.write_text(calibrate.matrix_text(name, calibrate.Model(Path("target.gguf")), mtp=True))
    matrix = matrix_load.load(path)
    lines = [{"kind": "manifest", "id": "m1", "gpus": [{"index": 0, "name": "Test GPU"}]}]
    for block in range(matrix.blocks):
        for cell in matrix.cells:
            s = cell.settings
            n = None if cell.method == "baseline" else s["draft_max"]
            r = trial(cell.name, n, s.get("synth_len"), block, n_predict=s["n_predict"])
            lines.append(dict(r, matrix=matrix.name, cell_id=cell.id))
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "probe.jsonl").write_text(json.dumps(probe_record()) + "\n")
    return matrix.name


def test_the_calibration_grid_fits_known_costs(tmp_path):
    name = calibration_records(tmp_path / "cal")
    assert name.startswith("calibrate-target-test-gpu-")
    (data,) = pr.card_data(load([tmp_path / "cal"]))
    assert {len(p.trials) for p in data.pools()} == {4 * 5} and data.pools()[0].calibration
    costs = pr.fit_costs(data, Profile("mtp", 3, (0.7, 0.7, 0.7)), "snapshot", data.pools(), data.curve, data.units())
    d = TRUE["draft"]
    # per pass and per call are one column for a drafter that drafts on every pass: their sum is the fact
    assert costs.draft["pass"] + costs.draft["call"] == pytest.approx(d["pass"] + d["call"], rel=0.02)
    assert costs.draft["token"] == pytest.approx(d["token"], rel=0.02)
    assert costs.verify["token"] == pytest.approx(TRUE["verify_token"], rel=0.02)
    assert costs.rollback["pass"] == pytest.approx(TRUE["rollback_pass"], rel=1e-6)
    assert costs.host["pass"] == pytest.approx(TRUE["host_pass"], rel=0.02)
    assert costs.base_host == pytest.approx(TRUE["host_pass"], rel=1e-6)
    # configs the calibration never ran (lengths 1, 3, 6 and 7, other acceptance) come out as the model says
    # (up to a verify of 8 tokens: beyond, the probe's curve takes the next probed size, another matter)
    for n, rates in ((1, (0.9,)), (3, (0.8, 0.6, 0.4)), (6, (0.7,) * 6), (7, (0.95,) * 7)):
        prof = Profile("mtp", n, rates)
        got = pr.predict_one(data, prof, 128, "snapshot", n_boot=0, with_break_even=False)
        u = loopsim.expected_units(prof, 128, False, "server")
        base = loopsim.expected_units(None, 128, False, "simple")
        truth = (u.tokens / true_ms(u)) / (base.tokens / (base.passes * (t_of(1) + TRUE["host_pass"])))
        assert got.speedup == pytest.approx(truth, rel=0.01), (n, got.speedup, truth)
        assert "its calibration" in got.sources["draft"] and "its calibration" in got.sources["baseline"]


def test_the_matrix_follows_the_files_and_the_probes_placement(tmp_path):
    target = calibrate.Model(Path("t.gguf"), {"synth": "qwen3.6-35b-a3b", "scale": "tiny", "mtp": True})
    text = calibrate.matrix_text("calibrate-x", target, mtp=False, draft=calibrate.Model(tmp_path / "d.gguf"),
                                 drafters=((calibrate.Model(Path("x"), {"synth": "qwen3.6-35b-a3b-eagle3"}), "eagle3"),
                                           (calibrate.Model(Path("y"), {"synth": "qwen3.6-35b-a3b-dflash"}), "dflash")),
                                 gpus=(0,), placement={"n_cpu_moe": 20, "vram_budget": None, "override_tensor": []})
    path = tmp_path / "c.toml"
    path.write_text(text)
    cells = matrix_load.load(path).cells
    assert sorted({c.method for c in cells}) == ["baseline", "dflash", "draft", "eagle3"]
    assert len(cells) == 1 + 3 * 4
    assert all(c.settings["n_cpu_moe"] == 20 for c in cells) and "vram_budget" not in text
    spec = [c for c in cells if c.method != "baseline"]
    assert sorted({(c.settings["draft_max"], c.settings["synth_len"]) for c in spec}) == \
        [(2, 1.6), (2, 2.6), (4, 2.2), (4, 4.2)]
    with pytest.raises(Exception, match="needs a drafter"):
        calibrate.matrix_text("calibrate-x", target, mtp=False)


def test_probe_calibrate_runs_on_the_cpu_and_predict_takes_it_first(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    res = tmp_path / "res"
    args = ["probe", "--synth", "qwen3.6-35b-a3b-mtp-ud-q4_k_xl", "--synth-scale", "tiny", "--gpus", "", "--k", "1,2,3,5",
            "--reps", "2", "--calibrate", "--calibrate-blocks", "1", "--calibrate-tokens", "12", "--results", str(res)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    (folder,) = [p for p in res.iterdir() if p.name.startswith("calibrate-")]
    trials = [json.loads(x) for x in (folder / "trials.jsonl").read_text().splitlines()]
    assert sorted({t["method"] for t in trials}) == ["baseline", "mtp"] and len(trials) == 5
    assert all(t["matrix"] == folder.name for t in trials)
    manifests = [json.loads(x) for x in (folder / "manifests.jsonl").read_text().splitlines()]
    assert folder.name.endswith(manifests[0]["specsweep_source"][:8])
    # the same command again resumes: nothing left to run
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "nothing to run" in again.output
    out = CliRunner().invoke(main, ["predict", str(res), "--accept", "mtp n3=0.8,0.6,0.4", "--boot", "0",
                                    "--n-predict", "12"])
    assert out.exit_code == 0, out.output
    assert "its calibration, this engine" in out.output and "loop costs:" not in out.output


@pytest.mark.parametrize("args,message", [
    (["--drafter", "x.gguf"], "--drafter and --synth-drafter are for --calibrate"),
    (["--calibrate", "--synth-drafter", "qwen3.6-35b-a3b"], "not a drafter's shape card"),
    (["--calibrate", "--calibrate-blocks", "0"], "--calibrate-blocks must be at least 1"),
    (["--calibrate", "--synth", "qwen3.6-27b-ud-q4_k_xl"], "needs a drafter"),
])
def test_bad_calibration_input_is_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    base = ["probe", "--synth-scale", "tiny", "--gpus", "", "--results", str(tmp_path / "r")]
    if "--synth" not in args:
        base += ["--synth", "qwen3.6-35b-a3b-ud-q4_k_xl"]
    out = CliRunner().invoke(main, base + args)
    assert out.exit_code == 2, out.output
    lines = [x for x in out.output.splitlines() if x.strip() and not x.startswith("stand-in of")]
    assert len(lines) == 1 and message in lines[0], out.output


def test_held_out_sets_leave_their_class_out(tmp_path):
    """The validation's held-out sets on records of a known cost model: every set recovers it, and
    poisoning the records a set leaves out (the drafter 10x dearer at draft lengths >= 4) changes no
    prediction of the configs that set holds out from them."""
    from specsweep.analysis import predict_heldout as ho
    from tests.test_predict import write_records

    def results(poison: bool) -> Path:
        root = tmp_path / ("poisoned" if poison else "clean")
        write_records(root / "m")
        (root / "probe").mkdir()
        (root / "m" / "probe.jsonl").rename(root / "probe" / "probe.jsonl")
        lines = [json.loads(x) for x in (root / "m" / "trials.jsonl").read_text().splitlines()]
        for r in lines:
            if poison and r.get("kind") == "trial" and (r["settings"].get("draft_max") or 0) >= 4:
                r["time_s"] = dict(r["time_s"], draft=10 * r["time_s"]["draft"])
        (root / "m" / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        return root

    clean, poisoned = results(False), results(True)
    longer, skipped = ho.validate_set("longer", clean, ("m",))
    assert not skipped and sorted({c.n_max for c in longer}) == [2, 3, 4, 6]  # n=1 has nothing shorter
    # from two shorter lengths or more the model comes back; from one (n=1: a call is a drafted token
    # and a pass) its split into per call and per token is not identified, and n=2 misses
    assert all(abs(c.error) < 1.0 for c in longer if c.n_max > 2), [(c.config, c.error) for c in longer]
    assert max(abs(c.error) for c in longer if c.n_max == 2) > 5
    bad = {c.config: c.predicted for c in ho.validate_set("longer", poisoned, ("m",))[0]}
    assert all(bad[c.config] == pytest.approx(c.predicted, abs=1e-12) for c in longer if c.n_max <= 4)
    assert all(bad[c.config] < c.predicted - 0.01 for c in longer if c.n_max == 6)  # it fits on n=4's
    shorter, _ = ho.validate_set("shorter", clean, ("m",))
    assert sorted({c.n_max for c in shorter}) == [1, 2, 3, 4] and all(abs(c.error) < 1.0 for c in shorter)
    level, _ = ho.validate_set("acceptance", clean, ("m",))
    assert level and all(abs(c.error) < 1.0 for c in level)
    alone, skipped = ho.validate_set("drafter", clean, ("m",))
    assert not alone and len(skipped) == 15 and all("no draft cost for mtp" in s for s in skipped)
