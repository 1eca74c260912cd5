"""In-process baseline decode tok/s against native `llama-bench -n` on the same model, side by side.

    python benchmarks/baseline_vs_llama_bench.py MODEL.gguf --llama-bench PATH [--rounds 3]

Alternates the two so that machine noise hits both; prints each round and the ratio of medians.
The engine's loop generates from a short prompt; llama-bench's tg test decodes from depth 0, so
the prompt is kept to a few tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

from specsweep.engine import runtime
from specsweep.engine.native import native_env
from specsweep.engine.speculative import run_trial


def native_tg(bench: str, model: Path, n: int, threads: int, cpu: bool) -> float:
    # the native tool runs on the wheel's libllama/libggml, so both sides share every kernel
    env = native_env(Path(bench))
    out = subprocess.run([bench, "-m", str(model), "-p", "0", "-n", str(n), "-fa", "1", "-t", str(threads),
                          "-r", "3", "-o", "json", "-ngl", "0" if cpu else "99"], capture_output=True, text=True, check=True, env=env).stdout
    return float(json.loads(out)[0]["avg_ts"])


def inprocess_tg(model: runtime.Model, n: int, threads: int, backend_sampling: bool = False) -> float:
    opts = runtime.ContextOptions(n_ctx=n + 64, n_batch=64, n_threads=threads, backend_sampling=backend_sampling)
    with runtime.Context(model, opts) as ctx:
        return run_trial(ctx, model.tokenize("Hi there"), n).decode_tps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpu", action="store_true", help="keep the model on the CPU")
    args = ap.parse_args()
    runtime.init()
    model = runtime.Model(args.model, () if args.cpu else (0,))
    inprocess_tg(model, 16, args.threads)  # warm-up
    theirs, host, device = [], [], []
    for r in range(args.rounds):
        theirs.append(native_tg(args.llama_bench, args.model, args.n, args.threads, args.cpu))
        host.append(inprocess_tg(model, args.n, args.threads))
        device.append(inprocess_tg(model, args.n, args.threads, backend_sampling=True))
        print(f"round {r}: llama-bench tg{args.n} {theirs[-1]:.1f} tok/s, in-process {host[-1]:.1f} tok/s "
              f"(greedy on the host), {device[-1]:.1f} tok/s (backend sampling)")
    base = statistics.median(theirs)
    print(f"ratio in-process / llama-bench (medians): host greedy {statistics.median(host) / base:.3f}, "
          f"backend sampling {statistics.median(device) / base:.3f}")


if __name__ == "__main__":
    main()
