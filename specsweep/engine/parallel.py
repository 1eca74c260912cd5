"""Several streams at once in process, as llama-server's slots run them (`parallel = N`).

Each stream is one server slot (engine/server_loop.py's SlotLoop) on its own sequence of one target
context (n_seq_max = N, n_ctx = N x the cell's, so each stream has the cell's context, as
`llama-server -np N -c N*n_ctx` gives each slot). The prompts are decoded stream after stream,
then every step:
- each stream that drafts asks its drafter; a draft model's streams draft together, one decode per
  draft position for all of them, in its one draft context (llama.cpp's draft-simple with several
  sequences); host-side drafters (the n-gram methods) draft stream after stream;
- the verify batches of all streams go into one target decode (llama-server's one batch per step);
- the draft model, and MTP's head, take the streams' batches in one decode too (llama-server
  processes its slots' joint batch once); then each stream keeps what it accepts and rolls back the
  rest on its own sequence.
A stream that is done leaves the batch. Its decode time runs from the start of the loop to its
last token; the trial's window from the start of the loop to the last stream's last token.

Drafters that read the target's rows of a batch (MTP's hidden states, DFlash's, DSpark's and
EAGLE-3's layer features) read their stream's rows of the joint batch, from the index it starts at
(`row0`), and decode in their stream's sequence of their own context. Every drafter kind drafts
its streams together, as llama.cpp's implementations do for a server's slots: a draft model's,
MTP's and EAGLE-3's draft steps, and DFlash's and DSpark's blocks, one decode for all streams.
(With synthetic acceptance the kept drafts are the text, so this matters: on the CPU a draft
decoded alone and one decoded beside another stream can round a near-tie apart.) MTP and
EAGLE-3 take all streams' verify batches in one decode as well; DFlash and DSpark take them stream
after stream.
"""

from __future__ import annotations

import time

from specsweep.engine.drafters import Drafter
from specsweep.engine.runtime import Context
from specsweep.engine.server_loop import SlotLoop, Synth
from specsweep.engine.speculative import TrialResult
from specsweep.errors import SpecsweepError

_now = time.perf_counter

def _draft_all(jobs: list[tuple[SlotLoop, tuple]]) -> list[list[int]]:
    """Every drafting stream's draft: the streams of a drafter kind that drafts together (a draft
    model's steps, DFlash's blocks) in shared decodes, the others stream after stream."""
    drafts: list[list[int] | None] = [None] * len(jobs)
    kinds: dict[type, list[int]] = {}
    for k, (slot, _) in enumerate(jobs):
        if getattr(slot.drafter, "batched_drafts", False):
            kinds.setdefault(type(slot.drafter), []).append(k)
    for kind, ks in kinds.items():
        for k, draft in zip(ks, kind.draft_many([(jobs[k][0].drafter, jobs[k][1]) for k in ks])):
            drafts[k] = draft
    for k, (slot, request) in enumerate(jobs):
        if drafts[k] is None:
            drafts[k] = slot.drafter.draft(*request)
    return drafts


def _process_all(slots: list[SlotLoop], batches: list[tuple[list[int], int]], starts: list[int]) -> None:
    """The drafters see the verify batches: every stream of one drafter kind that can (`batched_process`)
    in one decode, as llama-server processes its slots' joint batch once; the others stream after
    stream. A drafter that reads the target's rows reads its stream's rows of the joint batch,
    from `row0`."""
    together: dict[type, list] = {}
    alone = []
    for s, (b, p), at in zip(slots, batches, starts):
        if s.drafter is None:
            continue
        s.drafter.row0 = at
        if getattr(s.drafter, "batched_process", False):
            together.setdefault(type(s.drafter), []).append((s.drafter, b, p))
        else:
            alone.append((s.drafter, b, p))
    for kind, jobs in together.items():
        kind.process_many(jobs)
    for drafter, b, p in alone:
        drafter.process(b, p)
    for s in slots:
        if s.drafter is not None:
            s.drafter.row0 = 0


def run_streams(target: Context, prompts: list[list[int]], n_predict: int, drafters: list[Drafter | None],
                synths: list[Synth | None] | None = None,
                use_checkpoints: bool = False) -> tuple[list[TrialResult], TrialResult, float]:
    """Generate from every prompt at once, stream k on sequence k (target memory empty). Returns
    each stream's result, the shared loop's time breakdown and the window (seconds)."""
    n = len(prompts)
    if n > target.opts.n_seq_max:
        raise SpecsweepError(f"{n} streams need a context with n_seq_max >= {n}")
    synths = synths or [None] * n
    per_stream_ctx = target.opts.n_ctx // target.opts.n_seq_max
    slots = [SlotLoop(target, p, n_predict, d, sy, use_checkpoints and d is not None, seq=k, n_ctx=per_stream_ctx)
             for k, (p, d, sy) in enumerate(zip(prompts, drafters, synths))]
    for slot in slots:
        slot.prefill()
        slot.process_deferred = True  # from here on _process_all hands the drafters their batches
    loop = TrialResult(tokens=[], loop="server")
    ended: dict[int, float] = {}
    t_loop = _now()
    active = [s for s in slots if not s.done()]
    for s in slots:
        if s.done():
            ended[s.seq] = t_loop
    while active:
        jobs = [(s, r) for s in active for r in [s.want_draft()] if r is not None]
        if jobs:
            t = _now()
            for s, _ in jobs:
                s.drafter.save_checkpoint()
            drafts = _draft_all(jobs)
            dt = _now() - t
            loop.t_draft += dt
            for (s, request), draft in zip(jobs, drafts):
                s.set_draft(draft, request[3], dt)
        batches = [s.batch() for s in active]
        t = _now()
        starts = target.decode_streams([(s.seq, b, p) for s, (b, p) in zip(active, batches)])
        target.sync()
        dt = _now() - t
        loop.t_verify += dt
        loop.n_steps += 1
        if any(s.drafter is not None for s in active):
            t = _now()
            _process_all(active, batches, starts)
            loop.t_draft += _now() - t
        for s, (b, _), at in zip(active, batches, starts):
            s.verify(at, b, dt)
        now = _now()
        for s in active:
            if s.done():
                ended[s.seq] = now
        active = [s for s in active if not s.done()]
    results = [s.finish(ended[s.seq] - t_loop) for s in slots]
    window = max(ended.values()) - t_loop
    loop.t_decode = window
    loop.t_rollback = sum(r.t_rollback for r in results)
    return results, loop, window
