"""Shared fixtures: tiny synthetic models written once per test session by the real factory."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from specsweep.cli import main
from specsweep.engine import runtime
from specsweep.synth.cards import CARDS
from specsweep.synth.writer import Recipe, write_model

PROMPT = "The quick brown fox jumps over the lazy dog. def main(argv=None):"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    runtime.init(verbose=False)
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_dir):
    """tiny_model(card, wtype="Q4_0", seed=0, perturb=0.0, branch_scale=1.0, mtp=False) -> path of a
    cached tiny GGUF."""
    made: dict[tuple, Path] = {}

    def make(card: str, wtype: str = "Q4_0", seed: int = 0, perturb: float = 0.0, branch_scale: float = 1.0,
             mtp: bool = False) -> Path:
        key = (card, wtype, seed, perturb, branch_scale, mtp)
        if key not in made:
            path = model_dir / f"{card}-{wtype}-s{seed}-p{perturb}-b{branch_scale}{'-mtp' if mtp else ''}.gguf"
            write_model(Recipe(CARDS[card].at_scale("tiny"), "tiny", wtype, seed, perturb=perturb,
                               branch_scale=branch_scale, mtp=mtp), path)
            made[key] = path
        return made[key]

    return make


@pytest.fixture(scope="module")
def module_synth_cache(tmp_path_factory):
    """Synthetic models written once per test module, into a private cache ($SPECSWEEP_CACHE)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPECSWEEP_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def run_cli(*args):
    """`specsweep run ARGS...` through click's test runner."""
    return CliRunner().invoke(main, ["run", *map(str, args)])

