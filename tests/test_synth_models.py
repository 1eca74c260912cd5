"""The synthetic models load and run in the real llama.cpp, and drafts made from them behave."""

from __future__ import annotations

import numpy as np
import pytest

from specsweep.engine import runtime
from specsweep.synth.cards import CARDS
from tests.conftest import PROMPT

N_PREDICT = 48


def agreement(draft_path, prompt, target_tokens) -> float:
    """Share of positions where the draft's greedy choice equals the target's (teacher-forced)."""
    with runtime.Model(draft_path) as draft:
        guess = runtime.teacher_forced_argmax(draft, prompt + target_tokens)[len(prompt) - 1 : -1]
    return sum(a == b for a, b in zip(guess, target_tokens)) / len(target_tokens)


@pytest.mark.parametrize("card", sorted(c for c in CARDS if not CARDS[c].target))  # drafters: test_drafters_hidden.py
@pytest.mark.parametrize("wtype", ["Q4_0", "Q8_0", "F16"])
def test_tiny_model_loads_tokenizes_and_decodes(tiny_model, card, wtype):
    with runtime.Model(tiny_model(card, wtype)) as model:
        assert model.n_vocab == CARDS[card].at_scale("tiny").n_vocab
        prompt = model.tokenize(PROMPT)
        assert 5 < len(prompt) < len(PROMPT)  # the BPE merges apply: fewer tokens than bytes
        assert "".join(model.piece(t) for t in prompt) == PROMPT  # and round-trip
        with runtime.Context(model) as ctx:
            ctx.decode(prompt, 0, all_logits=True)
            logits = np.stack([ctx.logits(i) for i in range(len(prompt))])
        assert np.isfinite(logits).all()
        assert 0.3 < float(logits.std()) < 3.0  # unit-scale logits: neither dead nor exploding
        out = runtime.greedy(model, prompt, N_PREDICT)
        assert len(set(out)) > 4  # not collapsed onto one favourite token (short cycles are fine)


@pytest.mark.parametrize("card", ["qwen3.6-35b-a3b", "qwen3-30b-a3b", "qwen3.6-27b"])
def test_identical_perturbed_and_unrelated_drafts(tiny_model, card):
    with runtime.Model(tiny_model(card)) as target:
        prompt = target.tokenize(PROMPT)
        tokens = runtime.greedy(target, prompt, N_PREDICT)

    # An identical draft run the same way (one token at a time) reproduces the target exactly.
    with runtime.Model(tiny_model(card, perturb=0.0)) as same:
        assert runtime.greedy(same, prompt, N_PREDICT) == tokens

    partial = agreement(tiny_model(card, perturb=0.2), prompt, tokens)
    assert 0.3 < partial < 0.95, partial  # expected about (1-0.2)/(1+0.2) = 0.67

    unrelated = agreement(tiny_model(card, seed=7), prompt, tokens)
    assert unrelated < 0.1, unrelated


def test_family_vocabularies_are_shared_within_and_differ_across():
    from specsweep.synth.vocab import family_vocab

    target = family_vocab("qwen35", CARDS["qwen3.6-35b-a3b"].at_scale("tiny").n_vocab)
    draft = family_vocab("qwen35", CARDS["qwen3.5-0.8b"].at_scale("tiny").n_vocab)
    other = family_vocab("qwen3", CARDS["qwen3-0.6b"].at_scale("tiny").n_vocab)
    assert target == draft
    assert target.size != other.size
    full = family_vocab("qwen35", CARDS["qwen3.6-35b-a3b"].n_vocab)
    assert full.size == 248320
    # the learned tokens and the control tokens sit at the same ids at both scales
    assert full.tokens[: target.eos_id + 1] == target.tokens[: target.eos_id + 1]
