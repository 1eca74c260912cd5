"""Plain decoding in process against every native llama.cpp loop that decodes plainly, side by side.

    python benchmarks/baseline_vs_native.py MODEL.gguf [--tools DIR] [--server PATH] [--n 128]
        [--rounds 5] [--threads N] [--kv f16] [--gpu] [--backend-sampling] [--out FILE.md]

In one run, round after round (so that machine noise hits every side): `llama-bench` tg (`-p 0
-n N`, one repetition a round), `llama-server` with one slot (started once, one request a round;
tok/s from its own `predicted_ms`, as the server backend reads it), `llama-completion` (`-n N
-no-cnv`; tok/s over its generation wall time: perf `total` minus `prompt eval`, its sampling and
loop included) when it is built, and specsweep's plain loop in process, in both of its loops:
`llama-speculative-simple`'s (simple) and a server slot's (server). Every side generates N tokens
from the same short prompt with end-of-generation ignored. The tools run on the engine's own
libllama/libggml (engine/native.py), so all share every kernel.

Prints each round, then one table: medians, and each in-process loop's ratio to every tool and to
the fastest; with the in-process loops' host time per token (loop time outside llama_decode and
llama_synchronize: Python's own work per token). Tools not found are left out and say so.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from specsweep.engine import runtime
from specsweep.engine.llama_server import LlamaServer
from specsweep.engine.native import native_env
from specsweep.engine.server_loop import run_trial_server
from specsweep.models.fit import native_bin
from specsweep.engine.speculative import run_trial

PROMPT = "Write a short story about a lighthouse keeper."
_EVAL = re.compile(r"(prompt eval|total) time =\s+([\d.]+) ms /\s+(\d+)")
_RUNS = re.compile(r"\beval time =\s+([\d.]+) ms /\s+(\d+) runs")


def tool_dir(given: str | None) -> Path:
    return Path(given) if given else native_bin()


def common_flags(args) -> list[str]:
    return ["-t", str(args.threads), "-fa", "on", "-ctk", args.kv, "-ctv", args.kv, "-ngl", "99" if args.gpu else "0"]


def bench_tg(args, tool: Path) -> float:
    cmd = [str(tool), "-m", str(args.model), "-p", "0", "-n", str(args.n), "-r", "1", "-o", "json",
           "-t", str(args.threads), "-fa", "1", "-ctk", args.kv, "-ctv", args.kv, "-ngl", "99" if args.gpu else "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=native_env(tool)).stdout
    return float(json.loads(out)[0]["avg_ts"])


def completion_tg(args, tool: Path) -> float:
    """Generated tokens over llama-completion's generation wall time (perf total - prompt eval)."""
    cmd = [str(tool), "-m", str(args.model), "-p", PROMPT, "-n", str(args.n), "--temp", "0", "-no-cnv",
           "--ignore-eos", "-c", str(args.n + 64), "-b", "512", "-ub", "512", *common_flags(args)]
    proc = subprocess.run(cmd, capture_output=True, env=native_env(tool), stdin=subprocess.DEVNULL, timeout=600)
    log = proc.stderr.decode(errors="replace")  # the text a random model writes is not always UTF-8
    if proc.returncode != 0:
        raise RuntimeError(log[-2000:])
    times = {name: float(ms) for name, ms, _ in _EVAL.findall(log)}
    runs = _RUNS.search(log)
    if "total" not in times or "prompt eval" not in times or not runs:
        raise RuntimeError("llama-completion printed no perf lines")
    return int(runs.group(2)) / ((times["total"] - times["prompt eval"]) / 1e3)


def server_args(args) -> list[str]:
    return ["-m", str(args.model), "-c", str(args.n + 64), "-np", "1", "-b", "512", "-ub", "512",
            "-tb", str(args.threads), *common_flags(args), "--fit", "off", "--cache-ram", "0", "--no-webui",
            *(["-bs"] if args.backend_sampling else [])]


def server_tg(server: LlamaServer, tokens: list[int], n: int) -> float:
    answer = server.complete(tokens, n, seed=0, ignore_eos=True)
    return len(answer["tokens"]) / (answer["timings"]["predicted_ms"] / 1e3)


