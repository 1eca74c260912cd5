"""`eagle3`: an EAGLE-3 drafter (llama.cpp's `draft-eagle3`, `common_speculative_impl_draft_eagle3`
in common/speculative.cpp). Several streams each decode in their own sequence of the drafter's
context and read their rows of the target's joint batch (from `row0`).

The drafter reads three target layers (`eagle3.target_layers`; a layer id equal to the target's
layer count means its final hidden state). Step for step as llama.cpp:
- after every target batch, the three layers' rows are concatenated per token and *encoded* by the
  drafter (`fc`, LLAMA_PROCESS_TYPE_ENCODE) into one g row per token;
- the drafter's decoder then takes, at position P, the pair (token at P+1, g at P): a batch of n
  target tokens writes positions pos0 .. pos0+n-2, and the last pair waits for the token that
  follows the batch (the "deferred boundary": its g row and position are kept);
- to draft, the deferred pair is completed with the token just sampled, then the drafter decodes
  its own greedy token paired with its own pre-norm hidden state, up to n_max tokens, stopping
  below p_min;
- when k drafted tokens are accepted, the deferred pair becomes verify row k.
llama.cpp gives the drafter's context no snapshots, and a hybrid target `n_rs_seq` (snapshot
rollback). speculative-simple does not use the drafter's boundary stash on checkpoint restores,
and neither does specsweep.
"""

from __future__ import annotations

import numpy as np

from specsweep.engine import ext
from specsweep.engine.drafters.draft_model import DraftModel, chained_steps
from specsweep.engine.runtime import Context
from specsweep.errors import SpecsweepError


def eagle3_layers(drafter_model, target_model) -> list[int]:
    """The drafter's three target layers, refused before llama.cpp would abort on them."""
    layers = ext.target_layer_ids(drafter_model.ptr)
    if len(layers) != 3:
        raise SpecsweepError(f"{drafter_model.path.name} is not an EAGLE-3 drafter: it names "
                             f"{len(layers)} target layers, EAGLE-3 reads exactly 3")
    beyond = [x for x in layers if x > target_model.n_layer]
    if beyond:
        raise SpecsweepError(f"EAGLE-3 drafter {drafter_model.path.name} reads target layers {beyond}, but "
                             f"{target_model.path.name} has {target_model.n_layer} layers")
    return layers


class Eagle3(DraftModel):
    name = "eagle3"

    def __init__(self, ctx: Context, target: Context, n_max: int = 3, n_min: int = 0, p_min: float = 0.0,
                 seq: int = 0):
        super().__init__(ctx, n_max=n_max, n_min=n_min, p_min=p_min, seq=seq)
        self.use_checkpoints = False  # an attention-only drafter: seq_rm drops any tail
        self.target = target
        self.layers = eagle3_layers(ctx.model, target.model)
        n_layer = target.model.n_layer
        target.extract_layer_inputs([x for x in self.layers if x < n_layer])
        if n_layer in self.layers:
            target.output_hidden(masked=False)  # the final hidden state of every token
        ctx.output_hidden(masked=True)  # the encoder's g rows and the decoder's pre-norm states
        self.n_embd = ctx.model.n_embd
        self.n_ubatch = ctx.opts.n_batch
        self.pending_g = np.zeros(self.n_embd, dtype=np.float32)
        self.pending_pos = -1
        self.verify_g = np.zeros((0, self.n_embd), dtype=np.float32)
        self.verify_pos = -1

    def _features(self, n: int) -> np.ndarray:
        """This stream's rows (from row0) of the layers' inputs in the target's last batch."""
        n_layer, r0 = self.target.model.n_layer, self.row0
        rows = [(self.target.layer_input(x, r0 + n) if x < n_layer else self.target.hidden_rows(r0 + n))[r0:]
                for x in self.layers]
        return np.concatenate(rows, axis=1)

    def _encode(self, features: np.ndarray) -> np.ndarray:
        """One g row per feature row, in chunks of the drafter's batch. The encoder is per token and
        ignores positions: like llama.cpp, it runs in sequence 0 at placeholder positions after that
        sequence's memory, for every stream's rows."""
        out = np.empty((len(features), self.n_embd), dtype=np.float32)
        for off in range(0, len(features), self.n_ubatch):
            chunk = features[off : off + self.n_ubatch]
            batch = self.ctx.ext_batch()
            pos = self.ctx.pos_max(0) + 1
            for j, row in enumerate(chunk):
                batch.add(pos + j, embd=row, output=True, seq=0)
            self.ctx.process(batch, encode=True)
            out[off : off + len(chunk)] = self.ctx.hidden_rows(len(chunk), self.n_embd)
        return out

    def process(self, tokens: list[int], pos0: int) -> None:
        Eagle3.process_many([(self, tokens, pos0)])

    @staticmethod
    def process_many(jobs: list[tuple["Eagle3", list[int], int]]) -> None:
        """The target's batches of several streams, (drafter, tokens, pos0) each, as llama.cpp's
        EAGLE-3 takes a server's joint batch: every stream's feature rows through the encoder
        together, then one decode of every stream's (token k+1, g k) pairs, in stream order."""
        jobs = sorted(jobs, key=lambda job: job[0].seq)
        first = jobs[0][0]
        g_all = first._encode(np.concatenate([d._features(len(tokens)) for d, tokens, _ in jobs]))
        batch = first.ctx.ext_batch()
        any_pairs, off = False, 0
        for d, tokens, pos0 in jobs:
            n = len(tokens)
            g = g_all[off : off + n]
            off += n
            bridge = (d.pending_pos >= 0 and d.pending_pos + 1 == pos0
                      and d.pending_pos > d.ctx.pos_max(d.seq))
            if bridge:  # the previous batch's deferred pair, completed by this batch's first token
                batch.add(d.pending_pos, token=tokens[0], embd=d.pending_g, seq=d.seq)
            for k in range(n - 1):
                batch.add(pos0 + k, token=tokens[k + 1], embd=g[k], seq=d.seq)
            d.verify_pos, d.pending_pos = pos0, pos0 + n - 1
            d.verify_g = g.copy()
            d.pending_g = g[n - 1].copy()
            any_pairs = any_pairs or bridge or n > 1
        if any_pairs:
            first.ctx.process(batch)

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        return Eagle3.draft_many([(self, (prompt, id_last, pos0, n_max))])[0]

    @staticmethod
    def draft_many(jobs: list[tuple["Eagle3", tuple]]) -> list[list[int]]:
        """Drafts for several streams of one drafter context, (drafter, (prompt, id_last, pos0,
        n_max)) each: every step decodes each drafting stream's (token, g) in one batch. A stream
        with nothing pending yet drafts nothing."""
        first = []
        for d, request in jobs:
            if d.pending_pos >= 0:
                d.ctx.seq_rm(d.pending_pos, -1, d.seq)
            # pending_g is a contiguous row the drafter keeps: it lives through the first step's batch
            first.append((d.pending_pos, request[1], d.pending_g.ctypes.data) if d.pending_pos >= 0 else None)
        return chained_steps(jobs, first, lambda d, i: d.ctx.hidden_addr(i))

    def accept(self, n_accepted: int) -> None:
        if len(self.verify_g):
            i = min(n_accepted, len(self.verify_g) - 1)
            self.pending_pos = self.verify_pos + i
            self.pending_g = self.verify_g[i].copy()
