"""EAGLE-3 and DSpark drafters for the 35B-A3B: the synthetic cards load and run in the real
llama.cpp as its own speculative code drives them (an EAGLE-3 encode of 3 x n_embd feature rows, then
a decode of (token, g) pairs; a DSpark block decode over injected target features), their full
shapes have the published parameter counts, and every pairing that does not fit is refused from
the GGUF headers with one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gguf
import llama_cpp as ll
import numpy as np
import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.engine import ext, runtime
from specsweep.errors import SpecsweepError
from specsweep.matrix.models import parse_models, resolve
from specsweep.models.drafter_fit import (check_cell_models, check_dflash, check_dspark, check_eagle3, dspark_layout,
                                          eagle3_layout, pairing)
from specsweep.synth.cards import CARDS
from specsweep.synth.fill import pool_size
from specsweep.synth.tensors import tensor_specs
from specsweep.synth.writer import Recipe, planned_bytes, write_model
from specsweep.models.fit import native_bin
from tests.conftest import PROMPT

A3B = "qwen3.6-35b-a3b"
EAGLE3, DSPARK = A3B + "-eagle3", A3B + "-dspark"
OPTS = runtime.ContextOptions(n_ctx=256, n_batch=64, type_kv="f16", n_threads=2)
TOOL = native_bin() / "llama-speculative-simple"


@pytest.fixture(scope="module")
def drafter(model_dir):
    """drafter(card, **changes/options) -> a tiny drafter GGUF: card fields in `changes`, recipe
    options (conf_head, sample_from_anchor, own_embeddings) passed to the Recipe."""
    made: dict[tuple, Path] = {}

    def make(card: str, **kw) -> Path:
        key = (card, tuple(sorted(kw.items())))
        if key not in made:
            options = {k: kw.pop(k) for k in ("conf_head", "sample_from_anchor", "own_embeddings") if k in kw}
            shape = dataclasses.replace(CARDS[card].at_scale("tiny"), **kw)
            path = model_dir / f"{card}-{len(made)}.gguf"
            write_model(Recipe(shape, "tiny", "Q4_0", **options), path)
            made[key] = path
        return made[key]

    return make


def n_params(card) -> int:
    return sum(s.n_elements for s in tensor_specs(card))


# --- full shapes ---------------------------------------------------------------------------------

def test_full_eagle3_shape_has_the_published_sizes():
    card = CARDS[EAGLE3]
    core = n_params(card)  # fc, the decoder layer and the output norm; embeddings and head borrowed
    own = n_params(dataclasses.replace(card, own_embeddings=True))
    embd = card.n_embd * card.n_vocab
    print(f"\n{EAGLE3}: {core / 1e6:.1f} M without embeddings, {own / 1e9:.3f} B with its own token_embd/output")
    assert own == core + 2 * embd
    # the same shape on the targets published EAGLE-3 drafters were trained for, counted as their
    # checkpoints count (their own input embeddings, a reduced-vocabulary head):
    # Ichigec/a1-agents-eagle3-speculator (Qwen3.5-35B-A3B, 8192-token head): 0.6 B
    assert round((core + embd + card.n_embd * 8192) / 1e9, 1) == 0.6
    # RedHatAI/Qwen3-30B-A3B-Instruct-2507-speculator.eagle3 (151936 tokens, 32000-token head): 0.5 B
    assert round((core + card.n_embd * 151936 + card.n_embd * 32000) / 1e9, 1) == 0.5


def test_full_dspark_shape_is_the_dflash_blocks_plus_the_markov_and_confidence_heads():
    card = CARDS[DSPARK]
    total, blocks = n_params(card), n_params(dataclasses.replace(card, markov_rank=0))
    print(f"\n{DSPARK}: {total / 1e9:.3f} B ({blocks / 1e9:.3f} B DFlash blocks, an estimate: no 35B-A3B "
          f"DSpark config is published)")
    assert total - blocks == 2 * card.markov_rank * card.n_vocab + (card.n_embd + card.markov_rank) + 1


def test_full_drafters_load_in_llama_cpp_with_these_counts(tmp_path):
    runtime.init()
    for name in (EAGLE3, DSPARK):
        path = tmp_path / f"{name}.gguf"
        write_model(Recipe(CARDS[name], "full", "Q4_0"), path)
        with runtime.Model(path, ()) as model:
            assert ll.llama_model_n_params(model.ptr) == n_params(CARDS[name])
            assert model.n_vocab == 248320 and model.n_embd == 2048
        path.unlink()


# --- llama.cpp loads and runs them ----------------------------------------------------------------

def target_features(ctx: runtime.Context, layers: list[int], n: int) -> np.ndarray:
    """Per token, the concatenation llama.cpp's drafters read: a layer's input, or for an id equal
    to the target's layer count its final hidden state."""
    depth = ll.llama_model_n_layer(ctx.model.ptr)
    return np.concatenate([ctx.layer_input(lid, n) if lid < depth else ctx.hidden_rows(n) for lid in layers],
                          axis=1).copy()


