"""One speculative cell in process against llama.cpp's own `llama-speculative-simple`, side by side.

    python benchmarks/spec_vs_speculative_simple.py TARGET --tool PATH
        [--draft DRAFT | --dflash DRAFTER | --mtp | --ngram-mod N]
        [--draft-max 8] [--n 256] [--kv q8_0] [--gpu] [--rounds 3]

For DFlash and MTP both sides give a hybrid target draft-max recurrent-state snapshots, as
llama.cpp's tools do; a draft model rolls back through checkpoints, as llama.cpp's does.

Alternates the two so that machine noise hits both, checks that they generate as many tokens and
draft and accept exactly as many (llama.cpp's counters), and prints the ratio of median decode
tok/s (in-process / native). Both decode speeds cover the generation loop after the prompt.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from specsweep.engine import runtime
from specsweep.engine.drafters import DFlash, DraftModel, Mtp, NgramMod
from specsweep.engine.native import run_speculative_simple
from specsweep.engine.speculative import run_trial

PROMPT = "Write a Python function that parses a CSV file of GPU benchmark results and prints a summary table."


def native(args) -> tuple[float, dict]:
    ngl = "99" if args.gpu else "0"
    cmd = [args.tool, "-m", str(args.target), "-p", PROMPT, "-n", str(args.n), "--temp", "0", "-c", str(args.ctx),
           "-b", "512", "-ub", "512", "-fa", "on", "-ctk", args.kv, "-ctv", args.kv, "-ngl", ngl]
    if args.draft or args.dflash:
        cmd += ["-md", str(args.draft or args.dflash), "--spec-type", "draft-simple" if args.draft else "draft-dflash",
                "--spec-draft-n-max", str(args.draft_max), "-ngld", ngl, "-ctkd", args.kv, "-ctvd", args.kv]
    elif args.mtp:
        cmd += ["--spec-type", "draft-mtp", "--spec-draft-n-max", str(args.draft_max), "-ctkd", args.kv, "-ctvd", args.kv]
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
    ap.add_argument("--dflash", type=Path, help="a DFlash drafter GGUF")
    ap.add_argument("--mtp", action="store_true", help="the target's own MTP head")
    ap.add_argument("--ngram-mod", type=int, default=0, help="n-match, instead of a draft model")
    ap.add_argument("--draft-max", type=int, default=8)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--kv", default="q8_0")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--backend-sampling", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if sum(map(bool, (args.draft, args.dflash, args.mtp, args.ngram_mod))) != 1:
        ap.error("give one of --draft, --dflash, --mtp or --ngram-mod")
    runtime.init()
    gpus = (0,) if args.gpu else ()
    opts = runtime.ContextOptions(n_ctx=args.ctx, n_batch=512, type_kv=args.kv, flash_attn=True,
                                  backend_sampling=args.backend_sampling)
    target = runtime.Model(args.target, gpus, load_mtp=args.mtp)
    hidden = args.dflash or args.mtp  # drafters reading the target's hidden states: snapshots
    n_rs = args.draft_max if hidden and target.has_recurrent_state else 0
    tctx = runtime.Context(target, dataclasses.replace(opts, n_rs_seq=n_rs))
    if args.draft:
        dctx = runtime.Context(runtime.Model(args.draft, gpus), opts)
    elif args.dflash:
        dctx = runtime.Context(runtime.Model(args.dflash, gpus), opts, other=tctx)
    elif args.mtp:
        dctx = runtime.Context(target, dataclasses.replace(opts, ctx_type="mtp"), other=tctx)
    else:
        dctx = None
    prompt = target.tokenize(PROMPT)

    def ours():
        tctx.clear()
        if dctx:
            dctx.clear()
        if args.draft:
            drafter = DraftModel(dctx, n_max=args.draft_max)
        elif args.dflash:
            drafter = DFlash(dctx, tctx, n_max=args.draft_max)
        elif args.mtp:
            drafter = Mtp(dctx, tctx, n_max=args.draft_max)
        else:
            drafter = NgramMod(args.ngram_mod, args.draft_max, 1)
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
