"""`specsweep tune TARGET`: the fastest speculative config for this card, model and prompts, measured,
with the llama-server and llama-cli command lines that run it (the stages: specsweep/tune/)."""

from __future__ import annotations

import re
import statistics
import sys
import time
from pathlib import Path

import click

from specsweep.errors import SpecsweepError


def parse_duration(text: str) -> float:
    """"15m", "90s", "1h", "1.5h" or plain seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*", text or "")
    if not m:
        raise SpecsweepError(f"--time {text!r}: give a duration like 15m, 90s or 1h")
    seconds = float(m[1]) * {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[m[2]]
    if seconds <= 0:
        raise SpecsweepError(f"--time {text!r}: give a duration above zero")
    return seconds


def absolute_prompts(text: str) -> str:
    """A prompt file named relative to here, made absolute: the tune's matrices live in its folder."""
    from specsweep.matrix.prompt_sources import SHIPPED, parse

    src = parse(text)
    if src.repo is not None or (not src.prefix and src.format == "toml" and (SHIPPED / f"{src.location}.toml").is_file()):
        return text
    query = text.partition("?")[2]
    return src.prefix + str(Path(src.location).resolve()) + (f"?{query}" if query else "")


def clock(seconds: float) -> str:
    s = max(int(round(seconds)), 0)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Deadline(Exception):
    """The next trial would end past the budget: the measurement stops after the trial in flight
    (records closed, models freed), and the tune answers from what it has."""


class Progress:
    """One bar over the time budget: what the tune is doing and the time left. While `armed`, a
    trial after which the time left would not hold another (the median trial so far) raises
    Deadline."""

    def __init__(self, budget: float, t0: float | None = None):
        self.t0, self.budget, self.what = t0 or time.monotonic(), budget, "starting"
        self.armed, self.last, self.fresh = False, time.monotonic(), True
        self.trial_seconds: list[float] = []
        self.bar = click.progressbar(length=max(int(budget), 1), label="tuning", file=sys.stderr, show_eta=False,
                                     show_percent=False, show_pos=False, item_show_func=lambda s: s)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @property
    def left(self) -> float:
        return self.budget - self.elapsed

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def stage(self, what: str) -> None:
        self.what = what
        if not sys.stderr.isatty():  # a log has no bar to redraw: a line per stage
            click.echo(f"[{clock(self.elapsed)}] {what} ({clock(self.left)} left)", err=True)
        self.tick()

    def tick(self, cell: str = "") -> None:
        pos = min(int(self.elapsed), self.bar.length)
        self.bar.update(pos - self.bar.pos, f"{self.what}{': ' + cell if cell else ''} ({clock(self.left)} left)")

    def arm(self) -> None:
        """Before a measurement starts: its first trial's time holds the models' loading and
        warm-up, and is not a trial's."""
        self.armed, self.last, self.fresh = True, time.monotonic(), True

    def trial(self, cell: str, n: int) -> None:
        now = time.monotonic()
        if not self.fresh:
            self.trial_seconds.append(now - self.last)
        self.last, self.fresh = now, False
        self.tick(cell)
        if self.armed and self.trial_seconds and self.left < 1.2 * statistics.median(self.trial_seconds):
            raise Deadline()

    @staticmethod
    def log(line: str) -> None:
        click.echo(f"\n{line}", err=True)


@click.command("tune")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--draft", type=click.Path(path_type=Path), default=None, help="A draft model for the target (method draft).")
@click.option("--drafter", "drafters", type=click.Path(path_type=Path), multiple=True,
              help="A DFlash, DSpark or EAGLE-3 drafter of the target (repeatable).")
@click.option("--prompts", default="default", show_default=True,
              help="Your prompts: a shipped set, a TOML file, spec-bench:PATH or hf://datasets/..., with ?per_kind=N.")
@click.option("--parallel", type=int, default=1, show_default=True, help="Concurrent streams (llama-server's -np).")
@click.option("--vram", metavar="SIZE", default=None,
              help='The card\'s memory, e.g. "24GiB": a target that does not fit keeps experts in host memory (--n-cpu-moe).')
@click.option("--time", "time_text", default="15m", show_default=True, help="Wall-clock budget of this call: 15m, 90s, 1h.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="The tune's folder (default results/tune-<target>); the same command again resumes it.")
@click.option("--methods", "methods_text", default=None, metavar="LIST",
              help="Only these methods, comma-separated (default: every method the files allow).")
@click.option("--accept", "accept", multiple=True, metavar="SPEC",
              help='Synthetic acceptance standing in for real text, per model drafter: "mtp n4=0.8,0.6,0.45,0.3" '
                   '(as predict takes it); for synthetic stand-in models, whose drafts real text would not accept.')
@click.option("--max-draft", type=int, default=None,
              help="Consider no draft longer than N tokens (default: the grid's longest, 64 for ngram-mod).")
@click.option("--gpus", "gpus_text", default=None, help='GPU indices, e.g. 0 ("" for the CPU; default: GPU 0 if there is one).')
@click.option("--kv", type=click.Choice(["q8_0", "f16"]), default="q8_0", show_default=True, help="KV cache type.")
@click.option("--ctx", "n_ctx", type=int, default=4096, show_default=True, help="Context per stream.")
@click.option("--tokens", type=int, default=256, show_default=True, help="Tokens generated per prompt and trial.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Unmeasured runs of each config per round.")
@click.option("--threads", type=int, default=0, help="CPU threads (default: every CPU).")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's own log lines.")
def tune(target: Path, draft: Path | None, drafters: tuple[Path, ...], prompts: str, parallel: int, vram: str | None,
         time_text: str, out: Path | None, methods_text: str | None, accept: tuple[str, ...], max_draft: int | None,
         gpus_text: str | None,
         kv: str, n_ctx: int, tokens: int, warmup: int, threads: int, verbose: bool) -> None:
    """Find the fastest speculative decoding config of TARGET (a GGUF) on this card for your prompts:
    pilot runs measure each method's acceptance, predict ranks every config, the leaders race
    against plain decoding in blocks; prints the winner with its paired change and 95% interval and
    the llama-server and llama-cli command lines that run it."""
    from specsweep.tune import session

    t0 = time.monotonic()  # the budget counts from here: reading headers and checking files too
    budget = parse_duration(time_text)
    for name, value, low in (("--parallel", parallel, 1), ("--ctx", n_ctx, 64), ("--tokens", tokens, 8),
                             ("--warmup", warmup, 0), ("--threads", threads, 0), ("--max-draft", max_draft or 1, 1)):
        if value < low:
            raise SpecsweepError(f"{name} must be at least {low}, got {value}")
    wanted = [m.strip() for m in methods_text.split(",") if m.strip()] if methods_text is not None else None
    if wanted is not None and not wanted:
        raise SpecsweepError("--methods names no method")
    session.Tune(target, draft, drafters, absolute_prompts(prompts), parallel, vram, budget, out, wanted, accept,
                 max_draft, gpus_text, kv, n_ctx, tokens, warmup, threads, verbose).run(t0)
