"""The greedy speculative decoding loop, step for step as llama.cpp's `speculative-simple`.

One trial: prefill the prompt (all but its last token), then repeat: ask the drafter for up to
`n_max` tokens, verify `[last, *draft]` in one target batch, keep the longest prefix the target
agrees with plus the target's own next token, and roll the rejected tail back. Plain decoding is
the same loop with no drafter, so baseline and speculative numbers come from one code path.

Rollback follows llama.cpp: a target whose memory can drop a sequence tail (attention KV, or a
hybrid context created with `n_rs_seq` recurrent-state snapshots) uses `seq_rm`; a hybrid without
snapshots saves a checkpoint of its recurrent state before each verify, and on a partial acceptance
restores it and re-decodes the accepted tokens as the next batch (`rollback = "checkpoint"`).

The loop and its stop rule (`n_generated > n_predict`) are llama.cpp's, and llama.cpp's own
counters are kept (`n_drafted_llama`, `n_accepted_llama`) for the parity test with
`llama-speculative-simple`; `n_drafted`/`n_accepted` count each draft once, by its verdict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from specsweep.engine.drafters import Drafter
from specsweep.engine.runtime import Context
from specsweep.errors import SpecsweepError

_now = time.perf_counter


@dataclass
class TrialResult:
    tokens: list[int]  # generated tokens, in order
    n_drafted: int = 0  # drafted tokens whose verdict stood (re-decodes excluded)
    n_accepted: int = 0
    # llama.cpp's own counters: after a checkpoint rollback it counts the re-decoded tokens as
    # drafted and accepted and the rejected draft not at all; kept for the parity test only
    n_drafted_llama: int = 0
    n_accepted_llama: int = 0
    n_steps: int = 0  # target verify batches
    n_rollbacks: int = 0  # checkpoint restores (hybrid targets)
    drafted_by_pos: list[int] = field(default_factory=list)  # drafts that reached position i
    accepted_by_pos: list[int] = field(default_factory=list)  # ... and were accepted there
    t_prefill: float = 0.0
    t_decode: float = 0.0  # wall time of the generation loop
    t_draft: float = 0.0
    t_verify: float = 0.0
    t_rollback: float = 0.0
    # seconds of each target decode of the loop (a verify, or a plain step), in order: a traced
    # trial sets them beside each pass's expert union (engine/expert_trace.py)
    pass_times: list[float] = field(default_factory=list)
    loop: str = "simple"  # "simple": llama-speculative-simple's loop; "server": a llama-server slot's
    # the target's recurrent-state checkpoints (hybrid targets without snapshots): the copies made
    ckpt_saves: int = 0
    ckpt_restores: int = 0
    ckpt_bytes: int = 0  # bytes copied by saves and restores

    @property
    def t_host(self) -> float:
        """Loop time spent in neither the drafter, the target nor rollback: Python's own work."""
        return max(self.t_decode - self.t_draft - self.t_verify - self.t_rollback, 0.0)

    @property
    def decode_tps(self) -> float:
        return len(self.tokens) / self.t_decode if self.t_decode > 0 else 0.0

    @property
    def acceptance(self) -> float | None:
        return self.n_accepted / self.n_drafted if self.n_drafted else None


def count_positions(result: TrialResult, n_draft: int, n_accept: int) -> None:
    for counts, n in ((result.drafted_by_pos, n_draft), (result.accepted_by_pos, n_accept)):
        if len(counts) < n:
            counts.extend([0] * (n - len(counts)))
        for i in range(n):
            counts[i] += 1


