"""Contributions: the schema, `specsweep contribute` (stripping, lossless flags, refusing configs
not measured alike with their baseline, the pull request up to the Hub call) and `specsweep merge`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import huggingface_hub
import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.contrib import contribute, merge, problem, schema
from specsweep.errors import SpecsweepError
from specsweep.records.sources import load, only_card
from specsweep.report import page
from tests.test_plot import PROBES, REPO, SHA_T, manifest, sample_trials, trial, write_results

EVIL = "<script>alert(1)</script>"


def results(tmp_path: Path, trials=None, manifests=None, name="mine") -> Path:
    return write_results(tmp_path / "results", trials or sample_trials(), manifests or [manifest()], name)


def build(tmp_path, trials=None, manifests=None, **kw) -> tuple[dict, list[str]]:
    return contribute.build(load([results(tmp_path, trials, manifests)]), today="2026-11-24", **kw)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ---------------------------------------------------------------------------------------------
# the schema


def test_schema_is_draft_2020_12_and_shipped_with_the_package():
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(s)


def test_a_built_contribution_is_valid(tmp_path):
    doc, _ = build(tmp_path)
    assert problem(doc) is None
    assert doc["schema_version"] == 1 and doc["card"] == "NVIDIA GeForce RTX 3090" and doc["created"] == "2026-11-24"


@pytest.mark.parametrize("damage, reason", [
    (lambda d: d.pop("card"), "'card' is a required property"),
    (lambda d: d["manifests"][0].update(host="alice-desktop"), "'host' was unexpected"),
    (lambda d: d.update(host="alice-desktop"), "'host' was unexpected"),
    (lambda d: d.update(schema_version=2), "schema_version 2 is not 1"),
    (lambda d: d.update(schema_version="1"), "schema_version '1' is not 1"),
    (lambda d: d["trials"][0]["models"]["target"].update(file="/home/alice/a3b.gguf"), "does not match"),
    (lambda d: d["trials"][0].pop("lossless"), "'lossless' is a required property"),
    (lambda d: d["trials"][0].update(decode_tps="fast"), "'fast' is not of type 'number'"),
    (lambda d: d.update(trials=[], probes=[]), "should be non-empty"),
    (lambda d: d["trials"][0].update(manifest="elsewhere"), "manifest 'elsewhere'"),
])
def test_invalid_contributions_fail_with_a_reason(tmp_path, damage, reason):
    doc, _ = build(tmp_path)
    bad = copy.deepcopy(doc)
    damage(bad)
    got = problem(bad)
    assert got is not None and reason in got, got
    assert "\n" not in got


def n_lines(path) -> int:
    """How many records a committed results file holds (it grows with each device run)."""
    return sum(1 for line in open(path) if line.strip())


def test_probe_records_contribute_too():
    # the committed probe file holds two cards' probes: one contribution per card
    with pytest.raises(SpecsweepError, match="one card per contribution: these results come from NVIDIA H100"):
        contribute.build(load([PROBES]), today="2026-11-24")
    doc, _ = contribute.build(only_card(load([PROBES]), "H100"), today="2026-11-24")
    h100 = [line for line in open(PROBES) if "H100" in line]
    assert problem(doc) is None and len(doc["probes"]) == len(h100) > 0 and not doc["trials"]
    assert doc["card"] == "NVIDIA H100 80GB HBM3"
    text = json.dumps(doc)
    assert "/tmp/m/" not in text and "/root/out" not in text
    assert all("host" not in p["machine"] and "path" not in p["model"] for p in doc["probes"])


def test_the_recorded_h100_run_contributes_with_its_lossless_failures_marked():
    doc, warnings = contribute.build(load([REPO / "results" / "a3b-synthetic"]), today="2026-11-24")
    n = n_lines(REPO / "results" / "a3b-synthetic" / "trials.jsonl")
    assert problem(doc) is None and len(doc["trials"]) == n
    lossless = doc["lossless"]
    assert lossless["trials"] == n and lossless["lossless"] < n  # the GPU's rounding, kept and shown
    assert {c["cell"] for c in lossless["cells"]} and all("kept and marked" in w for w in warnings)
    assert "/tmp/m/" not in json.dumps(doc) and "/root/out" not in json.dumps(doc)


# ---------------------------------------------------------------------------------------------
# contribute


def test_contribute_strips_host_and_paths_and_keeps_files_and_hashes(tmp_path):
    trials = sample_trials()
    for t in trials:
        t["settings"]["prompts"] = "/home/alice/prompts/mine.toml"
    doc, _ = build(tmp_path, trials)
    text = json.dumps(doc)
    assert "/home/alice" not in text and "alice-desktop" not in text
    (m,) = doc["manifests"]
    assert "host" not in m
    assert m["argv"] == ["specsweep", "run", "a3b.toml", "--results", "results"]
    assert m["matrix"] == "a3b.toml" and m["models"]["a3b"] == {"file": "a3b.gguf", "sha256": SHA_T}
    t = next(t for t in doc["trials"] if t["method"] == "draft")
    assert t["models"]["draft"]["ref"] == "draft.gguf" and t["settings"]["prompts"] == "mine.toml"
    assert t["models"]["target"]["sha256"] == SHA_T


def test_contribute_refuses_a_baseline_measured_with_other_flags(tmp_path):
    # backend_sampling is not part of the reference key: the run's table would compare these two
    trials = [trial("baseline", "baseline", 100.0, backend_sampling=False),
              trial("draft", "draft", 120.0, drafted=8, accepted=8)]
    with pytest.raises(SpecsweepError, match=r"'draft' vs baseline 'baseline': backend_sampling True vs False"):
        build(tmp_path, trials)
    # --drop-unmatched leaves it out, named, instead
    doc, warnings = contribute.build(load([tmp_path / "results" / "mine"]), drop_unmatched=True)
    assert [t["cell"] for t in doc["trials"]] == ["baseline"]
    assert any(w.startswith("left out 'draft' vs baseline") for w in warnings)


@pytest.mark.parametrize("trials, manifests, reason", [
    ([trial("draft", "draft", 120.0, drafted=8, accepted=8)], None, "has no baseline cell"),
    ([trial("baseline", "baseline", 100.0, n_batch=2048), trial("draft", "draft", 90.0, drafted=8, accepted=8)],
     None, "n_batch 512 vs 2048"),
    ([trial("baseline", "baseline", 100.0, threads=4), trial("draft", "draft", 90.0, drafted=8, accepted=8)],
     None, "threads 0 vs 4"),
    ([trial("baseline", "baseline", 100.0, prompt="chat"),
      trial("draft", "draft", 90.0, prompt="code", drafted=8, accepted=8)], None, "no trial of prompt"),
    ([trial("baseline", "baseline", 100.0, mid="old"), trial("draft", "draft", 90.0, drafted=8, accepted=8)],
     [manifest(), manifest("old", llama_cpp_commit="b4000")], "llama.cpp differs between the runs"),
])
def test_contribute_refuses_configs_not_measured_like_their_baseline(tmp_path, trials, manifests, reason):
    with pytest.raises(SpecsweepError, match=reason):
        build(tmp_path, trials, manifests)


def test_contribute_checks_the_lossless_flags(tmp_path):
    trials = sample_trials()
    trials[0]["lossless"], trials[0]["first_mismatch"] = False, 7  # a draft trial that drifted
    doc, warnings = build(tmp_path, trials)
    assert doc["lossless"]["cells"] == [{"cell": "draft d max=4", "trials": 4, "lossless": 3}]
    assert warnings == ["'draft d max=4': 1 of 4 trials generated other tokens than the baseline "
                        "(kept and marked in the file's lossless block)"]
    broken = sample_trials()
    broken[0]["first_mismatch"] = 3  # says lossless, and names a mismatch
    with pytest.raises(SpecsweepError, match="contradicts first_mismatch"):
        build(tmp_path / "b", broken)
    base = sample_trials()
    base[2]["lossless"], base[2]["first_mismatch"] = False, 1
    with pytest.raises(SpecsweepError, match="baseline itself is not deterministic"):
        build(tmp_path / "c", base)


def test_contribute_refuses_two_cards_and_trials_without_manifest(tmp_path):
    a = results(tmp_path, name="a")
    b = write_results(tmp_path / "results", [dict(t, manifest="m2") for t in sample_trials()],
                      [manifest("m2", gpu="NVIDIA H100 80GB HBM3")], "b")
    with pytest.raises(SpecsweepError, match="one card per contribution"):
        contribute.build(load([a, b]))
    c = write_results(tmp_path / "results", sample_trials(), [manifest("other")], "c")
    with pytest.raises(SpecsweepError, match="have no manifest"):
        contribute.build(load([c]))


def test_contribute_command_writes_card_date_file(tmp_path, monkeypatch):
    d = results(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = cli("contribute", d, "--power-limit", 350, "--graphics-clock", 1695, "--notes", "open case")
    assert r.exit_code == 0, r.output
    (written,) = (tmp_path / "contrib").glob("*.json")
    assert written.name.startswith("nvidia-geforce-rtx-3090-") and written.name.endswith(".json")
    doc = json.loads(written.read_text())
    assert problem(doc) is None and doc["power_limit_w"] == 350
    assert doc["clocks"] == {"graphics_mhz": 1695, "memory_mhz": None} and doc["notes"] == "open case"
    r = cli("contribute", d, "--card", "RTX 3090 (undervolted)", "-o", tmp_path / "x.json")
    assert r.exit_code == 0 and json.loads((tmp_path / "x.json").read_text())["card"] == "RTX 3090 (undervolted)"
    bad = cli("contribute", d, "--power-limit", -1)
    assert bad.exit_code == 2 and "must be positive" in bad.output


class FakeApi:
    calls: list = []
    fail: Exception | None = None

    def create_commit(self, **kw):
        FakeApi.calls.append(kw)
        if FakeApi.fail:
            raise FakeApi.fail
        return type("Info", (), {"pr_url": f"https://huggingface.co/datasets/{kw['repo_id']}/discussions/7"})()


def test_push_opens_a_pull_request_on_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls, FakeApi.fail = [], None
    out = tmp_path / "c.json"
    r = cli("contribute", results(tmp_path), "-o", out, "--push", "specsweep/community")
    assert r.exit_code == 0, r.output
    assert "discussions/7" in r.stdout
    (kw,) = FakeApi.calls
    assert kw["repo_id"] == "specsweep/community" and kw["repo_type"] == "dataset" and kw["create_pr"] is True
    (op,) = kw["operations"]
    assert op.path_in_repo == "contrib/c.json" and op.path_or_fileobj == out.read_bytes()
    assert "NVIDIA GeForce RTX 3090" in kw["commit_message"]


def test_push_failures_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls, FakeApi.fail = [], ConnectionError("Failed to resolve 'huggingface.co'\n(more)")
    r = cli("contribute", results(tmp_path), "-o", tmp_path / "c.json", "--push", "specsweep/community")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1].startswith(
        "specsweep: error: cannot open a pull request on dataset specsweep/community: ConnectionError: Failed to")
    assert (tmp_path / "c.json").is_file()  # the file stays, to push again or by hand
    class Refused(Exception):  # what huggingface_hub raises for a 401/403 carries the response
        response = type("Response", (), {"status_code": 401})()

    FakeApi.fail = Refused("401 Client Error")
    r = cli("contribute", results(tmp_path / "3"), "-o", tmp_path / "d.json", "--push", "specsweep/community")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        "specsweep: error: cannot open a pull request on dataset specsweep/community: the Hub refused (HTTP 401): "
        f"set HF_TOKEN to a token that may open pull requests there ({tmp_path / 'd.json'} is kept)")
    assert (tmp_path / "d.json").is_file()
    FakeApi.calls = []
    r = cli("contribute", results(tmp_path / "2"), "--push", "not a repo")
    assert r.exit_code == 2 and "owner/name" in r.output and not FakeApi.calls


# ---------------------------------------------------------------------------------------------
# merge


def contribution_file(tmp_path: Path, name: str, card: str = "NVIDIA GeForce RTX 3090", mid: str = "m1",
                      **over) -> Path:
    trials = [dict(t, manifest=mid) for t in sample_trials()]
    doc, _ = contribute.build(load([results(tmp_path / name, trials, [manifest(mid)])]), card=card)
    doc.update(over)
    path = tmp_path / "contrib" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_merge_rejects_invalid_and_duplicate_files_and_merges_the_rest(tmp_path):
    a = contribution_file(tmp_path, "a.json")
    b = contribution_file(tmp_path, "b.json", card="NVIDIA H100 80GB HBM3", mid="m2")
    again = tmp_path / "contrib" / "a-again.json"
    again.write_text(json.dumps(dict(json.loads(a.read_text()), card="renamed card")))  # same records
    bad = contribution_file(tmp_path, "bad.json", mid="m3", schema_version=9)
    junk = tmp_path / "contrib" / "junk.json"
    junk.write_text("{not json")
    out = tmp_path / "results" / "community.jsonl"
    r = cli("merge", a, b, again, bad, junk, "-o", out)
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert "merged a.json: NVIDIA GeForce RTX 3090, 16 trials, 0 probes" in lines
    assert any(x.startswith("merged b.json") for x in lines)
    assert "rejected a-again.json: duplicate of a.json (the same records)" in lines
    assert "rejected bad.json: invalid: schema_version 9 is not 1, the version this specsweep reads" in lines
    assert any(x.startswith("rejected junk.json: not JSON:") for x in lines)
    sources = load([out])
    assert [s.card for s in sources] == ["NVIDIA GeForce RTX 3090", "NVIDIA H100 80GB HBM3"]
    assert [len(s.trials) for s in sources] == [16, 16] and all(s.manifests for s in sources)
    # merging again into the same file: everything there is a duplicate, the file is unchanged
    before = out.read_bytes()
    r = cli("merge", a, "-o", out)
    assert r.exit_code == 1 and "rejected a.json: duplicate of a.json" in r.output and out.read_bytes() == before
    # a file that shares only some records with a merged one is a duplicate too
    partial = json.loads(b.read_text())
    partial["trials"] = partial["trials"][:3]
    p = tmp_path / "contrib" / "part.json"
    p.write_text(json.dumps(partial))
    r = cli("merge", p, "-o", out)
    assert r.exit_code == 1 and "rejected part.json: duplicate: 3 of its 3 records are already merged (from b.json)" \
        in r.output
    c = contribution_file(tmp_path, "c.json", mid="m4")
    r = cli("merge", c, "-o", out)
    assert r.exit_code == 0 and "3 contributions (1 new)" in r.output


def test_merge_refuses_to_overwrite_another_kind_of_file(tmp_path):
    a = contribution_file(tmp_path, "a.json")
    trials = tmp_path / "trials.jsonl"
    trials.write_text((REPO / "results" / "a3b-synthetic" / "trials.jsonl").read_text())
    before = trials.read_bytes()
    r = cli("merge", a, "-o", trials)
    assert r.exit_code == 2 and "not a merged community file" in r.output and trials.read_bytes() == before


def test_merge_refuses_a_json_name_and_plot_reads_a_merged_file_by_its_content(tmp_path):
    """A merged file is JSON Lines: `-o community.json` is refused in one line, and a merged file
    that already carries a .json name (written before) still loads, one source per contribution."""
    a = contribution_file(tmp_path, "a.json")
    r = cli("merge", a, "-o", tmp_path / "community.json")
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0
    assert "a merged community file is JSON Lines; name it .jsonl" in r.output
    assert not (tmp_path / "community.json").exists()
    old = tmp_path / "old-community.json"
    old.write_bytes(merge_into(tmp_path, a).read_bytes())
    (source,) = load([old])
    assert source.origin == "contribution" and source.card == "NVIDIA GeForce RTX 3090" and len(source.trials) == 16
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    with pytest.raises(SpecsweepError, match="junk.json is not JSON"):
        load([junk])


def test_a_card_name_from_a_contribution_is_escaped_in_the_page(tmp_path):
    a = contribution_file(tmp_path, "evil.json", card=EVIL, notes=EVIL)
    for given in ([a], [merge_into(tmp_path, a)]):
        sources = load(given)
        assert sources[0].card == EVIL
        text = page.render(sources)
        assert EVIL not in text and "<script>alert" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        # our own script elements only: hooks, one JSON per figure, the template, the packed plotly.js and
        # its loader
        assert text.count("<script") == 1 + text.count('<script type="application/json" data-figure=') + 3


def merge_into(tmp_path: Path, path: Path) -> Path:
    out = tmp_path / "community.jsonl"
    outcome = merge.merge([path], out)
    assert not outcome.rejected
    return out


def test_the_h200_cost_model_run_contributes_its_paired_changes():
    """Records of the blocks design (H200, results/cost-model-synthetic): the file carries each
    config's change against its block's baseline with both intervals, as `analyze` computes them."""
    doc, _ = contribute.build(load([REPO / "results" / "cost-model-synthetic"]), today="2026-12-02")
    assert problem(doc) is None
    rows = {r["cell"]: r for r in doc["paired"]}
    assert len(rows) == 20 and all(r["design"] == "blocks" and r["n_blocks"] == 3 and r["synthetic"]
                                   for r in rows.values())
    mtp2 = rows["mtp n=2 p=0.697"]
    lo, hi = mtp2["t_interval"]
    assert lo < mtp2["change"] < hi and mtp2["change"] > 0  # the head pays at this acceptance
    assert rows["draft n=128 p=0.697"]["change"] < -0.8


def test_a_traced_union_travels_in_a_contribution_and_is_checked(tmp_path):
    """The `experts` block of a traced trial is kept and read back from the contribution; a block
    that does not follow the schema is refused with a reason."""
    from specsweep.records import expert_union
    from tests.test_union import experts_block

    trials = sample_trials()
    spec = next(t for t in trials if t["method"] != "baseline")
    spec["experts"] = experts_block([3, 5, 5, 1], lambda k, il: 0.05 * k, kinds="vvrp", ms=[5.0, 6.0, 6.1, 4.0])
    doc, _ = build(tmp_path, trials)
    assert problem(doc) is None
    (kept,) = [t for t in doc["trials"] if t.get("experts")]
    assert expert_union.read(kept).unions.tolist() == expert_union.read(spec).unions.tolist()
    for damage, reason in [(lambda e: e["passes"].update(kind="vvxp"), "does not match"),
                           (lambda e: e.pop("n_expert"), "'n_expert' is a required property"),
                           (lambda e: e.update(host="alice-desktop"), "'host' was unexpected")]:
        bad = copy.deepcopy(doc)
        damage(next(t for t in bad["trials"] if t.get("experts"))["experts"])
        got = problem(bad)
        assert got is not None and reason in got, got