@pytest.mark.parametrize("own", [False, True])
def test_eagle3_encodes_features_and_drafts_from_g(tiny_model, drafter, own):
    """common_speculative_impl_draft_eagle3's protocol: the encoder turns 3 x n_embd features into
    g, the decoder reads (token p+1, g p) at p, and drafts on from its own pre-norm state."""
    with runtime.Model(tiny_model(A3B), ()) as tmodel, runtime.Context(tmodel, OPTS) as ctx, \
            runtime.Model(drafter(EAGLE3, own_embeddings=own), ()) as dmodel:
        layers = ext.target_layer_ids(dmodel.ptr)
        depth = ll.llama_model_n_layer(tmodel.ptr)
        assert layers == list(CARDS[EAGLE3].at_scale("tiny").target_layers) and layers[-1] == depth == 4
        for lid in layers:
            if lid < depth:
                ext.call("set_embeddings_layer_inp", ctx.ptr, lid, True)
        ctx.output_hidden(masked=False)  # the final hidden state, layer id == depth
        prompt = tmodel.tokenize(PROMPT)
        n = len(prompt)
        ctx.decode(prompt, 0)
        id_last = ctx.argmax()
        features = target_features(ctx, layers, n)
        assert features.shape == (n, 3 * tmodel.n_embd)

        with runtime.Context(dmodel, OPTS, other=ctx) as dctx:
            dctx.output_hidden(masked=True)
            batch = dctx.ext_batch()
            for i in range(n):
                batch.add(i, embd=features[i])
            assert ll.llama_process(dctx.ptr, ll.LLAMA_PROCESS_TYPE_ENCODE, batch.ptr) == 0
            g = dctx.hidden_rows(n).copy()
            assert g.shape == (n, dmodel.n_embd) and np.isfinite(g).all()
            assert 0.3 < float(np.sqrt((g ** 2).mean())) < 5  # fc keeps the features' scale

            batch = dctx.ext_batch()
            for p in range(n - 1):
                batch.add(p, token=prompt[p + 1], embd=g[p])
            batch.add(n - 1, token=id_last, embd=g[n - 1], output=True)
            dctx.process(batch)
            drafts, logits = [], []
            for step in range(3):
                i = n - 1 if step == 0 else 0
                row = dctx.logits(i).copy()
                logits.append(row)
                drafts.append(int(row.argmax()))
                h = dctx.hidden(i).copy()  # the pre-norm state: the next step's g
                batch = dctx.ext_batch()
                batch.add(n + step, token=drafts[-1], embd=h, output=True)
                dctx.process(batch)
        logits = np.stack(logits)
        assert logits.shape == (3, tmodel.n_vocab) and np.isfinite(logits).all()
        assert (0.3 < logits.std(axis=1)).all() and (logits.std(axis=1) < 3).all()
        assert all(0 <= t < tmodel.n_vocab for t in drafts)