def run_trial(target: Context, prompt: list[int], n_predict: int, drafter: Drafter | None = None,
              use_checkpoints: bool | None = None) -> TrialResult:
    """Generate greedily from `prompt` with `target` (whose memory must be empty)."""
    if len(prompt) < 2:
        raise ValueError("a prompt needs at least two tokens")
    if use_checkpoints is None:
        use_checkpoints = drafter is not None and not target.can_remove_partially()
    model = target.model
    result = TrialResult(tokens=[])

    t0 = _now()
    prompt_tgt = list(prompt[:-1])
    step = target.opts.n_batch
    for i in range(0, len(prompt_tgt), step):  # a drafter reads each batch's hidden states
        target.decode(prompt_tgt[i : i + step], i, all_logits=False)
        if drafter:
            drafter.process(prompt_tgt[i : i + step], i)
    target.sync()
    result.t_prefill = _now() - t0

    id_last = prompt[-1]
    n_past = len(prompt_tgt)
    n_generated = 0
    if drafter:
        drafter.begin(prompt_tgt)
    draft: list[int] = []
    redecode = False  # the current batch re-decodes accepted tokens after a rollback
    ckpt_state = None  # the target checkpoint (a reused buffer) taken before this verify
    ckpt_n_tokens = ckpt_pos_max = 0
    n_ctx = target.opts.n_ctx

    t_loop = _now()
    while True:
        if not draft:
            if drafter:
                ckpt_n_tokens, ckpt_pos_max = len(prompt_tgt), target.pos_max()
                n_draft_max = max(min(n_ctx - n_past - 2, n_predict - n_generated - 1), 0)
                t = _now()
                drafter.save_checkpoint()
                draft = drafter.draft(prompt_tgt, id_last, n_past, n_draft_max)
                result.t_draft += _now() - t
                if draft and use_checkpoints:
                    t = _now()
                    ckpt_state = target.save_partial_state()
                    result.t_rollback += _now() - t
                    result.ckpt_saves += 1
                    result.ckpt_bytes += ckpt_state[1]
                t = _now()
                drafter.restore_checkpoint(ckpt_pos_max + 1)
                result.t_draft += _now() - t

        batch = [id_last] + draft
        t = _now()
        target.decode(batch, n_past, all_logits=True)
        target.sync()
        dt = _now() - t
        result.t_verify += dt
        result.pass_times.append(dt)
        n_past += 1
        result.n_steps += 1
        if drafter:
            t = _now()
            drafter.process(batch, n_past - 1)
            result.t_draft += _now() - t

        # greedy verification: the target's choice after each prefix of the draft
        ids = []
        for i, guess in enumerate(draft):
            choice = target.argmax(i)
            ids.append(choice)
            if choice != guess:
                break
        else:
            ids.append(target.argmax(len(draft)))
        n_draft = len(draft)

        if use_checkpoints and len(ids) - 1 < n_draft:
            # partial acceptance on a hybrid target: restore the recurrent state and re-decode the
            # accepted tokens (plus the target's correction) as the next batch
            t = _now()
            target.load_partial_state(ckpt_state)
            target.seq_rm(ckpt_pos_max + 1, -1)
            result.t_rollback += _now() - t
            result.ckpt_restores += 1
            result.ckpt_bytes += ckpt_state[1]
            if drafter:
                t = _now()
                drafter.restore_checkpoint(ckpt_pos_max + 1)
                result.t_draft += _now() - t
            result.n_rollbacks += 1
            result.n_drafted += n_draft
            result.n_accepted += len(ids) - 1
            count_positions(result, n_draft, len(ids) - 1)
            draft, redecode = ids, True
            del prompt_tgt[ckpt_n_tokens:]
            n_past = len(prompt_tgt)
            continue

        n_accept = len(ids) - 1
        if drafter:
            drafter.accept(n_accept)
        n_past += n_accept
        result.n_drafted_llama += n_draft
        result.n_accepted_llama += n_accept
        if not redecode:
            result.n_drafted += n_draft
            result.n_accepted += n_accept
            count_positions(result, n_draft, n_accept)
        redecode = False
        n_generated += len(ids)
        eos = False
        for token in ids:
            prompt_tgt.append(id_last)
            id_last = token
            result.tokens.append(token)
            if model.is_eog(token):
                eos = True
                break
        draft = []
        # llama.cpp drops the tail past n_past every step; with nothing rejected there is no tail
        # (a plain step, a fully accepted draft), and seq_rm scans every cell of the cache to find so
        if n_accept < n_draft:
            t = _now()
            if not target.seq_rm(n_past, -1):
                raise SpecsweepError(
                    f"the target could not drop {n_draft - n_accept} rejected tokens: a hybrid model "
                    f"needs checkpoints or n_rs_seq > the draft length (n_rs_seq={target.opts.n_rs_seq})")
            result.t_rollback += _now() - t
            if drafter:
                t = _now()
                drafter.trim(n_past)
                result.t_draft += _now() - t
        if n_generated > n_predict or eos:
            break
    result.t_decode = _now() - t_loop
    return result
