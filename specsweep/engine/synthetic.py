"""llama.cpp's synthetic acceptance (`--spec-synth-len` / `--spec-synth-rates`, benchmarking only).

A drafter runs and pays its real cost, but its drafts are accepted at random at chosen rates
instead of by agreement with the target, so tok/s can be measured against acceptance for any
method on random-weight models. Its pieces, each as llama.cpp has them:

- `resolve_rates` and `conditional` (specsweep/acceptance.py, shared with the analysis):
  `common_speculative_synth_rates_resolve`'s rates per draft position, and the conditional
  probabilities the accept/reject draws use;
- `SynthRng` and `accept`: `server_sample_and_accept_synth` (tools/server/server-context.cpp):
  libstdc++'s `std::mt19937` seeded with the request's seed, one `uniform_real_distribution<double>`
  draw per drafted position until the first rejection; a drafted end-of-generation token is never
  accepted; a replay after a checkpoint restore accepts every token again without drawing.
  The draw is libstdc++'s `generate_canonical<double, 53>` (two 32-bit outputs, low word first)
  as GCC 12's headers compile it; the parity test against llama-server checks it.
"""

from __future__ import annotations

import math

import numpy as np

from specsweep.acceptance import conditional, mean_length, resolve_rates  # noqa: F401 (the engine's names)


class SynthRng:
    """std::mt19937 seeded as `seed(s)` does, drawing uniform doubles in [0, 1) as libstdc++'s
    uniform_real_distribution<double> does. numpy's MT19937 is the generator (its state words are
    set to std::mt19937's seeding), so only the seeding recurrence and the double assembly are ours."""

    def __init__(self, seed: int):
        key = np.empty(624, dtype=np.uint32)
        x = seed & 0xFFFFFFFF
        key[0] = x
        for i in range(1, 624):
            x = (1812433253 * (x ^ (x >> 30)) + i) & 0xFFFFFFFF
            key[i] = x
        self._bits = np.random.MT19937()
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": 624}}

    def raw(self) -> int:
        return int(self._bits.random_raw())

    def uniform(self) -> float:
        lo, hi = float(self.raw()), float(self.raw())
        u = (lo + hi * 4294967296.0) / 18446744073709551616.0
        return u if u < 1.0 else math.nextafter(1.0, 0.0)


def accept(draft: list[int], choice, probs: list[float], rng: SynthRng, is_eog, is_replay: bool) -> list[int]:
    """The tokens a synthetic verify keeps: `choice(i)` is the target's own greedy token after
    the batch's i-th entry (i up to len(draft)). Drafted tokens are kept while the draws say
    so, then the target's token at the first rejection, or the target's next token after a fully
    kept draft. A replay keeps every drafted token (and draws nothing)."""
    out = []
    for i, token in enumerate(draft):
        keep = is_replay or rng.uniform() < probs[i]
        if keep and (is_replay or not is_eog(token)):
            out.append(token)
            continue
        out.append(choice(i))
        return out
    out.append(choice(len(draft)))
    return out