def test_eagle3_without_embeddings_needs_the_target_context_and_with_them_does_not(drafter):
    with runtime.Model(drafter(EAGLE3), ()) as dmodel:
        with pytest.raises(SpecsweepError, match="ctx_other"):
            runtime.Context(dmodel, OPTS)
    with runtime.Model(drafter(EAGLE3, own_embeddings=True), ()) as dmodel, runtime.Context(dmodel, OPTS):
        pass


def test_eagle3_with_other_than_three_layers_does_not_load(drafter):
    with pytest.raises(SpecsweepError, match="exactly 3"):
        runtime.Model(drafter(EAGLE3, target_layers=(1, 2)), ())


def dspark_block(target_path: Path, drafter_path: Path, n_block: int):
    """Inject the target's features for the prompt, then decode one block [id_last, mask...] as
    llama.cpp's draft-dspark does; (logits per slot, the confidence rows or None)."""
    with runtime.Model(target_path, ()) as tmodel, runtime.Context(tmodel, OPTS) as ctx, \
            runtime.Model(drafter_path, ()) as dmodel:
        layers = ext.target_layer_ids(dmodel.ptr)
        ctx.extract_layer_inputs(layers)
        prompt = tmodel.tokenize(PROMPT)
        n = len(prompt)
        ctx.decode(prompt, 0)
        id_last = ctx.argmax()
        features = target_features(ctx, layers, n)
        with runtime.Context(dmodel, OPTS, other=ctx) as dctx:
            dctx.output_hidden(masked=True)
            dctx.set_causal(False)
            batch = dctx.ext_batch()
            for i in range(n):
                batch.add(i, embd=features[i])
            dctx.process(batch)
            mask = ll.llama_vocab_mask(dmodel.vocab)
            batch = dctx.ext_batch()
            for i in range(n_block):
                batch.add(n + i, token=id_last if i == 0 else mask, output=True)
            dctx.process(batch)
            logits = np.stack([dctx.logits(i) for i in range(n_block)]).copy()
            has_head = any(t.name == "conf_proj.weight" for t in gguf.GGUFReader(drafter_path).tensors)
            conf = dctx.hidden_rows(n_block).copy() if has_head else None
    return logits, conf


@pytest.mark.parametrize("anchor", [True, False])
def test_dspark_markov_head_biases_the_block(tiny_model, drafter, anchor):
    """The same blocks with and without the Markov head: the head changes every predicted slot's
    logits, and with a bonus anchor (sample_from_anchor false) leaves slot 0 as it was."""
    card = CARDS[DSPARK].at_scale("tiny")
    dspark, plain = drafter(DSPARK, sample_from_anchor=anchor), drafter(DSPARK, markov_rank=0)
    # equal pools give the shared tensors equal bytes (tensors are windows keyed by name)
    assert pool_size(planned_bytes(Recipe(dataclasses.replace(card, markov_rank=0), "tiny", "Q4_0"))) == \
        pool_size(planned_bytes(Recipe(card, "tiny", "Q4_0", sample_from_anchor=anchor)))
    n_block = 6
    base, _ = dspark_block(tiny_model(A3B), plain, n_block)
    biased, conf = dspark_block(tiny_model(A3B), dspark, n_block)
    assert np.isfinite(biased).all() and (biased.std(axis=1) < 3).all()
    moved = [not np.allclose(a, b, atol=1e-4) for a, b in zip(base, biased)]
    assert moved == [anchor] + [True] * (n_block - 1)
    # the confidence head: one sigmoid per slot, broadcast over the row
    assert conf is not None and conf.shape == (n_block, CARDS[DSPARK].at_scale("tiny").n_embd)
    assert ((0 < conf) & (conf < 1)).all() and np.allclose(conf, conf[:, :1])


