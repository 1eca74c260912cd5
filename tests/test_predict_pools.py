"""Which records predict takes a card's loop costs from: its calibration first, then the probed
file's own records, then another file of the same shape; within each the running engine's first,
then the newest other engine; and one line saying so when it falls back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from specsweep.analysis import pools as pl
from specsweep.analysis import predict as pr
from specsweep.analysis.profiles import Profile
from specsweep.cli import main
from specsweep.records.manifest import source_hash
from specsweep.records.sources import load
from tests.test_predict import ARMS, CARD, probe_record, trial

PROFILE = Profile("mtp", 2, (0.8, 0.75))


def manifest(mid: str, started: str, source: str | None) -> dict:
    m = {"kind": "manifest", "id": mid, "started": started, "specsweep": "0.1.0",
         "gpus": [{"index": 0, "name": CARD}]}
    if source:
        m["specsweep_source"] = source
    return m


def records(folder: Path, m: dict, *, matrix: str = "m", file: str = "target.gguf", draft_x: float = 1.0,
            host_x: float = 1.0, baseline_x: float = 1.0) -> None:
    """The known model's records (tests/test_predict.py), measured by the engine of manifest `m`, of
    `file`, with the drafter's and the host's time (and plain decoding's speed) off by the factors."""
    folder.mkdir(parents=True)
    lines = [m]
    for block in range(3):
        base = trial("baseline", None, None, block)
        base["decode_tps"] *= baseline_x
        lines.append(base)
        for n, lengths in ARMS.items():
            for length in lengths:
                lines.append(trial(f"mtp n={n} L={length}", n, length, block))
    for r in lines[1:]:
        r.update(manifest=m["id"], matrix=matrix, cell_id=f"{matrix}/{file}/{r['cell_id']}")
        r["models"] = {"target": {"file": file, "sha256": "ab" * 32}}
        t = dict(r["time_s"])
        t["draft"] *= draft_x
        t["host"] *= host_x
        r["time_s"] = t
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def setup(tmp_path: Path, *which: str) -> list:
    """A probe of target.gguf and the records named: "stale" (this file, an engine before source
    hashes, the drafter 3x dearer), "other" (another file, this engine, the drafter 5x dearer),
    "current" (this file, this engine, true costs), "calibration" (its calibration, true costs,
    plain decoding 10% slower in its session), "stale-calibration" (a calibration by an older
    engine with a hash, the drafter 2x dearer)."""
    (tmp_path / "probe").mkdir(parents=True)
    (tmp_path / "probe" / "probe.jsonl").write_text(json.dumps(probe_record()) + "\n")
    kinds = {
        "stale": dict(m=manifest("s", "2026-12-01T00:00:00+0000", None), draft_x=3.0),
        "other": dict(m=manifest("o", "2026-12-04T00:00:00+0000", source_hash()), file="other.gguf", draft_x=5.0),
        "current": dict(m=manifest("c", "2026-12-03T00:00:00+0000", source_hash())),
        "calibration": dict(m=manifest("k", "2026-12-02T00:00:00+0000", source_hash()), matrix="calibrate-target",
                            baseline_x=0.9),
        "stale-calibration": dict(m=manifest("q", "2026-12-05T00:00:00+0000", "0123456789abcdef"),
                                  matrix="calibrate-target", draft_x=2.0),
    }
    for k in which:
        records(tmp_path / k, **kinds[k])
    (data,) = pr.card_data(load([tmp_path / "probe", *[tmp_path / k for k in which]]))
    return data


def draft_ms(data) -> float:
    return pr.predict_one(data, PROFILE, 128, "snapshot", n_boot=0, with_break_even=False).ms_per_token["draft"]


def test_pools_are_ordered_calibration_own_file_engine(tmp_path):
    data = setup(tmp_path, "stale", "other", "current", "calibration", "stale-calibration")
    labels = [p.label for p in data.pools()]
    assert labels == ["its calibration, this engine",
                      "its calibration, engine 0123456789abcdef",
                      "its records, this engine",
                      "its records, an engine before source hashes (specsweep 0.1.0)",
                      "records of another file of its shape (other.gguf), this engine"]
    assert pl.fallback_note(data.pools(), "target.gguf") == ""  # the first choice is there


def test_predict_prefers_the_calibration_over_stale_and_other_records(tmp_path):
    truth = draft_ms(setup(tmp_path / "a", "current"))
    data = setup(tmp_path / "b", "stale", "other", "calibration", "stale-calibration")
    got = pr.predict_one(data, PROFILE, 128, "snapshot", n_boot=0, with_break_even=False)
    assert got.ms_per_token["draft"] == pytest.approx(truth, rel=1e-6)
    assert "its calibration, this engine" in got.sources["draft"] and "its calibration" in got.sources["verify"]
    # plain decoding: the calibration's host term, and the loop's own speed in it
    base = [t for t in data.trials if t["method"] == "baseline" and t["manifest"] == "k"]
    assert got.baseline_tps == pytest.approx(sum(t["decode_tps"] for t in base) / len(base), rel=1e-9)
    assert "baseline trial(s) on this card: its calibration" in got.sources["baseline"]


def test_predict_prefers_the_current_engine_and_the_probed_file(tmp_path):
    truth = draft_ms(setup(tmp_path / "a", "current"))
    data = setup(tmp_path / "b", "stale", "other", "current")
    assert draft_ms(data) == pytest.approx(truth, rel=1e-6)
    note = pl.fallback_note(data.pools(), "target.gguf")
    assert note.startswith("loop costs: no calibration of target.gguf on this card") and "its records, this engine" in note
    # without them: the probed file's stale records before another file's current ones, and said so
    stale = setup(tmp_path / "c", "stale", "other")
    assert draft_ms(stale) == pytest.approx(3 * truth, rel=1e-6)
    note = pl.fallback_note(stale.pools(), "target.gguf")
    assert "an engine before source hashes" in note.split("then")[0] and "other.gguf" in note
    only_other = setup(tmp_path / "d", "other")
    assert draft_ms(only_other) == pytest.approx(5 * truth, rel=1e-6)
    assert "no records of target.gguf itself" in pl.fallback_note(only_other.pools(), "target.gguf")


def test_the_fallback_is_one_line_of_predicts_output(tmp_path):
    setup(tmp_path, "stale", "other")
    out = CliRunner().invoke(main, ["predict", str(tmp_path / "probe"), str(tmp_path / "stale"), str(tmp_path / "other"),
                                    "--accept", "mtp n2=0.8,0.6", "--boot", "0"])
    assert out.exit_code == 0, out.output
    lines = [x for x in out.output.splitlines() if x.startswith("loop costs:")]
    assert len(lines) == 1 and "no calibration of target.gguf" in lines[0] and "none by this engine" not in lines[0]


def test_plain_decodings_host_term_is_never_another_machines(tmp_path):
    """A card that only probed borrows the loop's costs from another card, scaled, but not plain
    decoding's host term: that is its own (none here: 0, said so), the same host placed otherwise, or
    its calibration."""
    setup(tmp_path, "current")
    other = probe_record()
    other["machine"] = {"gpu_name": "Other GPU"}
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "probe.jsonl").write_text(json.dumps(other) + "\n")
    datas = {d.card: d for d in pr.card_data(load([tmp_path / "probe", tmp_path / "current", tmp_path / "o"]))}
    got = pr.predict_one(datas["Other GPU"], PROFILE, 128, "snapshot", n_boot=0, with_break_even=False)
    assert "on NVIDIA" not in got.sources["baseline"] and got.sources["baseline"].startswith("host term from unknown")
    assert got.baseline_tps == pytest.approx(1e3 / pr.lc.curve_of(other, "Other GPU").t1, rel=0.02)
    assert "Test GPU's host" in got.sources["host"]  # the speculative loop's host work is borrowed, labelled
    assert pl.fallback_note(datas["Other GPU"].pools(), "target.gguf").startswith("loop costs: no records of any file")


