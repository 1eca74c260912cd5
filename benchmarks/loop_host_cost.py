"""The in-process loops' host cost per token on this machine: wall time outside llama.cpp's compute.

    python benchmarks/loop_host_cost.py [--n 64] [--reps 5] [--threads 1] [--only NAME ...] [--model-dir DIR]
    python benchmarks/loop_host_cost.py --callgrind [--n 16] [--only NAME ...]   # instructions instead

Writes tiny synthetic models (the 35B-A3B's hybrid MoE layout with its MTP layer; the 0.8B-shaped
draft) and runs each loop configuration on them: plain decoding in the simple and the server
loop, MTP in both loops (synthetic acceptance in the server loop, as every full-shape curve runs
it), and MTP with 4 streams. Per configuration it prints the counts (generated, verify steps,
drafted, accepted: identical before and after a change of the loop, or the change is wrong), the
loop's wall time per token, the time per token inside llama.cpp's compute calls (llama_decode,
llama_process, llama_synchronize, wrapped with a clock here and only here), and the difference:
the host's (Python's) work per token. Per-token figures are marginal: whole trials of `--n` and of
2 x `--n` tokens, the difference of their medians over `--reps` runs, divided by the difference
in tokens, so that what a trial pays once (prefill, setup) drops out.

These are CPU and host figures: a tiny model makes the host's share large and says nothing of GPU
speed. Wall time on a shared machine is noisy, so `--callgrind` counts instructions instead
(repeatable to the instruction): it runs itself under `valgrind --tool=callgrind` with one thread,
unclocked, and has callgrind dump its counters at every `getppid()` call, which this script
makes between trials (a constant getter nothing else calls). Per trial it reads the total and
the instructions inside `llama_context::decode` (every llama_decode and llama_process ends there);
the rest is the host's work: Python, ctypes and llama.cpp's own bookkeeping calls (seq_rm, logits
pointers), the same marginal per-token difference as above (benchmarks/notes/loop-host-cost.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp as ll

from specsweep import methods
from specsweep.engine import parallel, runtime, synthetic
from specsweep.engine.server_loop import Synth, run_trial_server
from specsweep.engine.speculative import run_trial
from specsweep.synth.cards import CARDS
from specsweep.synth.writer import Recipe, write_model

PROMPT = "The quick brown fox jumps over the lazy dog. def main(argv=None): return parse(argv) or 0"
SEED = 1234
MTP = {"method": "mtp", "draft_max": 2, "synth_len": 1.6}  # n2 near the 35B-A3B's measured acceptance
# name: (loop, settings or None for plain decoding, streams)
CONFIGS = {
    "plain-simple": ("simple", None, 1),
    "plain-server": ("server", None, 1),
    "mtp-simple": ("simple", {"method": "mtp", "draft_max": 2}, 1),
    "mtp-server": ("server", MTP, 1),
    "mtp-server-4": ("server", MTP, 4),
}


def models(folder: Path) -> Path:
    path = folder / "qwen3.6-35b-a3b-tiny-b0.05-mtp.gguf"
    if not path.is_file():
        write_model(Recipe(CARDS["qwen3.6-35b-a3b"].at_scale("tiny"), "tiny", "Q4_0", 0, branch_scale=0.05,
                           mtp=True), path)
    return path


class Clock:
    """Seconds spent inside llama.cpp's compute calls: the llama_cpp module's functions are
    wrapped while `on` (the engine looks them up at every call)."""

    NAMES = ("llama_decode", "llama_process", "llama_synchronize")

    def __init__(self):
        self.inside = 0.0
        self._orig = {n: getattr(ll, n) for n in self.NAMES}

    def __enter__(self):
        for name, fn in self._orig.items():
            def timed(*a, _fn=fn):
                t = time.perf_counter()
                try:
                    return _fn(*a)
                finally:
                    self.inside += time.perf_counter() - t
            setattr(ll, name, timed)
        return self

    def __exit__(self, *exc):
        for name, fn in self._orig.items():
            setattr(ll, name, fn)


class Bench:
    def __init__(self, path: Path, threads: int, n_ctx: int):
        runtime.init()
        self.model = runtime.Model(path, (), load_mtp=True)
        self.prompt = self.model.tokenize(PROMPT)
        self.prompts = [self.prompt[k:] + self.prompt[:k] for k in range(4)]  # four streams, four texts
        self.opts = runtime.ContextOptions(n_ctx=n_ctx, n_batch=512, type_kv="f16", n_threads=threads)
        self.ctxs: dict = {}

    def contexts(self, settings, streams: int):
        key = (bool(settings), streams)
        if key not in self.ctxs:
            n_rs = settings["draft_max"] if settings else 0
            opts = dataclasses.replace(self.opts, n_ctx=self.opts.n_ctx * streams, n_seq_max=streams,
                                       n_rs_seq=n_rs, n_outputs=(n_rs + 1) * streams)
            tctx = runtime.Context(self.model, opts)
            dctx = runtime.Context(self.model, dataclasses.replace(opts, n_rs_seq=0, ctx_type="mtp",
                                                                  n_outputs=streams), other=tctx) if settings else None
            self.ctxs[key] = (tctx, dctx)
        return self.ctxs[key]

    def run(self, name: str, n: int):
        """One trial of a configuration: (generated, steps, drafted, accepted, loop seconds)."""
        loop, settings, streams = CONFIGS[name]
        settings = methods.with_defaults(settings) if settings else None
        tctx, dctx = self.contexts(settings, streams)
        tctx.clear()
        if dctx is not None:
            dctx.clear()
        make = (lambda seq: methods.get("mtp").make(settings, methods.DrafterContexts(dctx, tctx, seq=seq))) \
            if settings else (lambda seq: None)

        def synth(d):
            if d is None or settings.get("synth_len") is None:
                return None
            rates = synthetic.resolve_rates(settings["synth_len"], None, d.n_max)
            return Synth(synthetic.conditional(rates), SEED)

        if streams > 1:
            drafters = [make(k) for k in range(streams)]
            results, loop_t, window = parallel.run_streams(tctx, self.prompts, n, drafters,
                                                           [synth(d) for d in drafters])
            return (sum(len(r.tokens) for r in results), loop_t.n_steps, sum(r.n_drafted for r in results),
                    sum(r.n_accepted for r in results), window)
        d = make(0)
        r = run_trial(tctx, self.prompt, n, d) if loop == "simple" else run_trial_server(tctx, self.prompt, n, d, synth(d))
        return len(r.tokens), r.n_steps, r.n_drafted, r.n_accepted, r.t_decode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--only", nargs="*", choices=list(CONFIGS))
    ap.add_argument("--callgrind", action="store_true", help="count instructions under valgrind instead")
    ap.add_argument("--marks", action="store_true", help=argparse.SUPPRESS)  # the run under valgrind
    ap.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "specsweep-loop-host-cost")
    args = ap.parse_args()
    args.model_dir.mkdir(parents=True, exist_ok=True)
    paths = models(args.model_dir)  # written here, so that the run under valgrind only reads them
    names = args.only or list(CONFIGS)
    if args.callgrind:
        return callgrind(args, names)
    bench = Bench(paths, args.threads, args.n_ctx)
    if args.marks:  # under valgrind: a dump at every mark; one line of counts per trial
        for name in names:
            bench.run(name, args.n)  # warm-up
            os.getppid()
            for n in (args.n, 2 * args.n):
                print(json.dumps([name, n, bench.run(name, n)[:4]]), flush=True)
                os.getppid()
        return
    print(f"{'config':<14} {'counts at 2n (gen, steps, drafted, accepted)':<46} {'loop us/tok':>11} "
          f"{'llama us/tok':>12} {'host us/tok':>11}")
    for name in names:
        bench.run(name, args.n)  # warm-up
        at = {}
        for n in (args.n, 2 * args.n):
            rows = []
            for _ in range(args.reps):
                with Clock() as clock:
                    t = time.perf_counter()
                    counts = bench.run(name, n)[:4]
                    wall = time.perf_counter() - t
                rows.append((wall, clock.inside, counts))
            same = all(r[2] == rows[0][2] for r in rows)
            at[n] = (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows),
                     statistics.median(r[0] - r[1] for r in rows), rows[0][2], same)
        (w1, i1, h1, c1, s1), (w2, i2, h2, c2, s2) = at[args.n], at[2 * args.n]
        d = c2[0] - c1[0]
        note = "" if s1 and s2 else " VARIES"
        print(f"{name:<14} {str(tuple(c2)) + note:<46} {(w2 - w1) / d * 1e6:>11.1f} {(i2 - i1) / d * 1e6:>12.1f} "
              f"{(h2 - h1) / d * 1e6:>11.1f}", flush=True)

_TOTAL = re.compile(r"^\s*([\d,]+) \(.*PROGRAM TOTALS")
_COMPUTE = re.compile(r"^\s*([\d,]+) \(.*llama_context::decode\(llama_batch_ext const&\)")


def dump_counts(path: Path) -> tuple[int, int]:
    """(total instructions, instructions inside llama_context::decode) of one callgrind dump."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
                          capture_output=True, text=True, check=True).stdout
    total = compute = 0
    for line in text.splitlines():
        if m := _TOTAL.match(line):
            total = int(m.group(1).replace(",", ""))
        elif (m := _COMPUTE.match(line)) and not compute:  # the first (file-less) line of the two
            compute = int(m.group(1).replace(",", ""))
    return total, compute


