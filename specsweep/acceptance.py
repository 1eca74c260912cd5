"""llama.cpp's synthetic acceptance rates as numbers: pure functions that the engine (which draws
with them) and the analysis (which predicts from them) share.

- `resolve_rates`: `common_speculative_synth_rates_resolve` (common/speculative.cpp): rates or a
  mean accepted length L (the target's token included) for a draft limit n_max, with llama.cpp's
  validation and wording. From L it bisects (32 halvings) the p with p + p^2 + ... + p^n_max =
  L - 1 and uses the rates p, p^2, ...: unconditional per-position acceptance.
- `conditional`: the probabilities the accept/reject draws use, rate_i / rate_{i-1}.
- `mean_length`: the expected accepted length of a full draft.
"""

from __future__ import annotations

import math

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
