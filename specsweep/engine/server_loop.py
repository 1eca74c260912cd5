"""The speculative loop of one llama-server slot (tools/server/server-context.cpp), in process.

specsweep's main loop follows `llama-speculative-simple`. Cells with synthetic acceptance follow
the server instead, because llama.cpp implements synthetic acceptance only there
(`server_sample_and_accept_synth`), and its loop differs from speculative-simple's in ways that
change the counts:
- the whole prompt is decoded (and handed to the drafter) and the first token is sampled from it,
  then `begin` sees the whole prompt;
- a step drafts only while its draft limit, n_ctx - tokens - 2 and (tokens left to generate) - 1,
  is above 0, so it never overshoots n_predict: the last token is a plain step;
- with a hybrid target it chooses per step: a checkpoint when the target has no recurrent-state
  snapshots, or when the draft (at save) or the rejected tail (at restore) is longer than its
  `n_rs_seq` snapshots; a plain `seq_rm` otherwise;
- after a checkpoint restore the accepted tokens (and the target's correction) are decoded again
  as a *replay*: accepted without draws, not counted as drafted again, and its accepted count is
  one less (the correction was the target's token, not a draft);
- counters are the server's: `draft_n` (tokens of new drafts) and `draft_n_accepted`.
With `synth` set, acceptance is synthetic (engine/synthetic.py); without it, greedy agreement,
which makes this loop a second in-process model of llama-server's speculation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from specsweep.engine import synthetic
from specsweep.engine.drafters import Drafter
from specsweep.engine.runtime import Context
from specsweep.engine.speculative import TrialResult, count_positions
from specsweep.errors import SpecsweepError

_now = time.perf_counter


@dataclass
class Synth:
    probs: list[float]  # conditional accept probability per draft position
    seed: int  # the request's seed


class SlotLoop:
    """One slot's generation, step by step, so that several slots can share each target decode
    (engine/parallel.py) while one slot alone is `run_trial_server`. A step is: `want_draft()`
    (the slot's draft request, or None), `set_draft()` with what the drafter made, `batch()` (the
    tokens to verify), one target decode holding the batches of every slot, then `verify(at)`
    with the batch index where this slot's tokens start."""

    def __init__(self, target: Context, prompt: list[int], n_predict: int, drafter: Drafter | None = None,
                 synth: Synth | None = None, use_checkpoints: bool = False, seq: int = 0, n_ctx: int | None = None):
        self.target, self.model, self.prompt, self.n_predict = target, target.model, prompt, n_predict
        self.drafter, self.synth, self.seq = drafter, synth, seq
        self.use_checkpoints = use_checkpoints
        self.n_rs = target.opts.n_rs_seq
        self.hybrid = use_checkpoints or self.n_rs > 0  # a recurrent state to save: checkpoints or snapshots
        self.n_ctx = n_ctx or target.opts.n_ctx  # this slot's share of the context
        self.result = TrialResult(tokens=[])
        self.rng = synthetic.SynthRng(synth.seed) if synth else None
        self.cache: list[int] = []  # slot.prompt.tokens: every token in the target's memory
        self.draft: list[int] = []
        self.replay = False
        self.new_draft = False
        self.ckpt = None  # (n_tokens, pos_max, target state or None)
        self.sampled = -1
        self._pos0 = 0
        self.process_deferred = False  # several streams: their drafters saw the batch already

    def needs_checkpoint(self, n: int) -> bool:
        return self.hybrid and (self.use_checkpoints or n > self.n_rs)

    def prefill(self) -> None:
        """Decode the whole prompt (the drafter sees each batch) and sample the first token."""
        target, drafter, prompt, r = self.target, self.drafter, self.prompt, self.result
        t0 = _now()
        step = target.opts.n_batch
        for i in range(0, len(prompt), step):
            target.decode(prompt[i : i + step], i, all_logits=False, seq=self.seq)
            if drafter:
                drafter.process(prompt[i : i + step], i)
        self.sampled = target.argmax()
        r.t_prefill = _now() - t0
        r.tokens.append(self.sampled)
        if drafter:
            drafter.begin(list(prompt))
        self.cache = list(prompt)

    def done(self) -> bool:
        return len(self.result.tokens) >= self.n_predict or self.model.is_eog(self.result.tokens[-1])

    def want_draft(self) -> tuple[list[int], int, int, int] | None:
        """(tokens so far, last sampled, its position, draft limit) when this step drafts."""
        n_draft_max = min(self.n_ctx - len(self.cache) - 2, self.n_predict - len(self.result.tokens) - 1)
        self.new_draft = False
        if not self.drafter or n_draft_max <= 0 or self.draft:
            return None
        self._pos_max = self.target.pos_max(self.seq)
        return self.cache, self.sampled, len(self.cache), n_draft_max

    def set_draft(self, draft: list[int], n_draft_max: int, t_draft: float) -> None:
        r = self.result
        self.draft = draft[:n_draft_max]
        r.t_draft += t_draft
        r.n_drafted += len(self.draft)
        self.new_draft = bool(self.draft)
        t = _now()
        self.drafter.restore_checkpoint(self._pos_max + 1)
        r.t_draft += _now() - t
        self.ckpt = (len(self.cache), self._pos_max, None)
        if self.draft and self.needs_checkpoint(len(self.draft)):
            t = _now()
            self.ckpt = (len(self.cache), self._pos_max, self.target.save_partial_state(self.seq))
            r.t_rollback += _now() - t
            r.ckpt_saves += 1
            r.ckpt_bytes += self.ckpt[2][1]

    def batch(self) -> tuple[list[int], int]:
        """The tokens to verify and their first position; the cache takes them now."""
        batch = [self.sampled] + self.draft
        self._pos0 = len(self.cache)
        self.cache += batch
        return batch, self._pos0

    def verify(self, at: int, batch: list[int], t_verify: float) -> None:
        """After the decode: this slot's outputs start at batch index `at`."""
        target, drafter, r, draft = self.target, self.drafter, self.result, self.draft
        r.t_verify += t_verify
        r.pass_times.append(t_verify)
        r.n_steps += 1
        if drafter and not self.process_deferred:
            t = _now()
            drafter.process(batch, self._pos0)
            r.t_draft += _now() - t
        if not draft:
            self.sampled = target.argmax(at + len(batch) - 1)
            r.tokens.append(self.sampled)
            return
        n_draft = len(draft)
        choice = lambda i: target.argmax(at + i)  # noqa: E731
        if self.synth:
            ids = synthetic.accept(draft, choice, self.synth.probs, self.rng, self.model.is_eog, self.replay)
        else:
            ids = _greedy(choice, draft)
        n_rollback = n_draft + 1 - len(ids)
        if self.new_draft:
            count_positions(r, n_draft, len(ids) - 1)
        if n_rollback > 0 and self.needs_checkpoint(n_rollback):
            ckpt = self.ckpt
            if ckpt is None or ckpt[2] is None:
                raise SpecsweepError("a rejected draft needs a checkpoint the loop did not take")
            t = _now()
            target.load_partial_state(ckpt[2], self.seq)
            target.seq_rm(ckpt[1] + 1, -1, self.seq)
            r.t_rollback += _now() - t
            r.ckpt_restores += 1
            r.ckpt_bytes += ckpt[2][1]
            if drafter:
                t = _now()
                drafter.restore_checkpoint(ckpt[1] + 1)
                r.t_draft += _now() - t
            r.n_rollbacks += 1
            self.draft, self.replay = ids, True
            del self.cache[ckpt[0]:]
            return
        if drafter:
            drafter.accept(len(ids) - 1)
        r.n_accepted += len(ids) - 1 - (1 if self.replay and len(ids) > 1 else 0)
        self.replay = False
        del self.cache[len(self.cache) - n_draft:]
        self.cache += ids[:-1]
        self.sampled = ids[-1]
        self.draft = []
        if n_rollback > 0:  # nothing rejected, no tail to drop (seq_rm would scan the cache to find so)
            t = _now()
            target.seq_rm(len(self.cache), -1, self.seq)
            r.t_rollback += _now() - t
            if drafter:
                t = _now()
                drafter.trim(len(self.cache))
                r.t_draft += _now() - t
        for token in ids:
            r.tokens.append(token)
            if self.done():
                break

    def finish(self, t_decode: float) -> TrialResult:
        r = self.result
        r.t_decode = t_decode
        r.n_drafted_llama, r.n_accepted_llama = r.n_drafted, r.n_accepted
        r.loop = "server"
        return r