def test_server_and_multi_stream_records_stay_out_of_a_cards_loop_costs(tmp_path):
    """llama-server's trials have no time split and several streams share their passes: neither enters
    the one-stream loop's costs, nor plain decoding's speed (4 streams' aggregate is 3x one's)."""
    data = setup(tmp_path / "a", "current")
    path = tmp_path / "b" / "current"
    setup(tmp_path / "b", "current")
    lines = [json.loads(x) for x in path.joinpath("trials.jsonl").read_text().splitlines()]
    extra = []
    for r in lines[1:]:
        for how in ({"parallel": 4}, {"backend": "server"}):
            x = dict(r, cell_id=r["cell_id"] + str(how), settings=dict(r["settings"], **how), decode_tps=3 * r["decode_tps"])
            x["time_s"] = dict(x["time_s"], draft=None, verify=None) if "backend" in how else x["time_s"]
            extra.append(x)
    path.joinpath("trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines + extra))
    (mixed,) = pr.card_data(load([tmp_path / "b" / "probe", path]))
    assert len(mixed.trials) == len(data.trials)
    a, b = (pr.predict_one(d, PROFILE, 128, "snapshot", n_boot=0, with_break_even=False) for d in (data, mixed))
    assert (a.speedup, a.baseline_tps) == (b.speedup, b.baseline_tps)
