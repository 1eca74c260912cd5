"""What one generation does, in expectation: how many target passes of each size, drafting calls,
drafted tokens, checkpoint saves and restores, replays and batch-shape changes the speculative loop
makes to generate a given number of tokens with a given acceptance profile. Counts only, no times:
`predict` prices them with the card's costs, so a resampled cost never reruns this.

The loop is llama.cpp's (engine/server_loop.py, engine/speculative.py), step by step:
- at a step the drafter is asked for up to min(n, tokens left - 1) tokens (a long draft is cut near
  the end of the generation); with probability 1 - draft_rate it drafts nothing and the step is a
  plain one-token pass;
- the target verifies [last, draft] in one pass of K = m + 1 tokens; A of the m are accepted with
  P(A >= a) = cond_1 ... cond_a (drafts of one length, or of the profile's lengths);
- A = m: m + 1 tokens. A < m: with recurrent-state snapshots or an attention-only target the
  rejected tail is dropped (A + 1 tokens); with checkpoints (a hybrid target without snapshots)
  the state is restored and the A accepted tokens and the correction are decoded again as one
  replay pass of A + 2 tokens, which yields A + 2 tokens (the replay's own next token included);
- a pass whose batch size differs from the pass before it is a shape change (llama.cpp runs it
  without its CUDA graph and captures the graph again: the probe's `switch`).

Exact expectation by dynamic programming over the tokens generated so far (the previous pass's
size enters only through the next pass's shape change, so the state stays one number): O(tokens x
n x outcomes), milliseconds for the draft lengths and generation lengths used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsweep.analysis.profiles import Profile

# scalar units, then the verify passes by K, the replay passes by K and the shape changes into K
SCALARS = ("passes", "calls", "drafted", "saves", "restores", "switches", "tokens")


@dataclass
class Units:
    """Expected counts over one generation."""
    passes: float  # every target pass (verify, plain and replay)
    calls: float  # drafting calls that returned a draft
    drafted: float  # drafted tokens
    saves: float  # checkpoint saves (one per draft, checkpoint rollback only)
    restores: float  # checkpoint restores (one per rejected draft, checkpoint rollback only)
    switches: float  # passes whose batch size differs from the previous pass's
    tokens: float  # tokens the loop's decode tok/s counts
    verify: np.ndarray  # expected verify and plain passes of K tokens, index K
    replay: np.ndarray  # expected replay passes of K tokens, index K
    switch: np.ndarray  # expected shape changes into a pass of K tokens, index K

    def t_sum(self, t_of_k: np.ndarray, which: str = "verify") -> float:
        counts = self.verify if which == "verify" else self.replay
        n = min(len(counts), len(t_of_k))
        return float(np.dot(counts[:n], t_of_k[:n]))

    def tokens_verified(self) -> float:
        """Tokens the target decodes in the loop's passes (verify, plain and replay)."""
        k = np.arange(len(self.verify))
        return float(np.dot(self.verify + self.replay, k))

    def switches_into(self, k_min: int, k_max: int) -> float:
        return float(self.switch[k_min:k_max + 1].sum())


def loop_tokens(n_predict: int, loop: str) -> tuple[int, int, bool]:
    """(tokens the loop generates, the draft cap's offset, whether the count is exact) for a loop:
    a llama-server slot samples its first token from the prompt and stops at n_predict; the
    speculative-simple loop generates from the prompt's last token until it has more than n_predict."""
    if loop == "server":
        return max(n_predict - 1, 0), 1, True
    return n_predict + 1, 2, False


def expected_units(profile: Profile | None, n_predict: int, checkpoint: bool = False, loop: str = "server") -> Units:
    """Expected counts of one generation of n_predict tokens (profile None: plain decoding)."""
    total, offset, exact = loop_tokens(n_predict, loop)
    n_max = profile.n_max if profile is not None else 0
    k_cols = n_max + 3
    n_sc = len(SCALARS)
    width = n_sc + 3 * k_cols
    iv, ir, isw = n_sc, n_sc + k_cols, n_sc + 2 * k_cols  # first verify, replay and switch columns
    i_sw, i_tok = SCALARS.index("switches"), SCALARS.index("tokens")
    end = total + n_max + 3
    w = np.zeros((end + 1, width))  # expected future units from g, the first pass's shape change excluded
    w[total:, i_tok] = np.arange(total, end + 1)
    first_k: list[dict[int, float]] = [dict() for _ in range(end + 1)]

    def future(g: int, prev_k: int) -> np.ndarray:
        if g >= total:
            return w[g]
        out = w[g].copy()
        out[i_sw] += 1.0 - first_k[g].get(prev_k, 0.0)
        for k, p in first_k[g].items():
            if k != prev_k:
                out[isw + k] += p
        return out

    lengths = []
    if profile is not None:
        lengths = [(profile.n_max, 1.0)] if not profile.lengths else \
            [(i + 1, p) for i, p in enumerate(profile.lengths) if p > 0]
    cond = list(profile.cond) if profile is not None else []
    for g in range(total - 1, -1, -1):
        cap = total - g - offset
        acc = np.zeros(width)
        fk: dict[int, float] = {}
        p_plain = 1.0 if (profile is None or cap <= 0) else 1.0 - profile.draft_rate
        if p_plain > 0:
            row = future(g + 1, 1)
            row[0] += 1.0  # a pass
            row[iv + 1] += 1.0
            acc += p_plain * row
            fk[1] = fk.get(1, 0.0) + p_plain
        if p_plain < 1.0:
            p_draft = 1.0 - p_plain
            merged: dict[int, float] = {}
            for length, p in lengths:
                m = min(length, cap)
                merged[m] = merged.get(m, 0.0) + p
            for m, p_len in merged.items():
                p = p_draft * p_len
                k = m + 1
                fk[k] = fk.get(k, 0.0) + p
                imm = np.zeros(width)
                imm[0] += 1.0
                imm[1] += 1.0
                imm[2] += m
                imm[iv + k] += 1.0
                if checkpoint:
                    imm[3] += 1.0
                reach = 1.0  # P(A >= a)
                for a in range(m + 1):
                    p_a = reach if a == m else reach * (1.0 - cond[a])
                    if a < m:
                        reach *= cond[a]
                    if p_a <= 0.0:
                        continue
                    if a == m or not checkpoint:
                        out = imm + future(g + a + 1, k)
                    else:
                        out = imm + future(g + a + 2, a + 2)
                        out[0] += 1.0  # the replay pass
                        out[4] += 1.0
                        out[ir + a + 2] += 1.0
                        if a + 2 != k:
                            out[i_sw] += 1.0
                            out[isw + a + 2] += 1.0
                    acc += p * p_a * out
        w[g] = acc
        first_k[g] = fk
    start = future(0, 1)
    tokens = float(n_predict) if exact else float(start[i_tok])
    return Units(passes=float(start[0]), calls=float(start[1]), drafted=float(start[2]), saves=float(start[3]),
                 restores=float(start[4]), switches=float(start[i_sw]), tokens=tokens,
                 verify=start[iv:iv + k_cols].copy(), replay=start[ir:ir + k_cols].copy(),
                 switch=start[isw:isw + k_cols].copy())