def run_trial_server(target: Context, prompt: list[int], n_predict: int, drafter: Drafter | None = None,
                     synth: Synth | None = None, use_checkpoints: bool | None = None) -> TrialResult:
    """Generate from `prompt` as a llama-server slot would (target memory empty). `use_checkpoints`
    says whether the target lacks snapshots for its recurrent state (None: ask the context)."""
    if use_checkpoints is None:
        use_checkpoints = drafter is not None and not target.can_remove_partially()
    slot = SlotLoop(target, prompt, n_predict, drafter, synth, use_checkpoints)
    slot.prefill()
    t_loop = _now()
    while not slot.done():
        request = slot.want_draft()
        if request is not None:
            t = _now()
            drafter.save_checkpoint()
            draft = drafter.draft(*request)
            slot.set_draft(draft, request[3], _now() - t)
        batch, pos0 = slot.batch()
        t = _now()
        target.decode(batch, pos0, all_logits=bool(slot.draft))
        target.sync()
        slot.verify(0, batch, _now() - t)
    return slot.finish(_now() - t_loop)


def _greedy(choice, draft: list[int]) -> list[int]:
    """common_sampler_sample_and_accept_n at temperature 0: the target's token after each prefix
    (`choice(i)`) until it disagrees with the draft (a replay too is compared, as llama.cpp does)."""
    ids = []
    for i, guess in enumerate(draft):
        token = choice(i)
        ids.append(token)
        if token != guess:
            return ids
    ids.append(choice(len(draft)))
    return ids
