"""DFlash and MTP: drafters that read the target's hidden states. The synthetic drafter and MTP
layer load and run in the real llama.cpp, greedy speculative decoding with them is lossless, and a
drafter or target that does not fit is refused from its header with one line."""

from __future__ import annotations

import ctypes
import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.engine import runtime
from specsweep.engine.drafters import DFlash, Mtp
from specsweep.engine.speculative import run_trial
from specsweep.errors import SpecsweepError
from specsweep.models.drafter_fit import check_dflash, check_mtp
from specsweep.synth.cards import CARDS
from specsweep.synth.writer import Recipe, write_model
from tests.conftest import PROMPT

A3B = "qwen3.6-35b-a3b"
OPTS = runtime.ContextOptions(n_ctx=512, n_batch=64, type_kv="f16", n_threads=2)
N = 40


def test_mtp_layer_leaves_the_trunk_bit_identical(tiny_model):
    """Adding the MTP layer changes no other tensor: the same target with and without it."""
    with runtime.Model(tiny_model(A3B, branch_scale=0.05)) as plain, \
            runtime.Model(tiny_model(A3B, branch_scale=0.05, mtp=True), load_mtp=True) as with_mtp:
        prompt = plain.tokenize(PROMPT)
        assert runtime.greedy(plain, prompt, N) == runtime.greedy(with_mtp, prompt, N)


@pytest.mark.parametrize("n_max", [1, 3])
def test_mtp_is_lossless_and_follows_its_target(tiny_model, n_max):
    with runtime.Model(tiny_model(A3B, branch_scale=0.05, mtp=True), (), load_mtp=True) as model, \
            runtime.Context(model, OPTS) as ctx:
        prompt = model.tokenize(PROMPT)
        plain = run_trial(ctx, prompt, N).tokens
        ctx.clear()
        with runtime.Context(model, dataclasses.replace(OPTS, ctx_type="mtp"), other=ctx) as mctx:
            result = run_trial(ctx, prompt, N, Mtp(mctx, ctx, n_max=n_max))
    assert result.tokens[:N] == plain[:N]
    assert result.n_drafted > 0 and result.acceptance > 0.5  # the head passes the token embedding on


def test_mtp_rows_by_address_pair_each_token_with_the_staged_row(tiny_model, monkeypatch):
    """The head's two ways of taking the target's rows: staged beside the tokens (Qwen3.5/3.6, whose
    head reads n_embd_inp = n_embd rows) and by address into an extended batch (a head whose input
    width differs; no card has one, so the path is forced here). Every (token, row) the head is
    given, read back as llama.cpp reads it, is the same in both, and so are the drafts."""
    given: list = []
    staged_decode, add_row = runtime.Context.decode_staged, runtime.ExtBatch.add_row

    def record_staged(ctx, entries, logits=True):
        rows = iter(ctx._staging)
        given.extend((t, next(rows).tobytes()) for _, tokens, _ in entries for t in tokens)
        return staged_decode(ctx, entries, logits)

    def record_row(batch, pos, token, addr, width=0, output=False, seq=0):
        if addr is not None:
            row = (ctypes.c_float * width).from_address(addr)
            given.append((token, bytes(row)))
        return add_row(batch, pos, token, addr, width, output, seq)

    monkeypatch.setattr(runtime.Context, "decode_staged", record_staged)
    monkeypatch.setattr(runtime.ExtBatch, "add_row", record_row)
    with runtime.Model(tiny_model(A3B, branch_scale=0.05, mtp=True), (), load_mtp=True) as model, \
            runtime.Context(model, OPTS) as ctx:
        prompt, runs = model.tokenize(PROMPT), []
        for staged in (True, False):
            ctx.clear()
            given.clear()
            with runtime.Context(model, dataclasses.replace(OPTS, ctx_type="mtp"), other=ctx) as mctx:
                head = Mtp(mctx, ctx, n_max=3)
                assert head.staged  # the card's own path
                head.staged = staged
                result = run_trial(ctx, prompt, N, head)
            runs.append((list(given), result.drafted_by_pos, result.accepted_by_pos))
    (a, b) = runs
    assert len(a[0]) > N and a == b


