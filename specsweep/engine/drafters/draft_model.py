"""`draft`: a small vocab-matched model in its own context (llama.cpp's `draft-simple`).

llama.cpp's meaning of the knobs: draft up to `n_max` tokens greedily, stop early when the draft's
top token has probability below `p_min` (softmax over its top 10 logits, as the draft sampler's
top-k 10 leaves them), and throw the draft away if it is shorter than `n_min`. The draft context
also decodes every target batch (`process`), so it stays in step with the accepted text.
Defaults are llama.cpp's: n_max 3, n_min 0, p_min 0.

With several streams (`parallel`), each stream's DraftModel owns one sequence of a shared draft
context, and `draft_many`/`process_many` batch the streams' draft steps and target batches into one
decode each, as llama.cpp's draft-simple does for a server's slots.
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


def settle(drafter, out: list[int], limit: int) -> list[int]:
    """llama.cpp's last word on a draft: shorter than n_min, dropped; longer than the caller's limit
    (when it gives one), truncated."""
    if len(out) < drafter.n_min:
        return []
    return out[:limit] if limit > 0 else out


def chained_steps(jobs: list[tuple], first: list[tuple | None], read_hidden, staged: bool = False) -> list[list[int]]:
    """Single-token draft steps of several streams of one context (MTP's head, EAGLE-3's decoder),
    one batch per step. jobs: (drafter, (prompt, id_last, pos0, limit)) each; first[k]: stream k's
    (position, token, address of its hidden-state row) to start from, None where it drafts nothing.
    Each step feeds a drafting stream its last token and the hidden state its previous step left
    (read_hidden(drafter, output row): the row's address in the context's output, which the next
    batch copies before the next decode, as llama.cpp does), until n_max tokens or one below p_min;
    then llama.cpp's n_min and limit rules. A row is the drafter's `n_embd` floats wide. `staged`:
    rows are arrays (views), copied into the context's staging rows and decoded with
    `decode_staged` (an MTP head's); else addresses, added to an extended batch."""
    ctx = jobs[0][0].ctx
    outs: list[list[int]] = [[] for _ in jobs]
    step = [(k, *start) for k, start in enumerate(first) if start is not None]
    while step:
        if staged:
            rows = ctx.staging(len(step), jobs[0][0].n_embd)
            for j, (_, _, _, h) in enumerate(step):
                rows[j] = h
            at = ctx.decode_staged([(jobs[k][0].seq, [token], pos + len(outs[k])) for k, pos, token, _ in step])
        else:
            batch = ctx.ext_batch()
            at = [batch.add_row(pos + len(outs[k]), token, h, jobs[k][0].n_embd, True, jobs[k][0].seq)
                  for k, pos, token, h in step]
            ctx.process(batch)
        going = []
        for (k, pos, _, _), i in zip(step, at):
            d = jobs[k][0]
            token, p = top_token(ctx, i, d.p_min)
            if d._keeps(outs[k], token, p, 0):  # up to the drafter's own n_max: the limit comes after
                going.append((k, pos, token, read_hidden(d, i)))
        step = going
    return [settle(d, out, req[3]) for out, (d, req) in zip(outs, jobs)]


class DraftModel(Drafter):
    name = "draft"
    # several streams: `draft_many` drafts them in shared decodes, `process_many` hands them the
    # target's batches in one decode (subclasses that read the target's rows say False where not)
    batched_drafts = True
    batched_process = True

    def __init__(self, ctx: Context, n_max: int = 3, n_min: int = 0, p_min: float = 0.0, seq: int = 0):
        self.ctx, self.n_max, self.n_min, self.p_min, self.seq = ctx, n_max, n_min, p_min, seq
        # A hybrid draft cannot drop its own drafted tokens with seq_rm: they were decoded one at a
        # time and a recurrent-state snapshot only undoes the last decode, so it checkpoints its
        # recurrent state instead (llama.cpp does the same; its draft contexts have n_rs_seq = 0).
        # Dropping the rejected tail of a verify batch (`trim`) on a hybrid draft needs n_rs_seq
        # snapshots when the target rolls back with snapshots; specsweep gives the draft context
        # the target's n_rs_seq in that mode (see run/runner.py).
        self.use_checkpoints = ctx.model.has_recurrent_state
        self._ckpt: bytes | None = None

    def process(self, tokens: list[int], pos0: int) -> None:
        self.ctx.decode(tokens, pos0, seq=self.seq)

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        return DraftModel.draft_many([(self, (prompt, id_last, pos0, n_max))])[0]

    def _keeps(self, out: list[int], token: int, p: float, n_max: int) -> bool:
        """Take `token` into `out` unless p_min stops the draft; True while it may go on."""
        if p < self.p_min:
            return False
        out.append(token)
        return not (self.n_max <= len(out) or 0 < n_max <= len(out))

    @staticmethod
    def draft_many(jobs: list[tuple["DraftModel", tuple]]) -> list[list[int]]:
        """Drafts for several streams of one draft context, (drafter, (prompt, id_last, pos0,
        n_max)) each: every step decodes the next token of each stream still drafting in one batch."""
        ctx = jobs[0][0].ctx
        outs: list[list[int]] = [[] for _ in jobs]
        step = [(k, [request[1]], request[2]) for k, (_, request) in enumerate(jobs)]
        while step:
            starts = ctx.decode_streams([(jobs[k][0].seq, tokens, pos) for k, tokens, pos in step])
            going = []
            for (k, _, _), at in zip(step, starts):
                drafter, request = jobs[k]
                token, p = top_token(ctx, at, drafter.p_min)
                if drafter._keeps(outs[k], token, p, request[3]):
                    going.append((k, [token], request[2] + len(outs[k])))
            step = going
        return [settle(d, out, request[3]) for out, (d, request) in zip(outs, jobs)]  # the loop kept the limit

    @staticmethod
    def process_many(jobs: list[tuple["DraftModel", list[int], int]]) -> None:
        """The target's batches of several streams, (drafter, tokens, pos0) each, in one decode."""
        jobs[0][0].ctx.decode_streams([(d.seq, tokens, pos0) for d, tokens, pos0 in jobs], logits=False)

    def save_checkpoint(self) -> None:
        if self.use_checkpoints:
            self._ckpt = self.ctx.save_partial_state(self.seq)

    def restore_checkpoint(self, pos: int) -> None:
        if self.use_checkpoints and self._ckpt is not None:
            self.ctx.load_partial_state(self._ckpt, self.seq)
        self.ctx.seq_rm(pos, -1, self.seq)

    def trim(self, n_past: int) -> None:
        self.ctx.seq_rm(n_past, -1, self.seq)  # fails silently on a hybrid draft, as in llama.cpp
