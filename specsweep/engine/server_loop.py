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


def run_trial_server(target: Context, prompt: list[int], n_predict: int, drafter: Drafter | None = None,
                     synth: Synth | None = None, use_checkpoints: bool | None = None) -> TrialResult:
    """Generate from `prompt` as a llama-server slot would (target memory empty). `use_checkpoints`
    says whether the target lacks snapshots for its recurrent state (None: ask the context)."""
    model = target.model
    if use_checkpoints is None:
        use_checkpoints = drafter is not None and not target.can_remove_partially()
    n_rs = target.opts.n_rs_seq
    hybrid = use_checkpoints or n_rs > 0  # a recurrent state to save: checkpoints or snapshots

    def needs_checkpoint(n: int) -> bool:
        return hybrid and (use_checkpoints or n > n_rs)

    result = TrialResult(tokens=[])
    rng = synthetic.SynthRng(synth.seed) if synth else None

    t0 = _now()
    step = target.opts.n_batch
    for i in range(0, len(prompt), step):
        target.decode(prompt[i : i + step], i, all_logits=False)
        if drafter:
            drafter.process(prompt[i : i + step], i)
    sampled = target.argmax()
    result.t_prefill = _now() - t0
    result.tokens.append(sampled)
    if drafter:
        drafter.begin(list(prompt))
    cache = list(prompt)  # slot.prompt.tokens: every token in the target's memory
    n_ctx = target.opts.n_ctx
    draft: list[int] = []
    replay = False
    ckpt = None  # (n_tokens, pos_max, target state or None)

    def done() -> bool:
        return len(result.tokens) >= n_predict or model.is_eog(result.tokens[-1])

    t_loop = _now()
    while not done():
        n_draft_max = n_ctx - len(cache) - 2
        n_draft_max = min(n_draft_max, n_predict - len(result.tokens) - 1)
        new_draft = False
        if drafter and n_draft_max > 0 and not draft:
            pos_max = target.pos_max()
            t = _now()
            drafter.save_checkpoint()
            draft = drafter.draft(cache, sampled, len(cache), n_draft_max)[:n_draft_max]
            result.t_draft += _now() - t
            result.n_drafted += len(draft)
            new_draft = bool(draft)
            t = _now()
            drafter.restore_checkpoint(pos_max + 1)
            result.t_draft += _now() - t
            ckpt = (len(cache), pos_max, None)
            if draft and needs_checkpoint(len(draft)):
                t = _now()
                ckpt = (len(cache), pos_max, target.save_partial_state())
                result.t_rollback += _now() - t
                result.ckpt_saves += 1
                result.ckpt_bytes += ckpt[2][1]

        batch = [sampled] + draft
        pos0 = len(cache)
        cache += batch
        t = _now()
        target.decode(batch, pos0, all_logits=bool(draft))
        target.sync()
        result.t_verify += _now() - t
        result.n_steps += 1
        if drafter:
            t = _now()
            drafter.process(batch, pos0)
            result.t_draft += _now() - t

        if not draft:
            sampled = target.argmax()
            result.tokens.append(sampled)
            continue

        n_draft = len(draft)
        if synth:
            ids = synthetic.accept(draft, target.argmax, synth.probs, rng, model.is_eog, replay)
        else:
            ids = _greedy(target, draft)
        n_rollback = n_draft + 1 - len(ids)
        if new_draft:
            count_positions(result, n_draft, len(ids) - 1)
        if n_rollback > 0 and needs_checkpoint(n_rollback):
            if ckpt is None or ckpt[2] is None:
                raise SpecsweepError("a rejected draft needs a checkpoint the loop did not take")
            t = _now()
            target.load_partial_state(ckpt[2])
            target.seq_rm(ckpt[1] + 1, -1)
            result.t_rollback += _now() - t
            result.ckpt_restores += 1
            result.ckpt_bytes += ckpt[2][1]
            if drafter:
                t = _now()
                drafter.restore_checkpoint(ckpt[1] + 1)
                result.t_draft += _now() - t
            result.n_rollbacks += 1
            draft, replay = ids, True
            del cache[ckpt[0]:]
            continue

        if drafter:
            drafter.accept(len(ids) - 1)
        n_accepted = len(ids) - 1 - (1 if replay and len(ids) > 1 else 0)
        result.n_accepted += n_accepted
        replay = False
        del cache[len(cache) - n_draft:]
        cache += ids[:-1]
        sampled = ids[-1]
        draft = []
        t = _now()
        target.seq_rm(len(cache), -1)
        result.t_rollback += _now() - t
        if drafter:
            t = _now()
            drafter.trim(len(cache))
            result.t_draft += _now() - t
        for token in ids:
            result.tokens.append(token)
            if done():
                break
    result.t_decode = _now() - t_loop
    result.n_drafted_llama, result.n_accepted_llama = result.n_drafted, result.n_accepted
    result.loop = "server"
    return result


def _greedy(target: Context, draft: list[int]) -> list[int]:
    """common_sampler_sample_and_accept_n at temperature 0: the target's token after each prefix
    until it disagrees with the draft (a replay too is compared, as llama.cpp does)."""
    ids = []
    for i, guess in enumerate(draft):
        choice = target.argmax(i)
        ids.append(choice)
        if choice != guess:
            return ids
    ids.append(target.argmax(len(draft)))
    return ids
