"""`draft`: a small vocab-matched model in its own context (llama.cpp's `draft-simple`).

llama.cpp's meaning of the knobs: draft up to `n_max` tokens greedily, stop early when the draft's
top token has probability below `p_min` (softmax over its top 10 logits, as the draft sampler's
top-k 10 leaves them), and throw the draft away if it is shorter than `n_min`. The draft context
also decodes every target batch (`process`), so it stays in step with the accepted text.
Defaults are llama.cpp's: n_max 3, n_min 0, p_min 0.
"""

from __future__ import annotations

import numpy as np

from specsweep.engine.drafters import Drafter
from specsweep.engine.runtime import Context

TOP_K = 10


def top_token(ctx: Context, i: int, p_min: float) -> tuple[int, float]:
    """The draft's greedy token at output i and its probability as llama.cpp's draft sampler sees
    it (softmax over the top 10 logits); with p_min 0 only the token is needed, picked on the
    device when the context samples there."""
    if p_min <= 0.0:
        return ctx.argmax(i), 1.0
    logits = ctx.logits(i)
    top = np.partition(logits, -TOP_K)[-TOP_K:]
    best = int(logits.argmax())
    return best, 1.0 / float(np.exp(top - logits[best]).sum())


class DraftModel(Drafter):
    name = "draft"

    def __init__(self, ctx: Context, n_max: int = 3, n_min: int = 0, p_min: float = 0.0):
        self.ctx, self.n_max, self.n_min, self.p_min = ctx, n_max, n_min, p_min
        # A hybrid draft cannot drop its own drafted tokens with seq_rm: they were decoded one at a
        # time and a recurrent-state snapshot only undoes the last decode, so it checkpoints its
        # recurrent state instead (llama.cpp does the same; its draft contexts have n_rs_seq = 0).
        # Dropping the rejected tail of a verify batch (`trim`) on a hybrid draft needs n_rs_seq
        # snapshots when the target rolls back with snapshots; specsweep gives the draft context
        # the target's n_rs_seq in that mode (see run/runner.py).
        self.use_checkpoints = ctx.model.has_recurrent_state
        self._ckpt: bytes | None = None

    def process(self, tokens: list[int], pos0: int) -> None:
        self.ctx.decode(tokens, pos0)

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        out: list[int] = []
        self.ctx.decode([id_last], pos0)
        while True:
            token, p = top_token(self.ctx, -1, self.p_min)
            if p < self.p_min:
                break
            out.append(token)
            if self.n_max <= len(out) or 0 < n_max <= len(out):
                break
            self.ctx.decode([token], pos0 + len(out))
        return out if len(out) >= self.n_min else []  # the loop already stopped at n_max

    def save_checkpoint(self) -> None:
        if self.use_checkpoints:
            self._ckpt = self.ctx.save_partial_state()

    def restore_checkpoint(self, pos: int) -> None:
        if self.use_checkpoints and self._ckpt is not None:
            self.ctx.load_partial_state(self._ckpt)
        self.ctx.seq_rm(pos, -1)

    def trim(self, n_past: int) -> None:
        self.ctx.seq_rm(n_past, -1)  # fails silently on a hybrid draft, as in llama.cpp
