"""Synthetic stand-ins of the models.lock models: which shape card writes a timing-true model of a
lock entry, so that `specsweep probe --synth NAME` can measure a card before the real file is
downloaded.

A stand-in has the real model's architecture, dimensions, layer pattern and experts (its card
copies the published config.json) with random weights (branch scale 0.05, as the device matrices
use): the 35B-A3B's in the real file's quantisation mix (`quant = "ud-q4_k_xl"`, synth/quants.py:
the real file's kernels at its size, 20.81 GiB against the real 20.82), the others Q4_0 (the same
bytes per token to within their K-quant mix; no mix is written for them yet). A drafter that reads a target's hidden states (DFlash) cannot decode alone, so it
has no stand-in to probe; a card name is accepted as well as a lock name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.synth.cards import CARDS, SCALES, ShapeCard


@dataclass(frozen=True)
class StandIn:
    card: str  # the shape card
    mtp: bool = False  # with the card's multi-token-prediction layer
    branch_scale: float = 0.05
    quant: str | None = None  # the real file's quantisation mix (synth/quants.py), where one is written


# models.lock target and draft names -> their stand-ins
STAND_INS: dict[str, StandIn] = {
    "qwen3.6-35b-a3b-ud-q4_k_xl": StandIn("qwen3.6-35b-a3b", quant="ud-q4_k_xl"),
    "qwen3.6-35b-a3b-mtp-ud-q4_k_xl": StandIn("qwen3.6-35b-a3b", mtp=True, quant="ud-q4_k_xl"),
    "qwen3.6-27b-ud-q4_k_xl": StandIn("qwen3.6-27b"),
    "qwen3.5-0.8b-q4_k_m": StandIn("qwen3.5-0.8b"),
}


def stand_in(name: str) -> StandIn | None:
    """A lock name's stand-in, or a card named directly; None for anything else."""
    if name in STAND_INS:
        return STAND_INS[name]
    if name in CARDS and CARDS[name].arch not in ("dflash", "eagle3"):
        return StandIn(name)
    return None


def card_of(name: str) -> ShapeCard | None:
    s = stand_in(name)
    return CARDS[s.card] if s else None


def names() -> list[str]:
    """Every name `probe --synth` takes."""
    return sorted(STAND_INS) + sorted(n for n, c in CARDS.items() if c.arch not in ("dflash", "eagle3"))


def resolve(name: str) -> StandIn:
    """The stand-in of a name, or a one-line error listing the names there are."""
    s = stand_in(name)
    if s is None:
        raise SpecsweepError(f"no synthetic stand-in for {name!r}: a models.lock target or draft "
                             f"({', '.join(sorted(STAND_INS))}) or a shape card ({', '.join(sorted(c for c in CARDS if c in names()))})")
    return s


def write(s: StandIn, scale: str = "full", progress=None) -> Path:
    """The stand-in's GGUF in the specsweep cache (written once, under the name a matrix's
    `{ synth = CARD, branch_scale = 0.05 }` entry uses, so either reuses the other's file)."""
    from specsweep.synth.writer import Recipe, write_cached

    if scale not in SCALES:
        raise SpecsweepError(f"unknown scale {scale!r} (one of {', '.join(SCALES)})")
    return write_cached(Recipe(CARDS[s.card].at_scale(scale), scale, "Q4_0", 0, branch_scale=s.branch_scale,
                               mtp=s.mtp, quant=s.quant), progress)
