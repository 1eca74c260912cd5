"""llama.cpp's synthetic acceptance (`--spec-synth-len` / `--spec-synth-rates`, benchmarking only).

A drafter runs and pays its real cost, but its drafts are accepted at random at chosen rates
instead of by agreement with the target, so tok/s can be measured against acceptance for any
method on random-weight models. Three pieces, each as llama.cpp has them:

- `resolve_rates`: `common_speculative_synth_rates_resolve` (common/speculative.cpp): rates or a
  mean accepted length L (the target's token included) for a draft limit n_max, with llama.cpp's
  validation and wording. From L it bisects (32 halvings) the p with p + p^2 + ... + p^n_max =
  L - 1 and uses the rates p, p^2, ...: unconditional per-position acceptance.
- `conditional`: the probabilities the accept/reject draws use, rate_i / rate_{i-1}.
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

from specsweep.errors import SpecsweepError

_BISECTIONS = 32


def resolve_rates(synth_len: float | None, synth_rates: list[float] | None, n_max: int) -> list[float]:
    """The unconditional acceptance rate per draft position, or [] when neither is given."""
    has_len, has_rates = synth_len is not None, bool(synth_rates)
    if not has_len and not has_rates:
        return []
    if has_len and has_rates:
        raise SpecsweepError("synthetic acceptance length and rates are mutually exclusive")
    if n_max <= 0:
        raise SpecsweepError("synthetic acceptance requires at least one speculative token")
    if has_rates:
        rates = [float(r) for r in synth_rates]
        if len(rates) != n_max:
            raise SpecsweepError(f"synthetic acceptance rates must contain {n_max} values, got {len(rates)}")
        for i, r in enumerate(rates):
            if not math.isfinite(r) or not 0.0 <= r <= 1.0:
                raise SpecsweepError("synthetic acceptance rates must be finite and within [0, 1]")
            if i > 0 and r > rates[i - 1]:
                raise SpecsweepError("synthetic acceptance rates must be monotonically non-increasing")
        return rates
    length, length_max = float(synth_len), float(n_max) + 1.0
    if not math.isfinite(length) or not 1.0 <= length <= length_max:
        raise SpecsweepError(f"synthetic acceptance length must be finite and within [1, {length_max:.0f}]")
    if length == length_max:
        p = 1.0
    elif length > 1.0:
        lo, hi = 0.0, 1.0
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            total, term = 0.0, mid
            for _ in range(n_max):
                total += term
                term *= mid
            lo, hi = (mid, hi) if total < length - 1.0 else (lo, mid)
        p = 0.5 * (lo + hi)
    else:
        p = 0.0
    rates, rate = [], p
    for _ in range(n_max):
        rates.append(rate)
        rate *= p
    return rates


def conditional(rates: list[float]) -> list[float]:
    """P(accept position i | positions < i accepted), as llama.cpp's synth_probs."""
    out, prev = [], 1.0
    for r in rates:
        out.append(r / prev if prev > 0.0 else 0.0)
        prev = r
    return out


def mean_length(rates: list[float]) -> float:
    """The expected accepted length of a full-length draft, the target's token included."""
    return 1.0 + sum(rates)


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
