"""`mtp`: the target's own multi-token-prediction head (llama.cpp's `draft-mtp`,
`common_speculative_impl_draft_mtp` in common/speculative.cpp, single-head mode as Qwen3.5/3.6 use).

The head runs in a second context on the target's model (context type MTP, its own KV cache for the
head's one attention layer). Step for step as llama.cpp:
- the target keeps its final hidden state h for every token of a batch;
- after each target batch the head decodes the same tokens, token p paired with h of token p-1
  (the first with the hidden state carried over from the previous batch), so its cache follows
  the accepted text; the last row of the batch becomes the carried state;
- to draft, it decodes (id_last, carried h) at pos0, takes its greedy token, then feeds that token
  with the head's own output hidden state, up to `n_max` tokens, stopping below `p_min`;
- when k drafted tokens are accepted, the carried state becomes the target's h of verify row k.
  After a checkpoint rollback on a hybrid target llama.cpp does not call accept, so the carried
  state stays the verify batch's last row for the re-decoded batch; specsweep does the same, so
  that its counts match llama.cpp's.
With several streams (`parallel`), each stream's head decodes in its own sequence of the head's
context and reads its rows of the target's joint batch, from `row0` on.
"""

from __future__ import annotations

import llama_cpp as ll
import numpy as np

from specsweep.engine.drafters.draft_model import DraftModel, top_token
from specsweep.engine.runtime import Context
from specsweep.errors import SpecsweepError


def mtp_layers(model) -> int:
    return int(ll.llama_model_n_layer_nextn(model.ptr))


class Mtp(DraftModel):
    name = "mtp"

    def __init__(self, ctx: Context, target: Context, n_max: int = 3, n_min: int = 0, p_min: float = 0.0,
                 seq: int = 0):
        heads = mtp_layers(ctx.model)
        if heads != 1:
            raise SpecsweepError(f"{ctx.model.path.name} has {heads} MTP layers; specsweep runs single-head "
                                 f"MTP (Qwen3.5/3.6) only")
        super().__init__(ctx, n_max=n_max, n_min=n_min, p_min=p_min, seq=seq)
        self.row0 = 0  # where this stream's tokens start in the target's last batch
        self.use_checkpoints = False  # the head's memory is a plain KV cache
        self.target = target
        self.n_embd = ctx.n_embd_out
        if self.n_embd != target.n_embd_out:
            raise SpecsweepError("the MTP head's input width differs from the target's hidden state")
        target.output_hidden(masked=False)
        ctx.output_hidden(masked=True)
        self.pending = np.zeros(self.n_embd, dtype=np.float32)
        self.verify_h = np.zeros((0, self.n_embd), dtype=np.float32)

    def process(self, tokens: list[int], pos0: int) -> None:
        n = len(tokens)
        h = self.target.hidden_rows(self.row0 + n)[self.row0:]  # a view of the target's buffer: copied below
        batch = self.ctx.ext_batch()
        for k, token in enumerate(tokens):
            batch.add(pos0 + k, token=token, embd=self.pending if k == 0 else h[k - 1], seq=self.seq)
        self.ctx.process(batch)
        self.verify_h = h.copy()
        self.pending = self.verify_h[-1].copy()

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        out: list[int] = []
        token, h = id_last, self.pending
        while True:
            batch = self.ctx.ext_batch()
            batch.add(pos0 + len(out), token=token, embd=h, output=True, seq=self.seq)
            self.ctx.process(batch)
            token, p = top_token(self.ctx, 0, self.p_min)
            if p < self.p_min:
                break
            out.append(token)
            if len(out) >= self.n_max:
                break
            h = self.ctx.hidden(0).copy()
        if len(out) < self.n_min:
            return []
        return out[:n_max] if n_max > 0 else out  # llama.cpp truncates to the caller's limit

    def accept(self, n_accepted: int) -> None:
        if len(self.verify_h):
            self.pending = self.verify_h[min(n_accepted, len(self.verify_h) - 1)].copy()