def inprocess(ctx: runtime.Context, tokens: list[int], n: int, loop: str) -> tuple[float, float]:
    """(decode tok/s, host microseconds per generated token) of one plain trial."""
    ctx.clear()
    r = run_trial(ctx, tokens, n) if loop == "simple" else run_trial_server(ctx, tokens, n)
    return r.decode_tps, r.t_host / len(r.tokens) * 1e6


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--tools", help="folder of the native tools (default $SPECSWEEP_NATIVE_BIN or build/native/bin)")
    ap.add_argument("--server", type=Path, help="llama-server (default: the tools folder's)")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=runtime.default_threads())
    ap.add_argument("--kv", default="f16")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--backend-sampling", action="store_true", help="greedy on the device (in process and server)")
    ap.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    tools = tool_dir(args.tools)
    found = {name: p for name, p in (("llama-bench", tools / "llama-bench"),
                                     ("llama-server", args.server or tools / "llama-server"),
                                     ("llama-completion", tools / "llama-completion")) if p.is_file()}
    runtime.init()
    model = runtime.Model(args.model, (0,) if args.gpu else ())
    opts = runtime.ContextOptions(n_ctx=args.n + 64, n_batch=512, type_kv=args.kv, n_threads=args.threads,
                                  backend_sampling=args.backend_sampling, ignore_eos=True)
    ctx = runtime.Context(model, opts)
    tokens = model.tokenize(PROMPT, add_special=True)
    server = None
    if "llama-server" in found:
        server = LlamaServer(found["llama-server"], server_args(args),
                             Path(tempfile.mkdtemp(prefix="baseline-vs-native-")) / "server.log",
                             env=native_env(found["llama-server"])).start()
    speeds: dict[str, list[float]] = {k: [] for k in ("in process, simple loop", "in process, server loop", *found)}
    host: dict[str, list[float]] = {"simple": [], "server": []}
    try:
        inprocess(ctx, tokens, 16, "simple")  # warm-up
        if server:
            server_tg(server, tokens, 16)
        for r in range(args.rounds):
            if "llama-bench" in found:
                speeds["llama-bench"].append(bench_tg(args, found["llama-bench"]))
            if server:
                speeds["llama-server"].append(server_tg(server, tokens, args.n))
            if "llama-completion" in found:
                speeds["llama-completion"].append(completion_tg(args, found["llama-completion"]))
            for loop in ("simple", "server"):
                tps, us = inprocess(ctx, tokens, args.n, loop)
                speeds[f"in process, {loop} loop"].append(tps)
                host[loop].append(us)
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in speeds.items()) + " tok/s", flush=True)
    finally:
        if server:
            server.stop()
        ctx.close()
        model.close()
    table = render(args, speeds, host, sorted({"llama-bench", "llama-server", "llama-completion"} - set(found)))
    print(table)
    if args.out:
        args.out.write_text(table)
    return table


def render(args, speeds: dict[str, list[float]], host: dict[str, list[float]], missing: list[str]) -> str:
    med = {k: statistics.median(v) for k, v in speeds.items()}
    native = [k for k in med if not k.startswith("in process")]
    fastest = max(native, key=med.get) if native else None
    head = f"| loop | tok/s (median of {args.rounds}) | " + " | ".join(f"/ {k}" for k in native) + \
           (" | / fastest native |" if native else " |")
    lines = [f"Plain decoding, {args.n} tokens, {'GPU' if args.gpu else 'CPU'}, KV {args.kv}"
             f"{', backend sampling' if args.backend_sampling else ''}: {args.model.name}", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for k, v in med.items():
        ratios = [f"{v / med[t]:.3f}" for t in native] if k.startswith("in process") else ["" for _ in native]
        last = f" {v / med[fastest]:.3f} |" if fastest and k.startswith("in process") else (" |" if native else "")
        lines.append(f"| {k} | {v:.1f} | " + " | ".join(ratios) + (" |" if native else "") + last)
    lines.append("")
    lines.append("In-process host time per generated token (loop time outside llama_decode and llama_synchronize, "
                 "median): " + ", ".join(f"{loop} loop {statistics.median(v):.1f} us" for loop, v in host.items()))
    if missing:
        lines.append(f"Not built, left out: {', '.join(missing)}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
