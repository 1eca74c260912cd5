"""Every speculative method in process against its native llama.cpp loop, in one run, one table.

    python benchmarks/native_ratios.py --target T.gguf [--draft D.gguf] [--dflash F.gguf] [--dspark F.gguf]
        [--eagle3 F.gguf] [--tools DIR] [--server PATH] [--methods NAME ...] [--loops simple server]
        [--n 256] [--rounds 5] [--kv q8_0] [--threads N] [--synth-len 2.0] [--gpu] [--backend-sampling]
        [--out FILE.md]            (an existing FILE.md gets this run's rows added to its table)
    python benchmarks/native_ratios.py --tiny DIR [...]   # writes the tiny synthetic models into DIR first

Each method runs in both of specsweep's loops against the native loop it follows:
- simple: `run_trial` (engine/speculative.py) against `llama-speculative-simple`, greedy;
- server: `run_trial_server` (engine/server_loop.py) against `llama-server` with one slot, at
  llama.cpp's synthetic acceptance (`--synth-len`, the way every full-shape curve runs), the same
  seed on both sides; the server starts once per method and takes one request a round, except
  for the methods whose drafter state outlives a request in llama-server (`FRESH_SERVER`), which
  get a new server every round so that, as in process, each trial drafts from its own text only.
(`llama-cli` runs llama-server's loop in a thread: not a separate loop.) The two sides alternate
for `--rounds` rounds, so that machine noise hits both; every round checks that they generate the
same number of tokens and draft and accept exactly as many (llama.cpp's counters; through the
server also the same tokens), and the table says `identical` only when every round did. The ratio
is in-process / native of the median decode tok/s. Both sides time the generation loop after the
prompt: speculative-simple's `decoded ... speed`, the server's `predicted_ms` (from its first
generated token), the in-process loops' own windows.

A method whose model is not given is left out, and the table says so. The native tools run on the
engine's own libllama/libggml (engine/native.py). Default settings are llama.cpp's, with the draft
lengths the findings measured (`SETTINGS`); `--set METHOD:KEY=VALUE` changes one.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import statistics
import tempfile
from pathlib import Path

from specsweep import methods
from specsweep.engine import runtime, synthetic
from specsweep.engine.llama_server import LlamaServer
from specsweep.engine.native import native_env, run_speculative_simple
from specsweep.engine.server_loop import Synth, run_trial_server
from specsweep.engine.speculative import run_trial
from specsweep.models.fit import native_bin

PROMPT = "Write a Python function that parses a CSV file of GPU benchmark results and prints a summary table."
SEED = 1234
# per method: its draft lengths as the findings ran them; the rest are llama.cpp's defaults
SETTINGS = {
    "draft": {"draft_max": 4}, "mtp": {"draft_max": 2}, "eagle3": {"draft_max": 3}, "dflash": {"draft_max": 16},
    "dspark": {"draft_max": 8}, "ngram-map-k4v": {"size_m": 8},
}
# llama-server keeps these drafters' state from one request to the next: ngram-mod's hashed table
# (reset only past 25% occupancy) and ngram-cache's context cache (its `begin` is a no-op)
FRESH_SERVER = {"ngram-mod", "ngram-cache"}
MODEL_OF = {"draft": "draft", "dflash": "dflash", "dspark": "dspark", "eagle3": "eagle3"}  # method -> its option


def tiny_models(folder: Path) -> dict[str, Path]:
    """The tiny synthetic models every method needs (the 35B-A3B's layout with its MTP layer, a
    perturbed copy as the draft, and the three drafters), written once into `folder`."""
    from specsweep.synth.cards import CARDS
    from specsweep.synth.writer import Recipe, write_model

    folder.mkdir(parents=True, exist_ok=True)
    specs = {"target": ("qwen3.6-35b-a3b", 0.0, True), "draft": ("qwen3.6-35b-a3b", 0.2, False),
             "dflash": ("qwen3.6-35b-a3b-dflash", 0.0, False), "dspark": ("qwen3.6-35b-a3b-dspark", 0.0, False),
             "eagle3": ("qwen3.6-35b-a3b-eagle3", 0.0, False)}
    out = {}
    for role, (card, perturb, mtp) in specs.items():
        path = folder / f"{card}-tiny-b0.05-p{perturb}{'-mtp' if mtp else ''}.gguf"
        if not path.is_file():
            write_model(Recipe(CARDS[card].at_scale("tiny"), "tiny", "Q4_0", 0, perturb=perturb, branch_scale=0.05,
                               mtp=mtp), path)
        out[role] = path
    return out


@dataclasses.dataclass
class Row:
    method: str
    loop: str
    tool: str
    ours: list[float] = dataclasses.field(default_factory=list)
    theirs: list[float] = dataclasses.field(default_factory=list)
    counts: tuple = ()  # (tokens, drafted, accepted) of the last round
    same: bool = True

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.theirs)


class Runner:
    def __init__(self, args):
        self.args = args
        self.gpus = (0,) if args.gpu else ()
        self.ngl = "99" if args.gpu else "0"
        self.opts = runtime.ContextOptions(n_ctx=args.ctx, n_batch=512, type_kv=args.kv, n_threads=args.threads,
                                           backend_sampling=args.backend_sampling)
        self.target = runtime.Model(args.target, self.gpus, load_mtp=True)
        self.tokens = self.target.tokenize(PROMPT)
        self.models: dict[Path, runtime.Model] = {}

    def model(self, path: Path) -> runtime.Model:
        if path not in self.models:
            self.models[path] = runtime.Model(path, self.gpus)
        return self.models[path]

    @contextlib.contextmanager
    def contexts(self, m, settings: dict):
        """The target's context (snapshots for drafters that read its hidden states, as llama.cpp
        gives them) and the method's second context, closed at the end of the row."""
        n_rs = m.n_max(settings) if m.context in ("drafter", "mtp") and self.target.has_recurrent_state else 0
        tctx = runtime.Context(self.target, dataclasses.replace(self.opts, n_rs_seq=n_rs))
        dctx = None
        if m.context == "draft":
            dctx = runtime.Context(self.model(self.path_of(m.name)), self.opts)
        elif m.context == "drafter":
            dctx = runtime.Context(self.model(self.path_of(m.name)), self.opts, other=tctx)
        elif m.context == "mtp":
            dctx = runtime.Context(self.target, dataclasses.replace(self.opts, ctx_type="mtp"), other=tctx)
        try:
            yield tctx, dctx
        finally:
            for c in (dctx, tctx):
                if c is not None:
                    c.close()

    def path_of(self, method: str) -> Path | None:
        return getattr(self.args, MODEL_OF[method]) if method in MODEL_OF else None

    def native_common(self) -> list[str]:
        a = self.args
        return ["-c", str(a.ctx), "-b", "512", "-ub", "512", "-t", str(a.threads), "-fa", "on", "-ctk", a.kv,
                "-ctv", a.kv, "-ngl", self.ngl]

    def draft_flags(self, method: str) -> list[str]:
        path = self.path_of(method)
        return ["-md", str(path), "-ngld", self.ngl] if path else []

    # --- the simple loop against llama-speculative-simple ---
    def simple(self, name: str, settings: dict, tool: Path) -> Row:
        m, a = methods.get(name), self.args
        row = Row(name, "simple", "llama-speculative-simple")
        cmd = [str(tool), "-m", str(a.target), "-p", PROMPT, "-n", str(a.n), "--temp", "0", *self.native_common(),
               *self.draft_flags(name), *methods.native_flags(settings)]

        with self.contexts(m, settings) as (tctx, dctx):
            def ours():
                tctx.clear()
                if dctx:
                    dctx.clear()
                return run_trial(tctx, self.tokens, a.n, m.make(settings, methods.DrafterContexts(dctx, tctx)))

            ours()  # warm-up
            for _ in range(a.rounds):
                run = run_speculative_simple(cmd)
                r = ours()
                row.theirs.append(run.decode_tps)
                row.ours.append(r.decode_tps)
                row.counts = (len(r.tokens), r.n_drafted_llama, r.n_accepted_llama)
                row.same &= (run.stats["n_predict"], run.stats["n_drafted"], run.stats["n_accept"]) == row.counts
                self.report(row)
        return row

    # --- the server loop against llama-server ---
    def server(self, name: str, settings: dict, tool: Path) -> Row:
        m, a = methods.get(name), self.args
        settings = {**settings, "synth_len": min(a.synth_len, m.n_max(settings) + 1.0)}
        row = Row(name, "server", "llama-server")
        args = ["-m", str(a.target), *self.native_common(), "-tb", str(a.threads), "-np", "1", "--fit", "off",
                "--cache-ram", "0", "--no-webui", *(["-bs"] if a.backend_sampling else []), *self.draft_flags(name),
                *methods.native_flags(settings)]
        log = Path(tempfile.mkdtemp(prefix="native-ratios-")) / f"{name}.log"

        with self.contexts(m, settings) as (tctx, dctx):
            def ours():
                tctx.clear()
                if dctx:
                    dctx.clear()
                drafter = m.make(settings, methods.DrafterContexts(dctx, tctx))
                rates = synthetic.resolve_rates(settings["synth_len"], None, drafter.n_max)
                return run_trial_server(tctx, self.tokens, a.n, drafter, Synth(synthetic.conditional(rates), SEED))

            fresh = name in FRESH_SERVER
            with LlamaServer(tool, args, log, env=native_env(tool)) as server:
                ours()
                server.complete(self.tokens, a.n, SEED)  # warm-ups
                for _ in range(a.rounds):
                    if fresh:
                        server.stop()
                        server.start()
                    answer = server.complete(self.tokens, a.n, SEED)
                    r = ours()
                    t = answer["timings"]
                    row.theirs.append(len(answer["tokens"]) / (t["predicted_ms"] / 1e3))
                    row.ours.append(r.decode_tps)
                    row.counts = (len(r.tokens), r.n_drafted, r.n_accepted)
                    row.same &= (answer["tokens"] == r.tokens
                                 and (t.get("draft_n", 0), t.get("draft_n_accepted", 0)) == row.counts[1:])
                    self.report(row)
        return row

    @staticmethod
    def report(row: Row) -> None:
        print(f"{row.method} {row.loop}: native {row.theirs[-1]:.1f} tok/s, in process {row.ours[-1]:.1f} tok/s, "
              f"(tokens, drafted, accepted) {row.counts}{'' if row.same else ' DIFFER'}", flush=True)

    def close(self) -> None:
        for model in (*self.models.values(), self.target):
            model.close()