def test_dspark_variants_carry_llama_cpp_keys_and_tensors(drafter):
    for head in (True, False):
        for anchor in (True, False):
            path = drafter(DSPARK, conf_head=head, sample_from_anchor=anchor)
            names = {t.name for t in gguf.GGUFReader(path).tensors}
            assert {"markov_w1.weight", "markov_w2.weight"} <= names
            assert ("conf_proj.weight" in names) == head and ("conf_proj.bias" in names) == head
            layout = dspark_layout(path)
            assert (layout.has_conf_head, layout.sample_from_anchor) == (head, anchor)
            assert layout.n_draft_max == (16 if anchor else 15) and layout.markov_rank == 32
            with runtime.Model(path, ()) as m:  # llama.cpp reads the keys as the strings it compares
                assert m.meta("dflash.has_confidence_head") == str(head).lower()
                assert m.meta("dflash.sample_from_anchor") == str(anchor).lower()


def test_dspark_without_confidence_head_decodes_its_block(tiny_model, drafter):
    logits, conf = dspark_block(tiny_model(A3B), drafter(DSPARK, conf_head=False), 4)
    assert conf is None and np.isfinite(logits).all()


# --- header checks ---------------------------------------------------------------------------------

def patched(src: Path, dst: Path, key: str, value=None, rename: str | None = None) -> Path:
    """A copy of a GGUF with one scalar key's value changed, or the key renamed (so it is absent)."""
    dst.write_bytes(src.read_bytes())
    reader = gguf.GGUFReader(dst, "r+")
    f = reader.fields[key]
    if rename is not None:
        assert len(rename) == len(key)
        f.parts[1][:] = np.frombuffer(rename.encode(), dtype=np.uint8)
    else:
        f.parts[f.data[0]][0] = value
    reader.data.flush()
    del reader
    return dst


def test_eagle3_header_checks(tmp_path, tiny_model, drafter):
    target = tiny_model(A3B)
    check_eagle3("t", target, "d", drafter(EAGLE3))  # layer 4 == the target's 4 layers: its final state
    check_eagle3("t", target, "d", drafter(EAGLE3, own_embeddings=True))
    layout = eagle3_layout(drafter(EAGLE3))
    assert layout.target_layers == (1, 2, 4) and not layout.own_token_embd and not layout.own_output
    assert layout.target_hidden_size == 128 and not layout.norm_before_residual

    refusals = [
        (target, drafter(DSPARK), "model d is not an EAGLE-3 drafter"),
        (target, drafter(EAGLE3, target_layers=(1, 2)), r"names 2 target layers .*needs exactly 3"),
        (target, drafter(EAGLE3, target_layers=(1, 2, 5)), r"reads target layers \[5\], but t has 4 layers"),
        (target, drafter(EAGLE3, target_n_embd=192), r"features of size 192 .* t has hidden size 128"),
        (tiny_model("qwen3.5-122b-a10b"), drafter(EAGLE3), r"features of size 128 .* t has hidden size 192"),
        (target, patched(drafter(EAGLE3, target_n_embd=192), tmp_path / "fc.gguf", "eagle3.target_hidden_size", 128),
         r"fc reads 576 features, but 3 layers of t give 384"),
        (target, drafter(EAGLE3, n_embd=64, head_dim=16, target_n_embd=128),
         r"has hidden size 64 but borrows the token embeddings of t"),
        (target, drafter(EAGLE3, own_embeddings=True, n_vocab=1536),
         r"embeds 1536 tokens, but t's vocabulary has 2048"),
        (tiny_model("qwen3-30b-a3b"), drafter(EAGLE3), "cannot speculate for target t"),  # another vocabulary
    ]
    for target_path, drafter_path, needle in refusals:
        with pytest.raises(SpecsweepError, match=needle) as err:
            check_eagle3("t", target_path, "d", drafter_path)
        assert "\n" not in str(err.value)
    # own embeddings and head of its own width: nothing borrowed, so a narrower drafter fits
    check_eagle3("t", target, "d", drafter(EAGLE3, own_embeddings=True, n_embd=64, head_dim=16, target_n_embd=128))


