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
context and reads its rows of the target's joint batch, from `row0` on; all streams' batches go
through the head in one decode, and their drafts step together, as llama-server's slots do.
"""

from __future__ import annotations

import llama_cpp as ll
import numpy as np

from specsweep.engine.drafters.draft_model import DraftModel, chained_steps
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
        self.use_checkpoints = False  # the head's memory is a plain KV cache
        self.target = target
        self.n_embd = ctx.n_embd_out
        if self.n_embd != target.n_embd_out:
            raise SpecsweepError("the MTP head's input width differs from the target's hidden state")
        target.output_hidden(masked=False)
        ctx.output_hidden(masked=True)
        # kept rows, updated in place: `pending` goes into batches by its (fixed) address
        self.pending = np.zeros(self.n_embd, dtype=np.float32)
        self._pending_addr = self.pending.ctypes.data
        self._kept = np.zeros((n_max + 1, self.n_embd), dtype=np.float32)  # grows for a longer batch
        self.verify_h = self._kept[:0]
        # the head reads rows of n_embd_inp: then its batches go through decode_staged (engine/runtime.py)
        self.staged = int(ll.llama_model_n_embd_inp(ctx.model.ptr)) == self.n_embd

    def process(self, tokens: list[int], pos0: int) -> None:
        Mtp.process_many([(self, tokens, pos0)])

    @staticmethod
    def process_many(jobs: list[tuple["Mtp", list[int], int]]) -> None:
        """The target's batches of several streams, (head, tokens, pos0) each, in one head decode, as
        llama-server processes its slots' joint batch once: each stream's tokens with the target's
        hidden states of its own rows (from its `row0`)."""
        first = jobs[0][0]
        target, width, ctx = first.target, first.n_embd, first.ctx
        rows = target.hidden_rows(max(d.row0 + len(tokens) for d, tokens, _ in jobs))  # a view: copied below
        if first.staged:  # token k with the target's row k - 1, the first with the carried row
            staged, i = ctx.staging(sum(len(tokens) for _, tokens, _ in jobs), width), 0
            for d, tokens, _ in jobs:
                n = len(tokens)
                staged[i] = d.pending
                staged[i + 1:i + n] = rows[d.row0:d.row0 + n - 1]
                i += n
            ctx.decode_staged([(d.seq, tokens, pos0) for d, tokens, pos0 in jobs], logits=False)
        else:  # the target's rows by address, as llama.cpp adds them (the batch copies each row)
            base, row_bytes = target.hidden_base(), 4 * width
            batch = ctx.ext_batch()
            for d, tokens, pos0 in jobs:
                batch.add_row(pos0, tokens[0], d._pending_addr, width, False, d.seq)
                h = base + d.row0 * row_bytes
                for k in range(1, len(tokens)):
                    batch.add_row(pos0 + k, tokens[k], h + (k - 1) * row_bytes, width, False, d.seq)
            ctx.process(batch)
        for d, tokens, _ in jobs:
            d._keep(rows[d.row0:d.row0 + len(tokens)])

    def _keep(self, rows: np.ndarray) -> None:
        """This batch's rows of the target (accept picks one), the last one carried over."""
        if len(rows) > len(self._kept):  # a prompt batch
            self._kept = np.empty((len(rows), self.n_embd), dtype=np.float32)
        self.verify_h = self._kept[:len(rows)]
        np.copyto(self.verify_h, rows)
        np.copyto(self.pending, rows[-1])

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        return Mtp.draft_many([(self, (prompt, id_last, pos0, n_max))])[0]

    @staticmethod
    def draft_many(jobs: list[tuple["Mtp", tuple]]) -> list[list[int]]:
        """Drafts for several streams of one head context, (head, (prompt, id_last, pos0, n_max))
        each: every step decodes each drafting stream's (token, hidden state) in one batch."""
        if jobs[0][0].staged:  # rows as views, copied into the staged batch
            first = [(request[2], request[1], d.pending) for d, request in jobs]
            return chained_steps(jobs, first, lambda d, i: d.ctx.hidden(i), staged=True)
        first = [(request[2], request[1], d._pending_addr) for d, request in jobs]
        return chained_steps(jobs, first, lambda d, i: d.ctx.hidden_addr(i))

    def accept(self, n_accepted: int) -> None:
        if len(self.verify_h):
            np.copyto(self.pending, self.verify_h[min(n_accepted, len(self.verify_h) - 1)])
