"""`specsweep tune` on trained weights, on the CPU: Gemma 3 270M with the n-gram methods (on prompts a
base model continues by repeating them, where an n-gram draft is accepted), and SmolLM2's Q8_0
with its Q4_0 as a draft model (a draft that costs about what the target does: every config
loses), and a Gemma tune interrupted in its race and resumed. Each tune runs once, on a small
budget; the printed llama-server command is then started as printed and must give the winner's
drafted and accepted counts (the native llama-server of scripts/build-native.sh; skipped without it
unless SPECSWEEP_REQUIRE_NATIVE=1).

The models come from PyPI packages (tests/real_models.py); without them the module is skipped,
unless SPECSWEEP_REQUIRE_REAL=1.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from huggingface_hub import constants

from specsweep.cli import main
from specsweep.engine import runtime
from specsweep.models.fit import native_bin
from tests import real_models as rm

NATIVE = native_bin()
SLACK_S = 20  # past the budget: the answer, and a trial in flight when the deadline falls

rm.skip_module_unless_installed()

# a base model continues these by repeating their lines: n-gram drafts are accepted
REPEATING = """
[[prompt]]
name = "colours"
kind = "list"
text = "red green blue\\nred green blue\\nred green blue\\nred green blue\\nred green blue\\nred green blue\\n"
[[prompt]]
name = "zeros"
kind = "code"
text = "x = [0, 0, 0, 0]\\nx = [0, 0, 0, 0]\\nx = [0, 0, 0, 0]\\nx = [0, 0, 0, 0]\\nx = [0, 0, 0, 0]\\n"
"""
# an instruct model answers these in its own words: a draft model agrees with it about half the time
ASKING = """
[[prompt]]
name = "primes"
kind = "chat"
text = "Name three prime numbers and say why each is prime."
[[prompt]]
name = "sea"
kind = "chat"
text = "Write two sentences about the sea."
"""


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune-real")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_CACHE", str(d / "hub"))
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        mp.setenv("SPECSWEEP_CACHE", str(d / "cache"))
        runtime.init(verbose=False)
        gemma = rm.place(rm.GEMMA3, d / "hub")
        smol = rm.place(rm.SMOLLM2, d / "hub")
        q8, q4 = (rm.quantize(smol, rm.quant_path(rm.SMOLLM2, q, d / "models"), q) for q in ("Q8_0", "Q4_0"))
        (d / "repeating.toml").write_text(REPEATING)
        (d / "asking.toml").write_text(ASKING)
        yield SimpleNamespace(dir=d, gemma=gemma, q8=q8, q4=q4)


def invoke(real, name: str, target: Path, prompts: str, budget: int, *extra):
    return CliRunner().invoke(main, ["tune", str(target), "--gpus", "", "--prompts", str(real.dir / prompts),
                                     "--tokens", "24", "--warmup", "0", "--max-draft", "8", "--time", f"{budget}s",
                                     "-o", str(real.dir / name), *map(str, extra)])


def tune(real, name: str, target: Path, prompts: str, budget: int, *extra) -> SimpleNamespace:
    import time

    out = real.dir / name
    t0 = time.monotonic()
    r = invoke(real, name, target, prompts, budget, *extra)
    seconds = time.monotonic() - t0
    assert r.exit_code == 0, r.output
    answer = json.loads((out / "answer.json").read_text())
    trials = [json.loads(x) for x in (out / "race" / "trials.jsonl").read_text().splitlines()] \
        if (out / "race" / "trials.jsonl").is_file() else []
    return SimpleNamespace(out=out, stdout=r.stdout, answer=answer, seconds=seconds, budget=budget, trials=trials)


@pytest.fixture(scope="module")
def gemma_tune(real):
    return tune(real, "gemma", real.gemma, "repeating.toml", 300, "--methods", "ngram-simple")


def test_gemma_ngram_tune_names_a_winner_within_its_budget(gemma_tune):
    a = gemma_tune.answer
    assert gemma_tune.seconds <= gemma_tune.budget + SLACK_S, gemma_tune.stdout
    assert a["winner"].startswith("ngram-"), gemma_tune.stdout
    vs = a["against_plain"]
    assert vs["change"] > 0 and vs["interval"] is not None and vs["blocks"] >= 2, gemma_tune.stdout
    assert f"winner: {a['winner']}" in gemma_tune.stdout and "95% t-interval over" in gemma_tune.stdout
    assert a["runner_up"] is not None and a["llama_server"][a["llama_server"].index("--spec-type") + 1].startswith("ngram")
    # the matrices it leaves: the finalists for a fresh run, every candidate
    assert Path(a["finalists"]).is_file() and Path(a["grid"]).is_file()


def test_the_printed_llama_server_command_gives_the_winners_counts(real, gemma_tune):
    """Started as printed (the binary named by path, its port its own), on each prompt with the
    request the race made (greedy, ignore_eos, the prompt's tokens): the server drafts and accepts
    what the winner's records say, in every block."""
    from specsweep.engine.llama_server import LlamaServer
    from specsweep.matrix.prompts import load_set
    from specsweep.run.runner import prompt_tokens

    server = NATIVE / "llama-server"
    if not server.is_file():
        why = f"native llama-server not built ({server}); run scripts/build-native.sh"
        if os.environ.get("SPECSWEEP_REQUIRE_NATIVE") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    line = next(x.strip() for x in gemma_tune.stdout.splitlines() if x.strip().startswith("llama-server -m "))
    args = shlex.split(line)[1:]
    winner = gemma_tune.answer["winner"]
    mine = [t for t in gemma_tune.trials if t["cell"] == winner]
    prompts = load_set(str(real.dir / "repeating.toml"), real.dir / "m.toml")
    drafted = 0
    with runtime.Model(real.gemma, (), vocab_only=True) as vocab:
        for p in prompts:
            counts = {(t["n_drafted"], t["n_accepted"]) for t in mine if t["prompt_id"] == p.id}
            assert len(counts) == 1, (p.name, counts)  # the same in every block: CPU decoding is deterministic
            with LlamaServer(server, args, real.dir / f"server-{p.name}.log") as s:  # a fresh server per prompt
                got = s.complete(prompt_tokens(vocab, p, chat=True), 24, seed=0, ignore_eos=True)
            timings = got.get("timings") or {}
            assert (timings.get("draft_n", 0), timings.get("draft_n_accepted", 0)) == counts.pop(), p.name
            drafted += timings.get("draft_n", 0)
    assert drafted > 0


def test_plot_draws_a_tune(real, gemma_tune, tmp_path):
    out = CliRunner().invoke(main, ["plot", str(gemma_tune.out), "-o", str(tmp_path / "tune.html")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "tune.html").read_text(encoding="utf-8")
    assert gemma_tune.answer["winner"] in page


def test_a_draft_that_costs_what_the_target_does_loses_and_tune_says_plain_decoding(real):
    t = tune(real, "smollm2", real.q8, "asking.toml", 180, "--draft", real.q4, "--methods", "draft")
    a = t.answer
    assert t.seconds <= t.budget + SLACK_S, t.stdout
    assert a["winner"] == "plain decoding", t.stdout
    assert "winner: plain decoding: no config beat it" in t.stdout
    raced = a["raced"]
    assert raced and all(r["change"] < 0 for r in raced.values()), raced  # each measured, each slower
    assert "--spec-type" not in a["llama_server"] and "-md" not in a["llama_server"]


def test_an_interrupted_tune_resumes(real, monkeypatch):
    """Ctrl-C at the race's third trial (Gemma, n-gram methods): exit 130, the probe, the pilot and
    the ranking kept; the same command again measures neither again, runs the cut block again whole
    and names a winner."""
    from specsweep.tune.command import Progress
    from tests.test_tune import interrupt_race

    trial = interrupt_race(monkeypatch)
    args = (real, "gemma-resumed", real.gemma, "repeating.toml", 120, "--methods", "ngram-simple")
    first = invoke(*args)
    assert first.exit_code == 130, first.output
    out = real.dir / "gemma-resumed"
    state = json.loads((out / "tune.json").read_text())
    assert state["probed"] and state["piloted"] and state["ranking"] and state["entrants"] and state["measured"] == 0
    pilot = (out / "pilot" / "trials.jsonl").read_text()
    monkeypatch.setattr(Progress, "trial", trial)
    again = tune(*args)
    assert (out / "pilot" / "trials.jsonl").read_text() == pilot  # not measured again
    assert len((out / "probe" / "probe.jsonl").read_text().splitlines()) == 1
    assert {t["attempt"] for t in again.trials if t["block"] == 0} == {0, 1}  # the cut block ran again whole
    assert again.seconds <= again.budget + SLACK_S, again.stdout
    assert again.answer["winner"] and f"winner: {again.answer['winner']}" in again.stdout