def test_dspark_header_checks(tmp_path, tiny_model, drafter):
    target = tiny_model(A3B)
    check_dspark("t", target, "d", drafter(DSPARK), p_min=0.75)
    check_dspark("t", target, "d", drafter(DSPARK, conf_head=False), p_min=0.0)
    no_head = drafter(DSPARK, conf_head=False)
    refusals = [
        (target, drafter(A3B + "-dflash"), 0.0, "model d is not a DSpark drafter: it has no Markov head"),
        (target, drafter(EAGLE3), 0.0, r"model d is not a DSpark drafter \(architecture 'eagle3'\)"),
        (target, no_head, 0.5, r"has no confidence head .*p_min 0.5.*--spec-draft-p-min 0"),
        (target, patched(no_head, tmp_path / "claims.gguf", "dflash.has_confidence_head", True), 0.5,
         "claims a confidence head but has no conf_proj"),
        (target, patched(drafter(DSPARK), tmp_path / "noblock.gguf", "dflash.block_size",
                         rename="dflash.block_sizX"), 0.0, "has no dflash.block_size"),
        (target, drafter(DSPARK, target_layers=(1, 9)), 0.0, r"DSpark drafter d reads target layers \[9\]"),
        (tiny_model("qwen3.5-122b-a10b"), drafter(DSPARK), 0.0, "DSpark drafter d has hidden size 128, t has 192"),
        (tiny_model("qwen3-30b-a3b"), drafter(DSPARK), 0.0, "cannot speculate for target t"),
    ]
    for target_path, drafter_path, p_min, needle in refusals:
        with pytest.raises(SpecsweepError, match=needle) as err:
            check_dspark("t", target_path, "d", drafter_path, p_min=p_min)
        assert "\n" not in str(err.value)
    # a DSpark file is still a DFlash drafter to check_dflash (llama.cpp runs it as draft-dflash)
    check_dflash("t", target, "d", drafter(DSPARK))


def test_cell_checks_route_eagle3_and_dspark(tiny_model, drafter):
    @dataclasses.dataclass(frozen=True)
    class Ref:
        name: str
        path: Path

    models = {"target": Ref("t", tiny_model(A3B)), "drafter": Ref("d", drafter(DSPARK, conf_head=False))}
    none = lambda r: ()  # noqa: E731 (no override_kv)
    check_cell_models(models, "dspark", lambda r: r.path, {"p_min": 0.0}, none)
    with pytest.raises(SpecsweepError, match="no confidence head"):
        check_cell_models(models, "dspark", lambda r: r.path, {"p_min": 0.5}, none)
    with pytest.raises(SpecsweepError, match="not an EAGLE-3 drafter"):
        check_cell_models(models, "eagle3", lambda r: r.path, {}, none)
    assert pairing("dspark", models, {"p_min": 0.5}) != pairing("dspark", models, {"p_min": 0.0})
    assert pairing("eagle3", models, {"p_min": 0.5}) == pairing("eagle3", models, {"p_min": 0.0})


# --- command line and matrix entries ------------------------------------------------------------

def test_synth_command_writes_the_drafters_and_refuses_misplaced_options(tmp_path):
    run = CliRunner()
    out = run.invoke(main, ["synth", EAGLE3, "--scale", "tiny", "--own-embeddings", "-o", str(tmp_path / "e.gguf")])
    assert out.exit_code == 0, out.output
    assert eagle3_layout(tmp_path / "e.gguf").own_output
    out = run.invoke(main, ["synth", DSPARK, "--scale", "tiny", "--no-conf-head", "--no-sample-from-anchor",
                            "-o", str(tmp_path / "s.gguf")])
    assert out.exit_code == 0, out.output
    layout = dspark_layout(tmp_path / "s.gguf")
    assert not layout.has_conf_head and not layout.sample_from_anchor
    out = run.invoke(main, ["synth", "--like", str(tmp_path / "s.gguf"), "--identical", "-o", str(tmp_path / "c.gguf")])
    assert out.exit_code == 0 and (tmp_path / "c.gguf").read_bytes() == (tmp_path / "s.gguf").read_bytes()
    for args in (["synth", A3B, "--conf-head"], ["synth", DSPARK, "--own-embeddings"]):
        out = run.invoke(main, [*args, "--scale", "tiny", "-o", str(tmp_path / "x.gguf")])
        assert out.exit_code == 2 and "Traceback" not in out.output and "is not one" in out.output


