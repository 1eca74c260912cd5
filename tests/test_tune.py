"""`specsweep tune`: its candidates, profiles cut from a pilot, the race's verdicts and the command
lines, on made-up records and tiny synthetic models; an interrupted tune resuming. The runs on
trained weights (Gemma 3 270M with n-gram methods, SmolLM2's quants as a draft pair) and the
printed llama-server command against llama-server itself are in tests/test_tune_real.py.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from specsweep.analysis.profiles import Profile
from specsweep.cli import main
from specsweep.errors import SpecsweepError
from specsweep.tune import candidates as cand
from specsweep.tune import race, render
from specsweep.tune.command import Progress, parse_duration
from specsweep.tune.rank import derive
from specsweep.models.fit import native_bin
from tests.test_analysis import trial

NATIVE = native_bin()
PROMPTS = """
[[prompt]]
name = "json"
kind = "json"
text = '[{"id": 1, "name": "alpha"},\\n {"id": 2, "name": "beta"},\\n {"id": 3,'
[[prompt]]
name = "code"
kind = "code"
text = 'def add(a, b):\\n    return a + b\\n\\ndef sub(a, b):\\n'
"""


def test_candidates_follow_the_files_and_the_grid(tmp_path):
    files = cand.Files(tmp_path / "t.gguf", mtp=False, draft=tmp_path / "d.gguf",
                       drafters=(cand.Drafter(tmp_path / "df.gguf", "dflash", cap=3),))
    assert files.allowed() == ["draft", "ngram-cache", "ngram-mod", "ngram-simple", "ngram-map-k", "ngram-map-k4v",
                               "dflash"]
    fams = {f.name: f for f in cand.build(files)}
    draft = fams["draft"].members
    assert [c.n_max for c in draft] == list(cand.MODEL_LENGTHS) and fams["draft"].pilot is draft[-1]
    assert [c.n_max for c in fams["draft p_min=0.75"].members] == [3, 4, 6, 8]
    assert [c.n_max for c in fams["dflash"].members] == [1, 2, 3]  # its block drafts 3
    assert fams["ngram-mod n=24"].pilot.settings == {"method": "ngram-mod", "n_match": 24, "draft_min": 4,
                                                     "draft_max": 64}
    assert len(fams["ngram-cache"].members) == 1 and "mtp" not in {f.method for f in fams.values()}
    # four streams' verify batches of 64 + 1 do not fit n_batch 512; --max-draft clamps the n-gram grid
    assert max(c.n_max for f in cand.build(files, ["ngram-mod"], parallel=8) for c in f.members) == 16
    capped = cand.build(files, ["ngram-simple", "draft"], max_draft=4)
    assert {c.n_max for f in capped for c in f.members} == {1, 2, 3, 4}
    # synthetic acceptance: a model drafter's lengths stop at the positions given, its rates cut to each
    fams = {f.name: f for f in cand.build(files, ["draft"], {"draft": [0.8, 0.6]})}
    assert [c.settings["synth_rates"] for c in fams["draft"].members] == [[0.8], [0.8, 0.6]]
    for wanted, accept, message in ((["mtp"], {}, "has no MTP layer"), (["eagle3"], {}, "needs a eagle3 drafter"),
                                    (["nope"], {}, "unknown method"), (None, {"ngram-mod": [0.5]}, "n-gram method")):
        with pytest.raises(SpecsweepError, match=message):
            cand.build(files, wanted, accept)


def test_a_shorter_draft_is_its_pilots_profile_cut_short():
    pilot = Profile("ngram-simple", 4, (0.9, 0.8, 0.5, 0.5), (0.1, 0.2, 0.3, 0.4), 0.5, label="p")
    cut = derive(pilot, 2)
    assert cut.cond == (0.9, 0.8) and cut.lengths == pytest.approx((0.1, 0.9)) and cut.draft_rate == 0.5
    # ngram-mod's draft_min: drafts shorter than it are not made, so it drafts less often
    mod = derive(pilot, 4, n_min=3)
    assert mod.lengths == pytest.approx((0, 0, 3 / 7, 4 / 7)) and mod.draft_rate == pytest.approx(0.35)
    full = derive(Profile("draft", 8, (0.7,) * 8), 3)  # a model drafter always drafts its limit
    assert full.lengths == () and full.cond == (0.7,) * 3
    with pytest.raises(SpecsweepError, match="beyond its pilot"):
        derive(pilot, 5)


def race_records(effects: dict[str, list[float]], prompts=("p0", "p1")) -> list[dict]:
    """Blocks of made-up trials: per config a log-change per block, the same on every prompt,
    around a baseline whose speed drifts from block to block (which the pairing removes)."""
    import math

    out = []
    n_blocks = len(next(iter(effects.values())))
    for b in range(n_blocks):
        base = 100.0 * (1 + 0.2 * (b % 3))
        for p in prompts:
            out.append(trial("plain", "baseline", base, prompt=p, block=b))
            for name, eff in effects.items():
                out.append(trial(name, "ngram-simple", base * math.exp(eff[b]), prompt=p, block=b))
    return out


IDS = {"a": "id-a", "b": "id-b", "c": "id-c", race.PLAIN: "id-plain"}


def test_the_race_drops_the_clearly_slower_and_stops_when_the_leader_separates():
    noise = [0.01, -0.01, 0.02, -0.02]
    recs = race_records({"a": [0.30 + x for x in noise], "b": [0.28 - x for x in noise],
                         "c": [-0.2 + x for x in noise]})
    v = race.judge(recs, ["a", "b", "c"], IDS, "id-plain")
    assert v.leader == "a" and v.runner_up == "b" and set(v.drop) == {"c"}
    assert "clearly slower than a" in v.drop["c"] and not v.stop  # a and b: not told apart yet
    recs = race_records({"a": [0.30 + x for x in noise], "b": [0.10 - x for x in noise]})
    v = race.judge(recs, ["a", "b"], IDS, "id-plain")
    assert v.leader == "a" and "b" in v.drop and v.runner_up == race.PLAIN and "excludes zero" in v.stop
    assert v.against_runner_up.change == pytest.approx(0.30 ** 0 * (2.718281828 ** 0.30) - 1, rel=1e-3)
    # every config slower: plain decoding leads and nothing is left
    v = race.judge(race_records({"a": [-0.3 + x for x in noise]}), ["a"], IDS, "id-plain")
    assert v.leader == race.PLAIN and v.drop and "clearly slower than plain decoding" in v.stop
    # within +-1% over the whole interval: a tie, stop
    recs = race_records({"a": [0.2 + x / 100 for x in noise], "b": [0.2 - x / 100 for x in noise]})
    assert "a tie" in race.judge(recs, ["a", "b"], IDS, "id-plain").stop


def test_the_race_takes_leaders_of_several_families_within_the_time():
    ranked = [{"name": f"f{f} n={n}", "family": f"f{f}"} for f in (1, 2) for n in (1, 2, 3)]
    assert race.entrants(ranked, 1.0, 1e6) == ["f1 n=1", "f1 n=2", "f2 n=1", "f2 n=2"]
    assert race.entrants(ranked, 1.0, 3 * 1.0 * race.MIN_BLOCKS) == ["f1 n=1", "f1 n=2"]  # 2 + plain
    assert race.entrants(ranked, 1.0, 3.0) == []  # not even two blocks of one config and plain
    assert race.entrants([], 1.0, 1e6) == []


def settings(**kw) -> dict:
    base = {"method": "baseline", "target": "target", "gpus": [], "kv": "q8_0", "n_ctx": 4096, "parallel": 1,
            "threads": 0, "flash_attn": True}
    return {**base, **kw}


def test_the_command_lines_a_user_starts(tmp_path):
    models = {"target": tmp_path / "t.gguf", "draft": tmp_path / "d.gguf"}
    s = settings(method="draft", draft="draft", draft_max=4, draft_min=0, p_min=0.75, gpus=[0], n_cpu_moe=12,
                 parallel=4, synth_rates=[0.9, 0.8, 0.7, 0.6])
    server = render.server_args(s, models)
    assert render.line("llama-server", server) == (
        f"llama-server -m {tmp_path}/t.gguf -c 16384 -np 4 -fa on -ctk q8_0 -ctv q8_0 -dev CUDA0 -ngl 99 "
        f"--n-cpu-moe 12 -md {tmp_path}/d.gguf -devd CUDA0 -ngld 99 --spec-type draft-simple --spec-draft-n-max 4 "
        f"--spec-draft-n-min 0 --spec-draft-p-min 0.75 -ctkd q8_0 -ctvd q8_0")
    cli = render.cli_args(s, models)
    assert "-np" not in cli and cli[cli.index("-c") + 1] == "4096" and "--spec-synth-rates" not in cli
    plain = render.server_args(settings(threads=2), models)
    assert plain == ["-m", str(models["target"]), "-c", "4096", "-np", "1", "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0",
                     "-dev", "none", "-ngl", "0", "-t", "2"]


@pytest.mark.parametrize("tool", ["llama-server", "llama-cli"])
def test_llama_cpp_parses_every_printed_flag(tmp_path, tool):
    """llama.cpp parses the whole command line before `--help` prints and exits 0; an unknown flag
    or a bad value exits 1. (llama-cli prints no draft counts, so this is its test. A CPU build
    knows no CUDA0: the device names are the string test's above.)"""
    binary = NATIVE / tool
    if not binary.is_file():
        why = f"native {tool} not built ({NATIVE}); run scripts/build-native.sh"
        if os.environ.get("SPECSWEEP_REQUIRE_NATIVE") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    models = {"target": tmp_path / "t.gguf", "drafter1": tmp_path / "d.gguf"}
    lines = [settings(method="dflash", drafter="drafter1", draft_max=3, draft_min=0, p_min=0.0, n_cpu_moe=2),
             settings(method="mtp", draft_max=2, draft_min=0, p_min=0.75, kv="f16", threads=4),
             settings(method="ngram-mod", n_match=8, draft_min=4, draft_max=16, parallel=2),
             settings(method="ngram-map-k4v", size_n=4, size_m=8, min_hits=1), settings(method="ngram-cache")]
    env = dict(os.environ, LD_LIBRARY_PATH=str(binary.parent))
    for s in lines:
        args = (render.server_args if tool == "llama-server" else render.cli_args)(s, models)
        r = subprocess.run([str(binary), *args, "--help"], capture_output=True, env=env, timeout=60)
        assert r.returncode == 0, (args, r.stderr[-500:])
    bad = subprocess.run([str(binary), "--spec-type", "no-such-type", "--help"], capture_output=True, env=env,
                         timeout=60)
    assert bad.returncode != 0  # the check can fail


def test_durations():
    assert [parse_duration(t) for t in ("15m", "90s", "1h", "1.5h", "42")] == [900, 90, 3600, 5400, 42]
    for bad in ("", "15x", "0m", "-1"):
        with pytest.raises(SpecsweepError):
            parse_duration(bad)


@pytest.fixture
def tiny(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "prompts.toml").write_text(PROMPTS)
    return tiny_model("qwen3.6-35b-a3b", mtp=True)


def tune(tmp_path, target, *extra):
    # one thread: on a host whose other core is busy, two OpenMP threads wait on each other at every
    # barrier (a tiny model's pass took 1.1 s, not 1 ms), and a tune on a budget then has no time to race
    return CliRunner().invoke(main, ["tune", str(target), "--gpus", "", "--prompts", str(tmp_path / "prompts.toml"),
                                     "--tokens", "12", "--warmup", "0", "--threads", "1", "-o", str(tmp_path / "tune"),
                                     *map(str, extra)])


@pytest.mark.parametrize("args,message", [
    (["--time", "10x"], "give a duration like 15m"),
    (["--parallel", "0"], "--parallel must be at least 1"),
    (["--methods", "draft"], "needs a draft model (--draft FILE)"),
    (["--methods", "ngram-nope"], "unknown method 'ngram-nope'"),
    (["--draft", "missing.gguf"], "draft model file not found"),
    (["--drafter", "DRAFT"], "not a DFlash, DSpark or EAGLE-3 drafter"),
    (["--accept", "ngram-mod n2=0.5,0.4"], "n-gram method's acceptance comes from the text"),
    (["--vram", "1GiB"], "--vram sizes a GPU"),
    (["--prompts", "nope.toml"], "prompt set"),
    (["--methods", "mtp", "--accept", "mtp n2=0.5,0.9"], "cannot rise"),
])
def test_bad_input_is_one_line(tmp_path, tiny, args, message):
    args = [str(tiny) if a == "DRAFT" else a for a in args]
    out = tune(tmp_path, tiny, *args)
    assert out.exit_code == 2, out.output
    errors = [x for x in out.output.splitlines() if x.startswith("specsweep: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in out.output, out.output


def test_vram_keeps_experts_on_the_host_when_the_target_does_not_fit(tmp_path, tiny):
    from specsweep.models.memory import estimate_cell_bytes
    from specsweep.tune.fit import fit

    files = cand.inspect(tiny, None, ())
    fams = cand.build(files, ["mtp", "ngram-simple"])
    whole = estimate_cell_bytes([tiny], "q8_0", 512, load_mtp=True)
    placed = fit(files, fams, f"{int(whole / 0.9) + 4096}B", (0,), "q8_0", 512, 1)
    assert placed.n_cpu_moe is None and not placed.notes  # fits whole
    placed = fit(files, fams, f"{int(whole * 0.8)}B", (0,), "q8_0", 512, 1)
    assert placed.n_cpu_moe and "--n-cpu-moe" in placed.notes[0] and not placed.dropped


def interrupt_race(monkeypatch, at: int = 3):
    """Ctrl-C at the race's `at`-th trial (Progress.trial raises it there); returns the real
    Progress.trial, to put back for the resumed command."""
    calls = {"n": 0}
    real = Progress.trial

    def interrupted(self, cell, n):
        calls["n"] += "race" in self.what
        if calls["n"] == at:
            raise KeyboardInterrupt
        return real(self, cell, n)

    monkeypatch.setattr(Progress, "trial", interrupted)
    return real


def test_an_interrupted_tune_resumes_and_answers(tmp_path, tiny, monkeypatch):
    """Ctrl-C in the race: the records and tune.json stay; the same command again measures neither
    the probe nor the pilot again, finishes the race and answers."""
    real = interrupt_race(monkeypatch)
    args = ["--methods", "mtp", "--accept", "mtp n2=0.9,0.8", "--time", "40s"]
    first = tune(tmp_path, tiny, *args)
    assert first.exit_code == 130, first.output
    state = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert state["probed"] and state["piloted"] and state["entrants"] and state["measured"] == 0
    pilot = (tmp_path / "tune" / "pilot" / "trials.jsonl").read_text()
    race_first = (tmp_path / "tune" / "race" / "trials.jsonl").read_text().splitlines()
    assert 0 < len(race_first) < 3 + 1
    monkeypatch.setattr(Progress, "trial", real)
    again = tune(tmp_path, tiny, *args)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "tune" / "pilot" / "trials.jsonl").read_text() == pilot  # not measured again
    assert len((tmp_path / "tune" / "probe" / "probe.jsonl").read_text().splitlines()) == 1
    state = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert state["measured"] >= race.ROUND_BLOCKS
    trials = [json.loads(x) for x in (tmp_path / "tune" / "race" / "trials.jsonl").read_text().splitlines()]
    assert {t["attempt"] for t in trials if t["block"] == 0} == {0, 1}  # the cut block ran again whole
    answer = json.loads((tmp_path / "tune" / "answer.json").read_text())
    assert answer["winner"] and answer["llama_server"][:2] == ["-m", str(tiny)]
    assert "winner: " in again.stdout and "llama-server -m" in again.stdout
    assert answer["synthetic_acceptance"] and "standing in for real text" in again.stdout
    # other inputs into the same folder: one line, nothing mixed in
    other = tune(tmp_path, tiny, "--methods", "ngram-simple", "--time", "1m")
    assert other.exit_code == 2 and "holds a tune of other inputs (accept, methods differ)" in other.output
