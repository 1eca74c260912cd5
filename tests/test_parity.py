"""Parity with llama.cpp's own `llama-speculative-simple`: for the same tiny models, prompt and
settings, specsweep's loop generates the same text and drafts and accepts exactly as many tokens.

The native tool is built from the same vendored source by `scripts/build-native.sh` and runs here
on the *wheel's* libllama/libggml (LD_LIBRARY_PATH), so both sides share every kernel and a
difference can only come from the loop. Without the build the test is skipped, unless
SPECSWEEP_REQUIRE_NATIVE=1 (CI) makes that a failure.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from specsweep import methods
from specsweep.engine import runtime
from specsweep.engine import drafters
from specsweep.engine.drafters import DFlash, DraftModel, Mtp, NgramMod
from specsweep.engine.native import run_speculative_simple
from specsweep.engine.speculative import run_trial
from specsweep.models.fit import native_bin

NATIVE = native_bin()
TOOL = NATIVE / "llama-speculative-simple"
N_PREDICT = 64
N_CTX, N_BATCH, THREADS = 1024, 512, 2
TEXT = "The quick brown fox jumps over the lazy dog. def main(argv=None):"
# repeats, so that the n-gram methods find something to draft from the prompt itself
LOOPY = " ".join(["for i in range(10): total = total + values[i] * weights[i]"] * 4)

if not TOOL.is_file():
    if os.environ.get("SPECSWEEP_REQUIRE_NATIVE") == "1":
        pytest.fail(f"{TOOL} is missing: run scripts/build-native.sh", pytrace=False)
    pytest.skip(f"native llama-speculative-simple not built ({TOOL}); run scripts/build-native.sh",
                allow_module_level=True)


def native(target: Path, prompt: str, spec_args: list[str]) -> tuple[bytes, dict[str, int]]:
    run = run_speculative_simple(
        [str(TOOL), "-m", str(target), "-p", prompt, "-n", str(N_PREDICT), "--temp", "0", "-c", str(N_CTX),
         "-b", str(N_BATCH), "-ub", str(N_BATCH), "-t", str(THREADS), "-fa", "on", "-ctk", "f16", "-ctv", "f16",
         "-ngl", "0", *spec_args])
    return run.stdout, run.stats


def ours(target: Path, prompt: str, make_drafter, draft: Path | None = None, kind: str = "draft", n_rs_seq: int = 0):
    """kind "draft": make_drafter(draft context); "dflash": make_drafter(drafter context, target
    context); "mtp": make_drafter(MTP context, target context); no draft: make_drafter().
    `n_rs_seq`: the target's recurrent-state snapshots (llama.cpp gives DFlash and MTP n_max)."""
    opts = runtime.ContextOptions(n_ctx=N_CTX, n_batch=N_BATCH, type_kv="f16", flash_attn=True, n_threads=THREADS)
    topts = dataclasses.replace(opts, n_rs_seq=n_rs_seq)
    with runtime.Model(target, (), load_mtp=kind == "mtp") as model, runtime.Context(model, topts) as ctx:
        tokens = model.tokenize(prompt)
        if kind == "mtp":
            with runtime.Context(model, dataclasses.replace(opts, ctx_type="mtp"), other=ctx) as dctx:
                result = run_trial(ctx, tokens, N_PREDICT, make_drafter(dctx, ctx))
        elif draft is None:
            result = run_trial(ctx, tokens, N_PREDICT, make_drafter())
        elif kind == "dflash":
            with runtime.Model(draft, ()) as dmodel, runtime.Context(dmodel, opts, other=ctx) as dctx:
                result = run_trial(ctx, tokens, N_PREDICT, make_drafter(dctx, ctx))
        else:
            with runtime.Model(draft, ()) as dmodel, runtime.Context(dmodel, opts) as dctx:
                result = run_trial(ctx, tokens, N_PREDICT, make_drafter(dctx))
        text = b"".join(model.piece_bytes(t) for t in tokens)
        generated = [t for t in result.tokens if not model.is_eog(t)]
        return text + b"".join(model.piece_bytes(t) for t in generated), result