@pytest.mark.parametrize("n_max", [4, 16])
def test_dflash_is_lossless_and_clamps_to_its_block(tiny_model, n_max):
    drafter_path = tiny_model(A3B + "-dflash", branch_scale=0.05)
    with runtime.Model(tiny_model(A3B, branch_scale=0.05), ()) as model, runtime.Context(model, OPTS) as ctx, \
            runtime.Model(drafter_path, ()) as dmodel:
        prompt = model.tokenize(PROMPT)
        plain = run_trial(ctx, prompt, N).tokens
        ctx.clear()
        with runtime.Context(dmodel, OPTS, other=ctx) as dctx:
            drafter = DFlash(dctx, ctx, n_max=n_max)
            result = run_trial(ctx, prompt, N, drafter)
    assert drafter.n_max == min(n_max, CARDS[A3B + "-dflash"].block_size - 1)
    assert result.tokens[:N] == plain[:N]
    assert result.n_drafted > 0 and max(result.drafted_by_pos) and len(result.drafted_by_pos) == drafter.n_max


def test_dflash_drafter_without_the_target_context_is_refused(tiny_model):
    with runtime.Model(tiny_model(A3B + "-dflash"), ()) as dmodel:
        with pytest.raises(SpecsweepError, match="ctx_other"):
            runtime.Context(dmodel, OPTS)


def _drafter(tmp_path: Path, **changes) -> Path:
    card = dataclasses.replace(CARDS[A3B + "-dflash"].at_scale("tiny"), **changes)
    path = tmp_path / "drafter.gguf"
    write_model(Recipe(card, "tiny", "Q4_0"), path)
    return path


def test_header_checks_refuse_what_does_not_fit(tmp_path, tiny_model):
    target = tiny_model(A3B)
    check_dflash("t", target, "d", tiny_model(A3B + "-dflash"))  # the pair that fits
    with pytest.raises(SpecsweepError, match=r"reads target layers \[9\], but t has 4 layers"):
        check_dflash("t", target, "d", _drafter(tmp_path, target_layers=(1, 9)))
    with pytest.raises(SpecsweepError, match="has hidden size 128, t has 192"):
        check_dflash("t", tiny_model("qwen3.5-122b-a10b"), "d", tiny_model(A3B + "-dflash"))
    with pytest.raises(SpecsweepError, match="is not a DFlash drafter"):
        check_dflash("t", target, "d", tiny_model("qwen3.5-0.8b"))
    with pytest.raises(SpecsweepError, match="cannot speculate for target t"):  # another vocabulary family
        check_dflash("t", tiny_model("qwen3-30b-a3b"), "d", tiny_model(A3B + "-dflash"))
    with pytest.raises(SpecsweepError, match="has no MTP layers"):
        check_mtp("t", target)
    check_mtp("t", tiny_model(A3B, mtp=True))


def test_run_refuses_mtp_on_a_target_without_mtp_layers(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    matrix = tmp_path / "m.toml"
    matrix.write_text('name = "m"\n[models]\nt = { synth = "qwen3.6-35b-a3b", scale = "tiny" }\n'
                      '[defaults]\ntarget = "t"\ngpus = []\nn_predict = 8\ntrials = 1\n'
                      '[[cell]]\nmethod = "baseline"\n[[cell]]\nmethod = "mtp"\n')
    out = CliRunner().invoke(main, ["run", str(matrix), "--results", str(tmp_path / "results")])
    assert out.exit_code == 2, out.output
    assert "model t has no MTP layers" in out.output and "Traceback" not in out.output
    assert not list((tmp_path / "results").rglob("trials*.jsonl"))