def test_matrix_entries_resolve_and_old_identities_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    refs = parse_models({
        "e": {"synth": EAGLE3, "scale": "tiny"},
        "s": {"synth": DSPARK, "scale": "tiny", "conf_head": False, "sample_from_anchor": False},
        "t": {"synth": A3B, "scale": "tiny"},
    }, tmp_path / "m.toml")
    assert refs["t"].identity == {"synth": A3B, "scale": "tiny"}  # no option keys unless written
    assert eagle3_layout(resolve(refs["e"], tmp_path / "m.toml")).target_layers == (1, 2, 4)
    spath = resolve(refs["s"], tmp_path / "m.toml")
    assert not dspark_layout(spath).has_conf_head and "conf_head=false" in refs["s"].describe()
    with pytest.raises(SpecsweepError, match="own_embeddings shapes an EAGLE-3 drafter"):
        parse_models({"x": {"synth": DSPARK, "own_embeddings": True}}, tmp_path / "m.toml")
    with pytest.raises(SpecsweepError, match="wrong type"):
        parse_models({"x": {"synth": DSPARK, "conf_head": 1}}, tmp_path / "m.toml")


# --- llama.cpp's own tool ---------------------------------------------------------------------------

@pytest.mark.skipif(not TOOL.is_file(), reason=f"native llama-speculative-simple not built ({TOOL})")
@pytest.mark.parametrize("spec_type, card, p_min", [("draft-eagle3", EAGLE3, "0.0"), ("draft-dspark", DSPARK, "0.0"),
                                                     ("draft-dspark", DSPARK, "0.5")])
def test_llama_speculative_simple_runs_the_drafters(tiny_model, drafter, spec_type, card, p_min):
    from specsweep.engine.native import run_speculative_simple

    n = 32
    run = run_speculative_simple(
        [str(TOOL), "-m", str(tiny_model(A3B)), "-md", str(drafter(card)), "-p", PROMPT, "-n", str(n), "--temp", "0",
         "-c", "512", "-b", "64", "-ub", "64", "-t", "2", "-fa", "on", "-ngl", "0", "-ngld", "0",
         "--spec-type", spec_type, "--spec-draft-n-max", "4", "--spec-draft-n-min", "0", "--spec-draft-p-min", p_min])
    assert run.stats["n_predict"] >= n and run.stats["n_drafted"] > 0


@pytest.mark.skipif(not TOOL.is_file(), reason=f"native llama-speculative-simple not built ({TOOL})")
@pytest.mark.parametrize("spec_type, card, changes, p_min, llama_says", [
    ("draft-dspark", DSPARK, {"conf_head": False}, "0.5", "DSpark draft has no confidence head"),
    ("draft-eagle3", EAGLE3, {"target_layers": (1, 2, 5)}, "0.0", "exceeds target n_layer"),
])
def test_what_the_header_checks_refuse_llama_cpp_refuses_too(tiny_model, drafter, spec_type, card, changes, p_min,
                                                             llama_says):
    from specsweep.engine.native import run_speculative_simple

    target, path = tiny_model(A3B), drafter(card, **changes)
    check = check_dspark if card == DSPARK else check_eagle3
    with pytest.raises(SpecsweepError):
        check("t", target, "d", path, **({"p_min": float(p_min)} if card == DSPARK else {}))
    with pytest.raises(RuntimeError, match=llama_says):  # llama.cpp throws or aborts the process
        run_speculative_simple(
            [str(TOOL), "-m", str(target), "-md", str(path), "-p", PROMPT, "-n", "8", "--temp", "0", "-c", "512",
             "-t", "2", "-ngl", "0", "-ngld", "0", "--spec-type", spec_type, "--spec-draft-p-min", p_min], tries=1)