def callgrind(args, names: list[str]) -> None:
    out = Path(tempfile.mkdtemp(prefix="loop-host-cost-cg-"))
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.out", "--dump-before=getppid",
           sys.executable, __file__, "--marks", "--n", str(args.n), "--threads", "1", "--n-ctx", str(args.n_ctx),
           "--model-dir", str(args.model_dir), "--only", *names]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    trials = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("[")]
    dumps = sorted(out.glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
    # dump 1: start-up and the first warm-up; then per configuration: trial at n, trial at 2n, next warm-up
    segs = [dump_counts(p) for p in dumps]
    print(f"instructions per generated token (callgrind, 1 thread, marginal between {args.n} and {2 * args.n} tokens)")
    print(f"{'config':<14} {'counts at 2n (gen, steps, drafted, accepted)':<46} {'total':>10} {'llama':>10} {'host':>10}")
    for k, name in enumerate(names):
        (_, _, a), (_, _, b) = trials[2 * k], trials[2 * k + 1]
        (ta, ca), (tb, cb) = segs[1 + 3 * k], segs[2 + 3 * k]
        d = b[0] - a[0]
        print(f"{name:<14} {str(tuple(b)):<46} {(tb - ta) / d:>10.0f} {(cb - ca) / d:>10.0f} "
              f"{((tb - cb) - (ta - ca)) / d:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