def assert_parity(native_out, stats, our_text, result):
    assert native_out.startswith(b"\n\n" + our_text), "generated text differs"
    assert native_out[len(our_text) + 2:].strip(b"\n") == b"", "llama.cpp generated more"
    assert stats["n_predict"] == len(result.tokens)
    assert (stats["n_drafted"], stats["n_accept"]) == (result.n_drafted_llama, result.n_accepted_llama)


@pytest.mark.parametrize("card", ["qwen3-30b-a3b", "qwen3.6-35b-a3b"])
@pytest.mark.parametrize("draft_kind", ["identical", "perturbed", "unrelated"])
def test_draft_model_matches_llama_cpp(tiny_model, card, draft_kind):
    target = tiny_model(card)
    draft = {"identical": target, "perturbed": tiny_model(card, perturb=0.2),
             "unrelated": tiny_model(card, seed=5)}[draft_kind]
    out, stats = native(target, TEXT, ["-md", str(draft), "--spec-type", "draft-simple", "--spec-draft-n-max", "5",
                                       "--spec-draft-n-min", "0", "-ngld", "0"])
    text, result = ours(target, TEXT, lambda dctx: DraftModel(dctx, n_max=5, n_min=0), draft)
    assert_parity(out, stats, text, result)
    if draft_kind != "unrelated":
        assert result.n_accepted_llama > 0


@pytest.mark.parametrize("card", ["qwen3-30b-a3b", "qwen3.6-35b-a3b"])
def test_ngram_mod_matches_llama_cpp(tiny_model, card):
    target = tiny_model(card)
    out, stats = native(target, LOOPY, ["--spec-type", "ngram-mod", "--spec-ngram-mod-n-match", "3",
                                        "--spec-ngram-mod-n-min", "1", "--spec-ngram-mod-n-max", "8"])
    text, result = ours(target, LOOPY, lambda: NgramMod(n_match=3, n_max=8, n_min=1))
    assert_parity(out, stats, text, result)
    assert stats["n_drafted"] > 0


@pytest.mark.parametrize("card", ["qwen3-30b-a3b", "qwen3.6-35b-a3b"])
def test_ngram_cache_matches_llama_cpp(tiny_model, card):
    target = tiny_model(card)
    out, stats = native(target, LOOPY, ["--spec-type", "ngram-cache"])  # drafts up to 8, fixed
    text, result = ours(target, LOOPY, lambda: drafters.NgramCache())
    assert_parity(out, stats, text, result)
    assert stats["n_drafted"] > 0


# The MTP head of a synthetic target follows it (its eh_proj passes the token embedding through) and
# branch_scale 0.05 makes the target embedding-dominated, so drafts are mostly accepted. As llama.cpp
# does for MTP and DFlash, the hybrid target keeps n_max recurrent-state snapshots and drops a
# rejected tail with seq_rm.
@pytest.mark.parametrize("n_max", [1, 3])
def test_mtp_matches_llama_cpp(tiny_model, n_max):
    target = tiny_model("qwen3.6-35b-a3b", branch_scale=0.05, mtp=True)
    out, stats = native(target, TEXT, ["--spec-type", "draft-mtp", "--spec-draft-n-max", str(n_max),
                                       "--spec-draft-n-min", "0"])
    text, result = ours(target, TEXT, lambda dctx, ctx: Mtp(dctx, ctx, n_max=n_max, n_min=0), kind="mtp",
                        n_rs_seq=n_max)
    assert_parity(out, stats, text, result)
    assert result.n_accepted_llama > 0


# A random DFlash drafter is accepted about as often as an unrelated draft; every verify then ends
# in a partial acceptance, so the target's snapshot rollback runs at every step. n_max 16 is
# clamped to the block size - 1 = 15 on both sides. The June 2026 layout adds sliding-window layers
# (a window shorter than the run) and M-RoPE sections.
@pytest.mark.parametrize("card", ["qwen3.6-35b-a3b"])
@pytest.mark.parametrize("n_max,layout", [(4, "-dflash"), (16, "-dflash"), (8, "-dflash-jun26")])
def test_dflash_matches_llama_cpp(tiny_model, card, n_max, layout):
    target = tiny_model(card, branch_scale=0.05)
    drafter = tiny_model(card + layout, branch_scale=0.05)
    out, stats = native(target, TEXT, ["-md", str(drafter), "--spec-type", "draft-dflash", "--spec-draft-n-max",
                                       str(n_max), "--spec-draft-n-min", "0", "-ngld", "0"])
    text, result = ours(target, TEXT, lambda dctx, ctx: DFlash(dctx, ctx, n_max=n_max, n_min=0), drafter,
                        kind="dflash", n_rs_seq=n_max)
    assert_parity(out, stats, text, result)
    assert stats["n_drafted"] > 0


