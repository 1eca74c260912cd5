"""Time T(K): one target decode of K tokens at a fixed context depth, synchronised, outputs read.

The context is filled to the depth once. Each timed pass decodes K tokens at positions
depth..depth+K-1 with every output requested, waits for the device, and reads every output (the
argmax of each logit row, or with backend sampling the token picked on the device), which is what a
verify step costs. The K tokens are then dropped outside the timed region: `seq_rm` of the tail,
after restoring the recurrent state from a checkpoint taken once at the depth when the model is
hybrid (a hybrid's memory cannot drop a tail by itself), as the engine's `checkpoint` rollback
does. Each K is timed in a run of its own: warm-up, then `reps` consecutive passes. That keeps
llama.cpp's CUDA graphs warm: they are captured for single-token batches and captured anew whenever
the batch shape changes, so interleaving the K values (the first version of this probe) timed graph
capture, not decoding (on an H100, T(1) came out 9.4-14.7 ms against 4 ms for plain decoding).
What a speculative loop does pay, switching between a verify batch and single tokens, is measured
separately: `switch_times`, a K = 1 pass right after a pass of another size. On a hybrid model the
checkpoint the loop saves before each verify and restores after a rejection (`rollback =
"checkpoint"`) is timed too: every restore that drops a timed pass, and `reps` saves at the end.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from specsweep.engine import expert_trace, runtime
from specsweep.errors import SpecsweepError

DEFAULT_KS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128)
SHORT_PROMPT = 4  # positions before the verify batch when --depth is 0: "a short prompt"
# untimed passes per K: llama.cpp's CUDA backend runs a new batch shape without a graph, captures
# one on the second pass of that shape and replays it from the third (ggml-cuda.cu, graph warm-up),
# so with one warm-up pass the first timed pass was the capture (5x T(1) on the H200 probes)
WARMUP = 2
N_CTX_MARGIN = 16

# ordinary text to fill the context with and to verify: valid tokens for any vocabulary
FILLER = ("The committee met on Tuesday to review the budget for the new library. After a long discussion "
          "about the roof, the parking lot and the children's reading room, they agreed to ask the city "
          "for another quarter of the money. def total(items):\n    return sum(item.price for item in items)\n")

# Peak memory bandwidth (GB/s, 1e9 bytes) by nvidia-smi name: (every fragment must appear, GB/s).
# First match wins, so the more specific rows come first.
KNOWN_BANDWIDTH_GBS = (
    (("h200",), 4800.0),
    (("h100", "pcie"), 2000.0),
    (("h100", "nvl"), 3900.0),
    (("h100",), 3350.0),  # SXM: "NVIDIA H100 80GB HBM3"
    (("a100", "80gb", "pcie"), 1935.0),
    (("a100", "80gb"), 2039.0),  # SXM4
    (("3090", "ti"), 1008.0),
    (("3090",), 936.0),
)


def known_bandwidth_gbs(gpu_name: str | None) -> float | None:
    name = (gpu_name or "").lower()
    if not name:
        return None
    for fragments, gbs in KNOWN_BANDWIDTH_GBS:
        if all(f in name for f in fragments):
            return gbs
    return None


@dataclass
class Curve:
    ks: list[int]
    pos0: int  # position of the first verified token (the context depth)
    n_ctx: int
    n_batch: int
    outputs: str
    kv: str
    rollback: str  # "seq_rm" or "checkpoint"
    batch_tokens: str = "text"  # what the batches hold (probe_stream)
    times: dict[int, list[float]] = field(default_factory=dict)  # seconds per timed pass
    mismatches: int = 0  # passes whose outputs differed from the first pass of the same K
    switch_k: int = 0  # the batch size passed right before each `switch_times` pass
    switch_times: list[float] = field(default_factory=list)  # K = 1 right after a K = switch_k pass
    ckpt_bytes: int = 0  # size of one recurrent-state checkpoint (hybrid models)
    ckpt_save_times: list[float] = field(default_factory=list)
    ckpt_restore_times: list[float] = field(default_factory=list)

    def median(self, k: int) -> float:
        return statistics.median(self.times[k])

    def min(self, k: int) -> float:
        return min(self.times[k])


BATCH_TOKENS = ("text", "distinct")


def filler_tokens(model: runtime.Model, n: int) -> list[int]:
    """n tokens of ordinary text, repeated as often as needed."""
    base = model.tokenize(FILLER, parse_special=False)
    if not base:
        raise SpecsweepError(f"{model.path.name}: the tokenizer gave no tokens for plain text")
    return (base * (n // len(base) + 1))[:n]


def probe_stream(model: runtime.Model, pos0: int, k_max: int, batch_tokens: str = "text") -> list[int]:
    """The context's pos0 tokens of filler text, then the k_max tokens the batches verify: more of
    the text ("text": it repeats after about 80 tokens, as drafts of real text repeat tokens), or
    k_max different tokens ("distinct": a draft with no repeat, the case the i.i.d. union formula
    describes). Distinct tokens are the text's own, then others drawn without replacement (seed 0)
    from the ids that are neither control nor end-of-generation tokens."""
    if batch_tokens not in BATCH_TOKENS:
        raise SpecsweepError(f"unknown batch tokens {batch_tokens!r}: {' or '.join(BATCH_TOKENS)}")
    text = filler_tokens(model, pos0 + k_max)
    if batch_tokens == "text":
        return text
    seen = list(dict.fromkeys(model.tokenize(FILLER, parse_special=False)))[:k_max]
    ordinary = np.setdiff1d(np.arange(model.n_vocab), np.array(model.control_tokens + model.eog_tokens + seen))
    if len(seen) + len(ordinary) < k_max:
        raise SpecsweepError(f"{model.path.name}: {k_max} distinct tokens asked, the vocabulary has "
                             f"{len(seen) + len(ordinary)}")
    drawn = np.random.default_rng(0).choice(ordinary, size=k_max - len(seen), replace=False)
    return text[:pos0] + seen + [int(t) for t in drawn]


def context_size(pos0: int, k_max: int) -> int:
    need = pos0 + k_max + N_CTX_MARGIN
    return -(-need // 256) * 256


def measure_curve(model: runtime.Model, ks: list[int], depth: int = 0, reps: int = 5, outputs: str = "logits",
                  kv: str = "q8_0", n_batch: int = 512, n_threads: int = 0, flash_attn: bool = True,
                  warmup: int = WARMUP, progress=None, batch_tokens: str = "text") -> Curve:
    """T(K) for every K in ks (seconds per pass, `reps` timed passes each)."""
    if not ks or min(ks) < 1:
        raise SpecsweepError("every K must be at least 1")
    if max(ks) > n_batch:
        raise SpecsweepError(f"K = {max(ks)} exceeds n_batch {n_batch}: one verify pass is one batch")
    if reps < 1:
        raise SpecsweepError("--reps must be at least 1")
    if outputs not in ("logits", "sampled"):
        raise SpecsweepError(f"unknown --outputs {outputs!r}: logits or sampled")
    ks = sorted(set(ks))
    pos0 = depth if depth > 0 else SHORT_PROMPT
    n_ctx = context_size(pos0, max(ks))
    opts = runtime.ContextOptions(n_ctx=n_ctx, n_batch=n_batch, type_kv=kv, flash_attn=flash_attn,
                                  n_threads=n_threads, backend_sampling=outputs == "sampled")
    stream = probe_stream(model, pos0, max(ks), batch_tokens)
    with runtime.Context(model, opts) as ctx:
        ctx.decode(stream[:pos0], 0)
        ctx.sync()
        checkpoint = ctx.save_partial_state() if model.has_recurrent_state else None
        curve = Curve(ks=ks, pos0=pos0, n_ctx=n_ctx, n_batch=n_batch, outputs=outputs, kv=kv,
                      rollback="checkpoint" if checkpoint else "seq_rm", times={k: [] for k in ks},
                      batch_tokens=batch_tokens)
        first: dict[int, list[int]] = {}

        def one(k: int) -> float:
            batch = stream[pos0 : pos0 + k]
            t0 = time.perf_counter()
            ctx.decode(batch, pos0, all_logits=True)
            ctx.sync()
            out = [ctx.argmax(i) for i in range(k)]
            dt = time.perf_counter() - t0
            # drop the K tokens again (outside T(K); a checkpoint restore is timed on its own)
            if checkpoint is not None:
                t1 = time.perf_counter()
                ctx.load_partial_state(checkpoint)
                ctx.sync()
                curve.ckpt_restore_times.append(time.perf_counter() - t1)
            if not ctx.seq_rm(pos0, -1):
                raise SpecsweepError(f"{model.path.name}: could not drop the verified tokens from the context")
            if k not in first:
                first[k] = out
            elif out != first[k]:
                curve.mismatches += 1
            return dt

        for n, k in enumerate(ks, 1):
            for _ in range(warmup):
                one(k)
            first.pop(k, None)  # compare timed passes with each other only
            curve.times[k] = [one(k) for _ in range(reps)]
            if progress:
                progress(n)
        curve.switch_k = next((k for k in ks if k > 1), 0)
        if curve.switch_k:
            for _ in range(reps):
                one(curve.switch_k)
                curve.switch_times.append(one(1))
        if checkpoint is not None:
            curve.ckpt_bytes = int(checkpoint[1])
            for _ in range(reps):
                t0 = time.perf_counter()
                checkpoint = ctx.save_partial_state()
                curve.ckpt_save_times.append(time.perf_counter() - t0)
        if ctx.pos_max() != pos0 - 1:
            raise SpecsweepError(f"{model.path.name}: the context did not return to depth {pos0} "
                                 f"(last position {ctx.pos_max()})")
    return curve


@dataclass
class TracedCurve:
    """The experts the router chose for each probed batch, read in a context of its own."""
    unions: dict[int, dict[int, int]]  # K -> layer -> distinct experts of that layer
    distinct_tokens: dict[int, int]  # K -> distinct token ids in the batch
    seconds: float
    # how unevenly the largest batch's routings fall on experts, averaged over layers: the share of
    # experts that take 90% of them, and the busiest expert's share
    load: dict = field(default_factory=dict)


def trace_curve(model: runtime.Model, ks: list[int], depth: int = 0, kv: str = "q8_0", n_batch: int = 512,
                n_threads: int = 0, flash_attn: bool = True, batch_tokens: str = "text") -> TracedCurve:
    """The union of experts each K-token batch of `measure_curve` reads, layer by layer: the same
    tokens at the same depth, decoded again after the timing in a context created with the
    router-reading eval callback (engine/expert_trace.py), never the timed one."""
    ks = sorted(set(ks))
    pos0 = depth if depth > 0 else SHORT_PROMPT
    opts = runtime.ContextOptions(n_ctx=context_size(pos0, max(ks)), n_batch=n_batch, type_kv=kv,
                                  flash_attn=flash_attn, n_threads=n_threads)
    stream = probe_stream(model, pos0, max(ks), batch_tokens)
    tracer = expert_trace.ExpertTracer()
    t0 = time.perf_counter()
    out = TracedCurve({}, {}, 0.0)
    with runtime.Context(model, opts, eval_callback=tracer.callback) as ctx:
        ctx.decode(stream[:pos0], 0)
        ctx.sync()
        checkpoint = ctx.save_partial_state() if model.has_recurrent_state else None
        tracer.take()
        for k in ks:
            batch = stream[pos0 : pos0 + k]
            ctx.decode(batch, pos0, all_logits=True)
            ctx.sync()
            experts = tracer.take()
            out.unions[k] = {il: len(set(e.ravel().tolist())) for il, e in experts.items()}
            out.distinct_tokens[k] = len(set(batch))
            if k == ks[-1]:
                out.load = expert_load(experts, int(model.meta(f"{model.meta('general.architecture')}.expert_count")))
            if checkpoint is not None:
                ctx.load_partial_state(checkpoint)
            ctx.seq_rm(pos0, -1)
    out.seconds = time.perf_counter() - t0
    return out


def expert_load(experts: dict[int, np.ndarray], n_expert: int) -> dict:
    """Per layer, how the batch's routings (tokens x k choices) spread over the experts: the share
    of experts that take 90% of them (fewest first-busiest) and the busiest one's share; averaged
    over layers."""
    n90, top = [], []
    for e in experts.values():
        counts = np.sort(np.bincount(e.ravel(), minlength=n_expert))[::-1]
        share = np.cumsum(counts) / counts.sum()
        n90.append((int(np.searchsorted(share, 0.9)) + 1) / n_expert)
        top.append(counts[0] / counts.sum())
    return {"routings_per_layer": int(next(iter(experts.values())).size), "experts_for_90pct": float(np.mean(n90)),
            "busiest_expert": float(np.mean(top))}
