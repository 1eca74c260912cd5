"""`dflash`: a block-diffusion drafter conditioned on the target's hidden states (llama.cpp's
`draft-dflash`, `common_speculative_impl_draft_dflash` in common/speculative.cpp).

The protocol, step for step as llama.cpp's:
- the target keeps the inputs of the layers the drafter names (`dflash.target_layers`);
- after every target batch (the prompt, and each verify batch, rejected rows included) those
  features, concatenated per token, are decoded into the drafter's context as embedding-only
  entries at the tokens' positions: its `fc` projects them and writes its K/V cache there;
- to draft, the drafter decodes one block `[id_last, <mask> x n_max]` at positions pos0.. with
  non-causal attention (unless the GGUF says `dflash.attention.causal = true`) and reads its greedy
  token at each mask position, stopping below `p_min` (top-10 softmax, as llama.cpp's draft
  sampler), dropping drafts shorter than `n_min`;
- `n_max`/`n_min` are clamped to the trained block size minus one (the anchor takes one slot);
- the noise block's K/V is dropped before verification, and the rejected tail after it, through
  the same calls as a draft model's (`restore_checkpoint`, `trim`).
The drafter borrows the target's token embeddings and output head through its context's
`ctx_other`, so its context is made with the target's context as `other` (backends/inprocess.py).
With several streams each stream's drafter decodes in its own sequence of the drafter's context
and reads its rows of the target's joint batch (from `row0`).

`dspark` (llama.cpp's `draft-dspark`, the same implementation with `is_dspark`) is the dflash arch
with a Markov head: with `dflash.sample_from_anchor` (llama.cpp's default when the key is absent)
the block is `[id_last, <mask> x (n_max - 1)]` and the draft is read from every position, the
anchor's included, so up to the whole block size is drafted; without it, as DFlash. Its `p_min`
reads the confidence head (the first value of each position's kept hidden row) instead of the
token's probability, and needs that head (`dflash.has_confidence_head`, assumed present when
absent, as llama.cpp does).
"""

from __future__ import annotations

import llama_cpp as ll
import numpy as np

from specsweep.engine import ext
from specsweep.engine.drafters.draft_model import DraftModel, settle, top_token
from specsweep.engine.runtime import Context
from specsweep.errors import SpecsweepError


def dflash_layout(model) -> tuple[list[int], int, bool]:
    """(target layers, block size, causal) of a DFlash drafter model, as llama.cpp reads them."""
    layers = ext.target_layer_ids(model.ptr)
    if not layers:
        raise SpecsweepError(f"{model.path.name} is not a DFlash drafter: it names no target layers")
    if ext.call("model_dflash_selector_top_k", model.ptr) > 0:
        raise SpecsweepError(f"{model.path.name} is a DFlash2 (selector) drafter, which specsweep does not run yet")
    block = model.meta("dflash.block_size")
    return layers, int(block) if block else 16, model.meta("dflash.attention.causal") == "true"


class DFlash(DraftModel):
    name = "dflash"
    anchor = False  # the anchor position's output is not part of the draft
    batched_process = False  # it reads its stream's rows of the target's batch, stream after stream

    def __init__(self, ctx: Context, target: Context, n_max: int = 16, n_min: int = 0, p_min: float = 0.0,
                 seq: int = 0):
        self.layers, self.block_size, causal = dflash_layout(ctx.model)
        limit = self.block_size if self.anchor else self.block_size - 1
        super().__init__(ctx, n_max=min(n_max, limit), n_min=min(n_min, limit), p_min=p_min, seq=seq)
        self.use_checkpoints = False  # an attention-only drafter: seq_rm drops any tail
        self.target = target
        self.mask = ll.llama_vocab_mask(ctx.model.vocab)
        if self.mask < 0:
            raise SpecsweepError(f"{ctx.model.path.name} has no mask token (tokenizer.ggml.mask_token_id)")
        self.n_ubatch = ll.llama_n_ubatch(ctx.ptr)
        target.extract_layer_inputs(self.layers)
        ctx.output_hidden(masked=True)  # as llama.cpp sets it for a (non-selector) DFlash context
        ctx.set_causal(causal)

    def process(self, tokens: list[int], pos0: int) -> None:
        n, r0 = len(tokens), self.row0
        features = np.concatenate([self.target.layer_input(lid, r0 + n)[r0:] for lid in self.layers], axis=1)
        for off in range(0, n, self.n_ubatch):
            batch = self.ctx.ext_batch()
            for i in range(off, min(off + self.n_ubatch, n)):
                batch.add(pos0 + i, embd=features[i], seq=self.seq)
            self.ctx.process(batch)

    def draft(self, prompt: list[int], id_last: int, pos0: int, n_max: int) -> list[int]:
        return type(self).draft_many([(self, (prompt, id_last, pos0, n_max))])[0]

    @staticmethod
    def draft_many(jobs: list[tuple["DFlash", tuple]]) -> list[list[int]]:
        """One block `[id_last, <mask>...]` per stream, (drafter, (prompt, id_last, pos0, n_max))
        each, all in one decode of the shared drafter context (llama.cpp's draft for its slots)."""
        ctx = jobs[0][0].ctx
        batch = ctx.ext_batch()
        starts = []  # the batch index of each stream's block
        for d, (_, id_last, pos0, _) in jobs:
            starts.append([batch.add(pos0 + i, token=id_last if i == 0 else d.mask, output=True, seq=d.seq)
                           for i in range(d.n_block)][0])
        ctx.process(batch)
        return [settle(d, d._read(at, d.n_block), request[3]) for (d, request), at in zip(jobs, starts)]

    @property
    def n_block(self) -> int:
        return self.n_max + (0 if self.anchor else 1)

    def _read(self, at: int, n_block: int) -> list[int]:
        """Greedy tokens at the mask positions of the block at batch index `at`, stopping below p_min."""
        out: list[int] = []
        for i in range(at + 1, at + n_block):
            token, p = top_token(self.ctx, i, self.p_min)
            if p < self.p_min:
                break
            out.append(token)
        return out


class DSpark(DFlash):
    name = "dspark"

    def __init__(self, ctx: Context, target: Context, n_max: int = 16, n_min: int = 0, p_min: float = 0.0,
                 seq: int = 0):
        self.anchor = ctx.model.meta("dflash.sample_from_anchor") in (None, "true")
        has_head = ctx.model.meta("dflash.has_confidence_head") in (None, "true")
        if p_min > 0.0 and not has_head:
            raise SpecsweepError(f"{ctx.model.path.name}: a DSpark drafter without a confidence head needs "
                                 f"p_min = 0 (llama.cpp: DSpark draft has no confidence head)")
        super().__init__(ctx, target, n_max=n_max, n_min=n_min, p_min=p_min, seq=seq)

    def _read(self, at: int, n_block: int) -> list[int]:
        """Greedy tokens from the anchor's position on (or from the first mask) of the block at batch
        index `at`, stopping where the confidence head says p < p_min."""
        conf = None
        if self.p_min > 0.0:
            ptr = ext.call("get_embeddings_nextn", self.ctx.ptr)
            conf = np.ctypeslib.as_array(ptr, shape=(at + n_block, self.ctx.model.n_embd))[:, 0]
        out: list[int] = []
        for i in range(at + (0 if self.anchor else 1), at + n_block):
            if conf is not None and conf[i] < self.p_min:
                break
            out.append(top_token(self.ctx, i, 0.0)[0])
        return out