# --- the n-gram methods that copy the context's own history (common/ngram-map.cpp) ---
# The registry builds both sides: llama.cpp's flags (methods.native_flags) and specsweep's drafter.
# Damped models (branch_scale 0.05) fall into the repetition these methods draft from; k4v drafts
# only once an m-gram dominates after a key seen min_hits times.
@pytest.mark.parametrize("card,method,params", [
    (card, method, params) for card in ("qwen3-30b-a3b", "qwen3.6-35b-a3b") for method, params in [
        ("ngram-simple", {"size_n": 3, "size_m": 8}),
        ("ngram-map-k", {"size_n": 3, "size_m": 8, "min_hits": 1}),
        ("ngram-map-k4v", {"size_n": 1, "size_m": 4, "min_hits": 1})]
] + [("qwen3-30b-a3b", "ngram-map-k4v", {"size_n": 3, "size_m": 8, "min_hits": 2})])
def test_ngram_map_methods_match_llama_cpp(tiny_model, card, method, params):
    target = tiny_model(card, branch_scale=0.05)
    settings = {"method": method, **params}
    out, stats = native(target, LOOPY, methods.native_flags(settings))
    make = methods.get(method).make
    text, result = ours(target, LOOPY, lambda: make(settings, methods.DrafterContexts(None, None)))
    assert_parity(out, stats, text, result)
    assert stats["n_drafted"] > 0 and stats["n_accept"] > 0


# EAGLE-3 (three target layers, the last one the final hidden state at tiny scale: layer ids 1, 2, 4
# of 4) and DSpark (the dflash arch with a Markov head; sample_from_anchor drafts the whole block),
# both random, so mostly rejected: every step exercises the target's snapshot rollback.
@pytest.mark.parametrize("method,card,n_max,variant,p_min", [
    ("eagle3", "qwen3.6-35b-a3b-eagle3", 3, {}, 0.0),
    ("eagle3", "qwen3.6-35b-a3b-eagle3", 6, {"own_embeddings": True}, 0.0),
    ("dspark", "qwen3.6-35b-a3b-dspark", 4, {}, 0.0),
    ("dspark", "qwen3.6-35b-a3b-dspark", 8, {}, 0.5),  # p_min reads the confidence head
    ("dspark", "qwen3.6-35b-a3b-dspark", 16, {"sample_from_anchor": False}, 0.0),
])
def test_hidden_state_drafters_match_llama_cpp(tiny_model, model_dir, method, card, n_max, variant, p_min):
    from specsweep.synth.cards import CARDS
    from specsweep.synth.writer import Recipe, write_model

    target = tiny_model("qwen3.6-35b-a3b", branch_scale=0.05)
    drafter = model_dir / f"{card}-{'-'.join(f'{k}{v}' for k, v in variant.items())}.gguf"
    if not drafter.is_file():
        write_model(Recipe(CARDS[card].at_scale("tiny"), "tiny", "Q4_0", 0, branch_scale=0.05, **variant), drafter)
    settings = methods.with_defaults({"method": method, "draft_max": n_max, "draft_min": 0, "p_min": p_min})
    out, stats = native(target, TEXT, ["-md", str(drafter), "-ngld", "0", *methods.native_flags(settings)])
    make = methods.get(method).make
    text, result = ours(target, TEXT, lambda dctx, ctx: make(settings, methods.DrafterContexts(dctx, ctx)), drafter,
                        kind="dflash", n_rs_seq=n_max)
    assert_parity(out, stats, text, result)
    assert stats["n_drafted"] > 0
