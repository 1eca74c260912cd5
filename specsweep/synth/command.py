"""`specsweep synth`: write random-weight GGUF models of real shapes, and drafts made from them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from specsweep.errors import SpecsweepError
from specsweep.synth.cards import CARDS, DRAFTER_OPTIONS, SCALES, card_help, option_error
from specsweep.synth.fill import WEIGHT_TYPES
from specsweep.synth.quants import MIXES, mix_error
from specsweep.synth.writer import Recipe, planned_bytes, read_recipe_fields, write_model


@click.command(epilog=f"Cards: {card_help()}.")
@click.argument("card", required=False, type=click.Choice(sorted(CARDS)), metavar="CARD")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="GGUF file to write (written under a temporary name, then renamed).")
@click.option("--scale", type=click.Choice(SCALES), default=None,
              help="full: the published shape (default); tiny: the same layout, CPU-sized, for tests; "
                   "tiny256: tiny with rows of 256 weights, so K-quants apply (qwen3.6-35b-a3b).")
@click.option("--wtype", type=click.Choice(sorted(WEIGHT_TYPES)), default=None,
              help="Storage type of the matrices (default Q4_0). Norms and routers stay F32. A K-quant "
                   "(Q4_K, Q5_K, Q6_K) needs rows of 256 weights; shorter rows fall back to Q8_0.")
@click.option("--quant", type=click.Choice(sorted(MIXES)), default=None,
              help="A per-tensor type mix instead of --wtype: ud-q4_k_xl is Unsloth's UD-Q4_K_XL of the "
                   "35B-A3B (K-quant experts, Q8_0 elsewhere; docs/models.md says where it comes from).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Weight seed (default 0). Another seed of the same family: a vocab-matched, unrelated draft.")
@click.option("--like", "like", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Make a draft from this synthetic target: same card, scale, type and seed.")
@click.option("--identical", is_flag=True, help="With --like: a byte-identical copy (100% acceptance).")
@click.option("--perturb", type=float, default=None, metavar="FRACTION",
              help="With --like: re-randomise this fraction f of the output head's token rows; greedy "
                   "agreement with the target is then about (1-f)/(1+f).")
@click.option("--branch-scale", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Shrink what each block adds to the residual stream (default 1). Below about 0.1 a "
                   "random model stops being chaotic, so batched verification and one-token decoding "
                   "agree on a GPU too; speed is unchanged. A --like draft copies it.")
@click.option("--router-skew", "router_skew", type=click.FloatRange(0.0, 3.0), default=None, metavar="SIGMA",
              help="MoE cards: how unevenly the router uses its experts (default 0: a random router, whose "
                   "distinct tokens route independently). 0.5 matches a trained router's measured expert load "
                   "(docs/models.md). Only the routers' values change. A --like draft copies it.")
@click.option("--mtp", is_flag=True, help="Add the card's multi-token-prediction layer (Qwen3.5/3.6 cards), for "
              "method mtp. Its eh_proj passes the next token's embedding through, so the head follows an "
              "embedding-dominated target (use with --branch-scale 0.05); every other tensor is unchanged.")
@click.option("--conf-head/--no-conf-head", "conf_head", default=None,
              help="DSpark cards: write the confidence head (conf_proj; default: the card's). Without it "
                   "llama.cpp refuses --spec-draft-p-min > 0.")
@click.option("--sample-from-anchor/--no-sample-from-anchor", "sample_from_anchor", default=None,
              help="DSpark cards: block slot 0 is a prediction (DFlash-lineage exports, the default) or a "
                   "bonus anchor (EAGLE-3-style exports).")
@click.option("--own-embeddings/--no-own-embeddings", "own_embeddings", default=None,
              help="EAGLE-3 cards: write the drafter's own token_embd/output (full vocabulary) instead of "
                   "borrowing the target's (the default).")
def synth(card, output, scale, wtype, quant, seed, like, identical, perturb, branch_scale, router_skew, mtp,
          conf_head, sample_from_anchor, own_embeddings):
    """Write a random-weight GGUF of a real shape that llama.cpp loads and runs.

    Timing does not depend on weight values, so a full-scale card gives a timing-true model; a tiny
    one lets CI run the real llama.cpp on a CPU.
    """
    options = {k: v for k, v in (("conf_head", conf_head), ("sample_from_anchor", sample_from_anchor),
                                 ("own_embeddings", own_embeddings)) if v is not None}
    recipe = _recipe(card, scale, wtype, seed, like, identical, perturb, branch_scale, mtp, options, quant,
                     router_skew)
    _check_writable(output)
    size = planned_bytes(recipe)
    click.echo(f"writing {output} ({recipe.card.name}, {recipe.scale}, {recipe.types}, "
               f"{size / 2**30:.2f} GiB)", err=True)
    try:
        with click.progressbar(length=size, label="synth", file=sys.stderr) as bar:
            result = write_model(recipe, output, progress=bar.update)
    except OSError as e:
        raise SpecsweepError(f"cannot write {output}: {e.strerror or e}") from None
    note = f", {recipe.perturb:.0%} of the output head's rows re-randomised" if result.n_perturbed else ""
    click.echo(f"wrote {result.path}: {result.n_tensors} tensors, {result.n_params / 1e9:.3f} B params, "
               f"{result.n_bytes / 2**30:.2f} GiB in {result.seconds:.1f} s{note}")


def _recipe(card, scale, wtype, seed, like, identical, perturb, branch_scale=None, mtp=False,
            options: dict | None = None, quant: str | None = None, router_skew: float | None = None) -> Recipe:
    options = options or {}
    if wtype is not None and quant is not None:
        raise SpecsweepError("give --wtype (one type for every matrix) or --quant (a per-tensor mix), not both")
    if perturb is not None and not 0.0 <= perturb <= 1.0:
        raise SpecsweepError(f"--perturb must be within [0, 1], got {perturb}")
    if (identical or perturb is not None) and like is None:
        raise SpecsweepError("--identical and --perturb make a draft from a target: give --like TARGET.gguf")
    if like is None:
        if card is None:
            raise SpecsweepError(f"name a shape card ({', '.join(sorted(CARDS))}) or give --like TARGET.gguf")
        scale = scale or "full"
        if scale not in CARDS[card].scales:
            raise SpecsweepError(f"{card} has no {scale} scale (it has {', '.join(CARDS[card].scales)})")
        if quant is not None and (error := mix_error(CARDS[card], quant)):
            raise SpecsweepError(error)
        if mtp and CARDS[card].arch not in ("qwen35", "qwen35moe"):
            raise SpecsweepError(f"--mtp needs a Qwen3.5/3.6 card (qwen35 or qwen35moe), not {card}")
        if router_skew and not CARDS[card].is_moe:
            raise SpecsweepError(f"--router-skew shapes a MoE router; {card} is dense")
        error = option_error(CARDS[card], **options)
        if error:
            raise SpecsweepError(error)
        return Recipe(CARDS[card].at_scale(scale), scale, wtype or "Q4_0", seed or 0,
                      branch_scale=branch_scale or 1.0, mtp=mtp, quant=quant, router_skew=router_skew or 0.0, **options)

    if identical == (perturb is not None):
        raise SpecsweepError("with --like, give exactly one of --identical or --perturb FRACTION")
    try:
        fields = read_recipe_fields(like)
    except Exception as e:  # gguf raises ValueError/struct errors on foreign or truncated files
        raise SpecsweepError(f"{like} is not a readable GGUF: {e}") from None
    if "card" not in fields:
        raise SpecsweepError(f"{like} was not written by specsweep synth, so its weights cannot be re-derived")
    base = fields["card"]
    if base not in CARDS:
        raise SpecsweepError(f"{like} names an unknown shape card {base!r}")
    have_branch = float(fields.get("branch_scale", 1.0))  # files written before it existed: 1
    have_quant = fields.get("quant")  # files without a mix have no key
    have_skew = round(float(fields.get("router_skew", 0.0)), 6)  # stored as float32
    have_types = f"mix {have_quant}" if have_quant else fields["wtype"]
    for name, given, have in (("card", card, base), ("--scale", scale, fields["scale"]),
                              ("--wtype", wtype, have_types), ("--seed", seed, fields["seed"]),
                              ("--branch-scale", branch_scale, have_branch),
                              ("--quant", quant, have_quant or "no mix"), ("--router-skew", router_skew, have_skew)):
        if given is not None and given != have:
            raise SpecsweepError(f"{name} {given} contradicts the target's {have}: a --like draft copies it")
    if mtp:
        raise SpecsweepError("--mtp writes a target; a --like draft copies its target's layers")
    if options:
        raise SpecsweepError(f"--{next(iter(options)).replace('_', '-')} shapes a new drafter; a --like draft "
                             f"copies its model's options")
    copied = {k: bool(fields[k]) for k in DRAFTER_OPTIONS if k in fields}
    if fields["scale"] not in CARDS[base].scales or (have_quant is not None and mix_error(CARDS[base], have_quant)):
        raise SpecsweepError(f"{like} names a recipe this version cannot write ({base}, {fields['scale']}, "
                             f"{have_quant or fields['wtype']})")
    return Recipe(CARDS[base].at_scale(fields["scale"]), fields["scale"], fields["wtype"], int(fields["seed"]),
                  perturb=0.0 if identical else perturb, branch_scale=have_branch, mtp=bool(fields.get("mtp", False)),
                  quant=have_quant, router_skew=have_skew, **copied)


def _check_writable(output: Path) -> None:
    parent = output.resolve().parent
    if not parent.is_dir():
        raise SpecsweepError(f"cannot write {output}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SpecsweepError(f"cannot write {output}: folder {parent} is not writable")