def render(args, rows: list[Row], skipped: list[str]) -> str:
    where = f"{'GPU' if args.gpu else 'CPU'}{', backend sampling' if args.backend_sampling else ''}"
    lines = [f"In process / native, median decode tok/s of {args.rounds} alternating rounds, {args.n} tokens, "
             f"KV {args.kv}, {where}; target {args.target.name}; the server loop at synthetic acceptance "
             f"(synth_len {args.synth_len:g}, capped at the draft limit + 1).", "",
             "| method | loop | native tool | in process tok/s | native tok/s | ratio | tokens, drafted, accepted | counts |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.loop} | {r.tool} | {statistics.median(r.ours):.1f} | "
                     f"{statistics.median(r.theirs):.1f} | {r.ratio:.3f} | {', '.join(map(str, r.counts))} | "
                     f"{'identical' if r.same else 'DIFFER'} |")
    if skipped:
        lines += ["", "Left out: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def parse_sets(items: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in items:
        method, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        try:
            out.setdefault(method, {})[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out.setdefault(method, {})[key] = value
    return out


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=Path)
    for role in ("draft", "dflash", "dspark", "eagle3"):
        ap.add_argument(f"--{role}", type=Path)
    ap.add_argument("--tiny", type=Path, help="write the tiny synthetic models here and use them (CPU)")
    ap.add_argument("--tools", help="folder of the native tools (default $SPECSWEEP_NATIVE_BIN or build/native/bin)")
    ap.add_argument("--server", type=Path, help="llama-server (default: the tools folder's)")
    ap.add_argument("--methods", nargs="*", default=list(methods.SPECULATIVE), choices=methods.SPECULATIVE)
    ap.add_argument("--loops", nargs="*", default=["simple", "server"], choices=["simple", "server"])
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD:KEY=VALUE")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kv", default="q8_0")
    ap.add_argument("--threads", type=int, default=runtime.default_threads())
    ap.add_argument("--synth-len", type=float, default=2.0)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--backend-sampling", action="store_true")
    ap.add_argument("--out", type=Path, help="also write the table here (markdown; rows added to an existing one)")
    args = ap.parse_args(argv)
    if args.tiny:
        for role, path in tiny_models(args.tiny).items():
            if getattr(args, role) is None:
                setattr(args, role, path)
    if args.target is None:
        ap.error("--target (or --tiny) is required")
    tools = Path(args.tools) if args.tools else native_bin()
    tool_of = {"simple": tools / "llama-speculative-simple", "server": args.server or tools / "llama-server"}
    sets = parse_sets(args.sets)
    runtime.init()
    runner = Runner(args)
    rows, skipped = [], []
    try:
        for name in args.methods:
            if name in MODEL_OF and runner.path_of(name) is None:
                skipped.append(f"{name} (no --{MODEL_OF[name]})")
                continue
            settings = methods.with_defaults({"method": name, "kv": args.kv, **SETTINGS.get(name, {}),
                                              **sets.get(name, {})})
            for loop in args.loops:
                if not tool_of[loop].is_file():
                    skipped.append(f"{name} {loop} loop ({tool_of[loop]} not built)")
                    continue
                rows.append(getattr(runner, loop)(name, settings, tool_of[loop]))
    finally:
        runner.close()
    table = render(args, rows, skipped)
    print(table)
    if args.out:
        write(args.out, table)
    return rows


def write(path: Path, table: str) -> None:
    """Write the table, or add its rows (and what it left out) to the table already there: a
    device run splits the methods over several calls, and the README shows one table."""
    if not path.is_file():
        path.write_text(table)
        return
    old, new = path.read_text().splitlines(), table.splitlines()
    rows = [x for x in new if x.startswith("| ") and not x.startswith("| method")]
    notes = [x for x in new if x.startswith("Left out: ")]
    end = max(i for i, x in enumerate(old) if x.startswith("|")) + 1
    gap = [""] if notes and not any(x.startswith("Left out: ") for x in old) else []
    path.write_text("\n".join(old[:end] + rows + old[end:] + gap + notes) + "\n")


if __name__ == "__main__":
    main()
