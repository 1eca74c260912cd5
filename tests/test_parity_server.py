"""Parity with llama.cpp's own `llama-server` for the loop specsweep runs synthetic acceptance in
(engine/server_loop.py): for the same tiny models, prompt (as token ids), settings and seed, the
same generated tokens and the same drafted and accepted counts (the server's `draft_n` and
`draft_n_accepted`).

Synthetic acceptance exists only in the server (`--spec-synth-len` / `--spec-synth-rates`), so
this is where specsweep's mt19937 draws, its rate resolution, the server's per-step choice between
checkpoint and snapshot and its replay counting are checked. The server is built from the same
vendored source by scripts/build-native.sh and runs on the wheel's libllama/libggml.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from specsweep import methods
from specsweep.engine import runtime, synthetic
from specsweep.engine.llama_server import LlamaServer
from specsweep.engine.native import native_env
from specsweep.engine.server_loop import Synth, run_trial_server
from specsweep.models.fit import native_bin

NATIVE = native_bin()
SERVER = NATIVE / "llama-server"
N_PREDICT, N_CTX, N_BATCH, THREADS = 48, 1024, 512, 2
SEED = 1234
TEXT = "The quick brown fox jumps over the lazy dog. def main(argv=None):"
LOOPY = " ".join(["for i in range(10): total = total + values[i] * weights[i]"] * 4)

if not SERVER.is_file():
    if os.environ.get("SPECSWEEP_REQUIRE_NATIVE") == "1":
        pytest.fail(f"{SERVER} is missing: run scripts/build-native.sh", pytrace=False)
    pytest.skip(f"native llama-server not built ({SERVER}); run scripts/build-native.sh", allow_module_level=True)


def served(tmp_path: Path, target: Path, tokens: list[int], settings: dict, draft: Path | None = None) -> dict:
    args = ["-m", str(target), "-c", str(N_CTX), "-b", str(N_BATCH), "-ub", str(N_BATCH), "-t", str(THREADS),
            "-tb", str(THREADS), "-fa", "on", "-ctk", "f16", "-ctv", "f16", "-ngl", "0", "-np", "1", "--fit", "off",
            *(["-md", str(draft), "-ngld", "0"] if draft else []), *methods.native_flags(settings)]
    with LlamaServer(SERVER, args, tmp_path / "server.log", env=native_env(SERVER)) as server:
        answer = server.complete(tokens, N_PREDICT, SEED)
    timings = answer["timings"]
    return {"tokens": answer["tokens"], "drafted": timings.get("draft_n", 0),
            "accepted": timings.get("draft_n_accepted", 0)}


def ours(target: Path, prompt: str, settings: dict, draft: Path | None = None) -> tuple[list[int], dict]:
    m = methods.get(settings["method"])
    opts = runtime.ContextOptions(n_ctx=N_CTX, n_batch=N_BATCH, type_kv="f16", flash_attn=True, n_threads=THREADS)
    # llama.cpp gives a hybrid target draft.n_max snapshots for drafters that read its hidden states
    n_rs = m.n_max(settings) if m.context in ("drafter", "mtp") else 0
    with runtime.Model(target, (), load_mtp=m.context == "mtp") as model, \
            runtime.Context(model, dataclasses.replace(opts, n_rs_seq=n_rs)) as ctx:
        tokens = model.tokenize(prompt)
        dmodel = runtime.Model(draft, ()) if draft else None
        try:
            dctx = None
            if m.context == "draft":
                dctx = runtime.Context(dmodel, opts)
            elif m.context == "drafter":
                dctx = runtime.Context(dmodel, opts, other=ctx)
            elif m.context == "mtp":
                dctx = runtime.Context(model, dataclasses.replace(opts, ctx_type="mtp"), other=ctx)
            drafter = m.make(settings, methods.DrafterContexts(dctx, ctx))
            synth = None
            if settings.get("synth_len") is not None or settings.get("synth_rates"):
                rates = synthetic.resolve_rates(settings.get("synth_len"), settings.get("synth_rates"), drafter.n_max)
                synth = Synth(synthetic.conditional(rates), SEED)
            result = run_trial_server(ctx, tokens, N_PREDICT, drafter, synth)
        finally:
            if dctx is not None:
                dctx.close()
            if dmodel is not None:
                dmodel.close()
    return tokens, {"tokens": result.tokens, "drafted": result.n_drafted, "accepted": result.n_accepted}


def check(tmp_path, target, prompt, settings, draft=None):
    # both sides' KV caches are f16 (the contexts below; -ctk/-ctv and, through the method's flags,
    # -ctkd/-ctvd on the server)
    settings = methods.with_defaults({**settings, "kv": "f16"})
    tokens, mine = ours(target, prompt, settings, draft)
    theirs = served(tmp_path, target, tokens, settings, draft)
    assert mine["tokens"] == theirs["tokens"], "generated tokens differ from llama-server's"
    assert (mine["drafted"], mine["accepted"]) == (theirs["drafted"], theirs["accepted"])
    return mine


@pytest.mark.parametrize("card", ["qwen3-30b-a3b", "qwen3.6-35b-a3b"])
@pytest.mark.parametrize("synth", [{"synth_len": 2.5}, {"synth_rates": [0.9, 0.6, 0.3, 0.1]}, {}])
def test_draft_model_synthetic_acceptance_matches_llama_server(tmp_path, tiny_model, card, synth):
    """A hybrid target checkpoints its recurrent state (no snapshots for draft-simple) and replays
    after every partial acceptance; the attention-only target drops the tail with seq_rm."""
    target = tiny_model(card)
    draft = tiny_model(card, perturb=0.2)
    mine = check(tmp_path, target, TEXT, {"method": "draft", "draft_max": 4, "draft_min": 0, **synth}, draft)
    assert mine["drafted"] > 0 and mine["accepted"] > 0


# The server decodes the whole prompt and drafts first after its own first token, so a key of one
# token (n_match 1, size_n 1) is what finds the prompt's loop again on a random model; accepted
# synthetic drafts then continue the copied text and keep the methods drafting.
@pytest.mark.parametrize("settings", [
    {"method": "ngram-mod", "n_match": 1, "draft_min": 1, "draft_max": 8},
    {"method": "ngram-simple", "size_n": 1, "size_m": 6},
    {"method": "ngram-map-k4v", "size_n": 1, "size_m": 6, "min_hits": 1},
])
@pytest.mark.parametrize("synth", [{"synth_len": 3.0}, {"synth_rates": [0.95, 0.9, 0.5, 0.4, 0.2, 0.1]}])
def test_ngram_synthetic_acceptance_matches_llama_server(tmp_path, tiny_model, settings, synth):
    target = tiny_model("qwen3.6-35b-a3b")
    if "synth_rates" in synth and settings["method"] == "ngram-mod":
        synth = {"synth_rates": synth["synth_rates"] + [0.05, 0.0]}  # ngram-mod's limit is 8
    mine = check(tmp_path, target, LOOPY, {**settings, **synth})
    assert mine["drafted"] > 0


@pytest.mark.parametrize("synth", [{"synth_len": 2.0}, {"synth_rates": [0.7, 0.3, 0.1]}])
def test_mtp_synthetic_acceptance_matches_llama_server(tmp_path, tiny_model, synth):
    target = tiny_model("qwen3.6-35b-a3b", branch_scale=0.05, mtp=True)
    mine = check(tmp_path, target, TEXT, {"method": "mtp", "draft_max": 3, **synth})
    assert mine["accepted"] > 0


def test_dflash_synthetic_acceptance_matches_llama_server(tmp_path, tiny_model):
    """n_max 16 is clamped to the block size - 1 = 15 before the rates are resolved, as llama.cpp
    resolves them after initialising its implementations."""
    target = tiny_model("qwen3.6-35b-a3b", branch_scale=0.05)
    drafter = tiny_model("qwen3.6-35b-a3b-dflash", branch_scale=0.05)
    mine = check(tmp_path, target, TEXT, {"method": "dflash", "draft_max": 16, "synth_len": 4.0}, drafter)
    assert mine["accepted"] > 0
