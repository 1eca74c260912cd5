"""Any speculative method in process against llama.cpp's own `llama-speculative-simple`, side by side.

    python benchmarks/spec_vs_speculative_simple.py TARGET --tool PATH --method NAME
        [--draft DRAFT_OR_DRAFTER] [--set KEY=VALUE ...] [--n 256] [--kv q8_0] [--gpu]
        [--backend-sampling] [--rounds 5]

`--method` is any method of specsweep/methods.py; `--set` gives its keys as a matrix would
(`--set draft_max=4 --set size_m=8`), the rest keep the method's defaults (llama.cpp's). One
registry builds both sides: llama.cpp's flags (`methods.native_flags`) and specsweep's drafter, so
the benchmark measures exactly what a matrix cell runs. As llama.cpp's tools do, a hybrid target
gets draft_max recurrent-state snapshots for drafters that read its hidden states (DFlash, DSpark,
EAGLE-3, MTP), and checkpoints otherwise; draft contexts use the target's KV type (-ctkd/-ctvd).

Alternates the two so that machine noise hits both, checks that they generate as many tokens and
draft and accept exactly as many (llama.cpp's counters), and prints the ratio of median decode
tok/s (in-process / native). Both decode speeds cover the generation loop after the prompt.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import statistics
from pathlib import Path

from specsweep import methods
from specsweep.engine import runtime
from specsweep.engine.native import run_speculative_simple
from specsweep.engine.speculative import run_trial

PROMPT = "Write a Python function that parses a CSV file of GPU benchmark results and prints a summary table."


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def native(args, settings: dict) -> tuple[float, dict]:
    ngl = "99" if args.gpu else "0"
    cmd = [args.tool, "-m", str(args.target), "-p", PROMPT, "-n", str(args.n), "--temp", "0", "-c", str(args.ctx),
           "-b", "512", "-ub", "512", "-fa", "on", "-ctk", args.kv, "-ctv", args.kv, "-ngl", ngl,
           "-ctkd", args.kv, "-ctvd", args.kv, *methods.native_flags(settings)]
    if args.draft:
        cmd += ["-md", str(args.draft), "-ngld", ngl]
    run = run_speculative_simple(cmd)
    return run.decode_tps, run.stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("target", type=Path)
    ap.add_argument("--tool", required=True, help="path of llama-speculative-simple")
    ap.add_argument("--method", required=True, choices=methods.SPECULATIVE)
    ap.add_argument("--draft", type=Path, help="the draft model or drafter GGUF (methods that need one)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a method key, as in a matrix (repeatable)")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--kv", default="q8_0")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--backend-sampling", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    m = methods.get(args.method)
    if bool(m.context in ("draft", "drafter")) != bool(args.draft):
        ap.error(f"method {args.method} {'needs' if m.context in ('draft', 'drafter') else 'takes no'} --draft")
    settings = methods.with_defaults({"method": args.method, **parse_set(args.sets)})
    runtime.init()
    gpus = (0,) if args.gpu else ()
    opts = runtime.ContextOptions(n_ctx=args.ctx, n_batch=512, type_kv=args.kv, flash_attn=True,
                                  backend_sampling=args.backend_sampling)
    target = runtime.Model(args.target, gpus, load_mtp=m.context == "mtp")
    hidden = m.context in ("drafter", "mtp")  # drafters reading the target's hidden states: snapshots
    n_rs = m.n_max(settings) if hidden and target.has_recurrent_state else 0
    tctx = runtime.Context(target, dataclasses.replace(opts, n_rs_seq=n_rs))
    dctx = None
    if m.context == "draft":
        dctx = runtime.Context(runtime.Model(args.draft, gpus), opts)
    elif m.context == "drafter":
        dctx = runtime.Context(runtime.Model(args.draft, gpus), opts, other=tctx)
    elif m.context == "mtp":
        dctx = runtime.Context(target, dataclasses.replace(opts, ctx_type="mtp"), other=tctx)
    prompt = target.tokenize(PROMPT)

    def ours():
        tctx.clear()
        if dctx:
            dctx.clear()
        return run_trial(tctx, prompt, args.n, m.make(settings, methods.DrafterContexts(dctx, tctx)))

    ours()  # warm-up
    mine, theirs = [], []
    for r in range(args.rounds):
        speed, stats = native(args, settings)
        result = ours()
        same = (stats["n_predict"], stats["n_drafted"], stats["n_accept"]) == (
            len(result.tokens), result.n_drafted_llama, result.n_accepted_llama)
        theirs.append(speed)
        mine.append(result.decode_tps)
        print(f"round {r}: native {speed:.1f} tok/s {stats}, in-process {result.decode_tps:.1f} tok/s "
              f"(drafted {result.n_drafted_llama}, accepted {result.n_accepted_llama}; "
              f"split draft {result.t_draft:.3f}s verify {result.t_verify:.3f}s rollback {result.t_rollback:.3f}s "
              f"host {result.t_host:.3f}s) counts {'identical' if same else 'DIFFER'}", flush=True)
    print(f"{args.method} {' '.join(args.sets)}: ratio in-process / llama-speculative-simple (medians of "
          f"{args.rounds}): {statistics.median(mine) / statistics.median(theirs):.3f}", flush=True)


if __name__ == "__main__":
    main()
