"""`eagle3`: an EAGLE-3 drafter (llama.cpp's `draft-eagle3`, `common_speculative_impl_draft_eagle3`
in common/speculative.cpp), one sequence.

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
from specsweep.engine.drafters.draft_model import DraftModel, top_token
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

    def __init__(self, ctx: Context, target: Context, n_max: int = 3, n_min: int = 0, p_min: float = 0.0):
        super().__init__(ctx, n_max=n_max, n_min=n_min, p_min=p_min)
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
        n_layer = self.target.model.n_layer
        rows = [self.target.layer_input(x, n) if x < n_layer else self.target.hidden_rows(n) for x in self.layers]
        return np.concatenate(rows, axis=1)

    def _encode(self, features: np.ndarray) -> np.ndarray:
        """One g row per feature row, in chunks of the drafter's batch (the encoder is per token;
        its positions are placeholders after the drafter's memory)."""
        out = np.empty((len(features), self.n_embd), dtype=np.float32)
        for off in range(0, len(features), self.n_ubatch):
            chunk = features[off : off + self.n_ubatch]
            batch = self.ctx.ext_batch()
            pos = self.ctx.pos_max() + 1
            for j, row in enumerate(chunk):
                batch.add(pos + j, embd=row, output=True)
            self.ctx.process(batch, encode=True)
            out[off : off + len(chunk)] = self.ctx.hidden_rows(len(chunk), self.n_embd)
        return out

    def process(self, tokens: list[int], pos0: int) -> None:
        n = len(tokens)
        g = self._encode(self._features(n))
        batch = self.ctx.ext_batch()
        bridge = self.pending_pos >= 0 and self.pending_pos + 1 == pos0 and self.pending_pos > self.ctx.pos_max()
        if bridge:  # the previous batch's deferred pair, completed by this batch's first token
            batch.add(self.pending_pos, token=tokens[0], embd=self.pending_g)
        for k in range(n - 1):
            batch.add(pos0 + k, token=tokens[k + 1], embd=g[k])
        self.verify_pos, self.pending_pos = pos0, pos0 + n - 1
        self.verify_g = g
        self.pending_g = g[n - 1].copy()
        if bridge or n > 1:
            self.ctx.process(batch)

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        if self.pending_pos < 0:
            return []
        self.ctx.seq_rm(self.pending_pos, -1)
        out: list[int] = []
        token, h = id_last, self.pending_g
        while True:
            batch = self.ctx.ext_batch()
            batch.add(self.pending_pos + len(out), token=token, embd=h, output=True)
            self.ctx.process(batch)
            token, p = top_token(self.ctx, 0, self.p_min)
            if p < self.p_min:
                break
            out.append(token)
            if len(out) >= self.n_max:
                break
            h = self.ctx.hidden(0, self.n_embd).copy()
        if len(out) < self.n_min:
            return []
        return out[:n_max] if n_max > 0 else out  # llama.cpp truncates to the caller's limit

    def accept(self, n_accepted: int) -> None:
        if len(self.verify_g):
            i = min(n_accepted, len(self.verify_g) - 1)
            self.pending_pos = self.verify_pos + i
            self.pending_g = self.verify_g[i].copy()
