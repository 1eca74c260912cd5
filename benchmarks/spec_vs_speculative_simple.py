"""One speculative cell in process against llama.cpp's own `llama-speculative-simple`, side by side.

    python benchmarks/spec_vs_speculative_simple.py TARGET --tool PATH [--draft DRAFT | --ngram-mod N]
        [--draft-max 8] [--n 256] [--kv q8_0] [--gpu] [--rounds 3]

Alternates the two so that machine noise hits both, checks that they generate as many tokens and
draft and accept exactly as many (llama.cpp's counters), and prints the ratio of median decode
tok/s (in-process / native). Both decode speeds cover the generation loop after the prompt.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from specsweep.engine import runtime
from specsweep.engine.drafters import DraftModel, NgramMod
from specsweep.engine.native import run_speculative_simple
from specsweep.engine.speculative import run_trial

PROMPT = "Write a Python function that parses a CSV file of GPU benchmark results and prints a summary table."


def native(args) -> tuple[float, dict]:
    ngl = "99" if args.gpu else "0"
    cmd = [args.tool, "-m", str(args.target), "-p", PROMPT, "-n", str(args.n), "--temp", "0", "-c", str(args.ctx),
           "-b", "512", "-ub", "512", "-fa", "on", "-ctk", args.kv, "-ctv", args.kv, "-ngl", ngl]
    if args.draft:
        cmd += ["-md", str(args.draft), "--spec-type", "draft-simple", "--spec-draft-n-max", str(args.draft_max),
                "-ngld", ngl, "-ctkd", args.kv, "-ctvd", args.kv]
    else:
        cmd += ["--spec-type", "ngram-mod", "--spec-ngram-mod-n-match", str(args.ngram_mod),
                "--spec-ngram-mod-n-min", "1", "--spec-ngram-mod-n-max", str(args.draft_max)]
    run = run_speculative_simple(cmd)
    return run.decode_tps, run.stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("target", type=Path)
    ap.add_argument("--tool", required=True, help="path of llama-speculative-simple")
    ap.add_argument("--draft", type=Path)
    ap.add_argument("--ngram-mod", type=int, default=0, help="n-match, instead of a draft model")
    ap.add_argument("--draft-max", type=int, default=8)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--kv", default="q8_0")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--backend-sampling", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not args.draft and not args.ngram_mod:
        ap.error("give --draft or --ngram-mod")
    runtime.init()
    gpus = (0,) if args.gpu else ()
    opts = runtime.ContextOptions(n_ctx=args.ctx, n_batch=512, type_kv=args.kv, flash_attn=True,
                                  backend_sampling=args.backend_sampling)
    target = runtime.Model(args.target, gpus)
    tctx = runtime.Context(target, opts)
    dctx = runtime.Context(runtime.Model(args.draft, gpus), opts) if args.draft else None
    prompt = target.tokenize(PROMPT)

    def ours():
        tctx.clear()
        if dctx:
            dctx.clear()
        drafter = DraftModel(dctx, n_max=args.draft_max) if dctx else NgramMod(args.ngram_mod, args.draft_max, 1)
        return run_trial(tctx, prompt, args.n, drafter)

    ours()  # warm-up
    mine, theirs = [], []
    for r in range(args.rounds):
        speed, stats = native(args)
        result = ours()
        same = (stats["n_predict"], stats["n_drafted"], stats["n_accept"]) == (
            len(result.tokens), result.n_drafted_llama, result.n_accepted_llama)
        theirs.append(speed)
        mine.append(result.decode_tps)
        print(f"round {r}: native {speed:.1f} tok/s {stats}, in-process {result.decode_tps:.1f} tok/s "
              f"(drafted {result.n_drafted_llama}, accepted {result.n_accepted_llama}; "
              f"split draft {result.t_draft:.3f}s verify {result.t_verify:.3f}s rollback {result.t_rollback:.3f}s "
              f"host {result.t_host:.3f}s) counts {'identical' if same else 'DIFFER'}")
    print(f"ratio in-process / llama-speculative-simple (medians): {statistics.median(mine) / statistics.median(theirs):.3f}")


if __name__ == "__main__":
    main()
