"""A tune's answer, as text (printed, and <out>/answer.txt) and JSON (<out>/answer.json): the winner
with its paired change and 95% interval against plain decoding and against the runner-up, the
command lines that run it, every raced config, and where the records and matrices are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from specsweep.analysis.paired import Versus
from specsweep.tune import render
from specsweep.tune.command import clock
from specsweep.tune.race import PLAIN, Standing, interval_text


@dataclass
class Report:
    target: Path
    out: Path
    budget: float
    elapsed: float
    n_candidates: int
    families: list[str]
    ranking: list[dict]
    notes: list[str]
    stopped: str
    parallel: int
    synthetic: bool
    models: dict[str, Path]
    card: str = ""
    n_prompts: int = 0
    leader: str = PLAIN
    runner_up: str | None = None
    against_runner_up: Versus | None = None
    standings: dict[str, Standing] = field(default_factory=dict)
    dropped: dict[str, dict] = field(default_factory=dict)
    blocks: int = 0
    settings: dict = field(default_factory=dict)  # the winner's cell (plain decoding's when nothing beats it)
    finalists: Path | None = None
    grid: Path | None = None
    grid_estimate: float | None = None

    def predicted(self, name: str) -> float | None:
        return next((r["predicted"] for r in self.ranking if r["name"] == name), None)


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def table(r: Report) -> list[str]:
    from specsweep.analysis.command import table as fmt

    rows = []
    order = sorted(r.standings.values(), key=lambda s: (s.name in r.dropped, -(s.change if s.change is not None else -9)))
    for s in order:
        if s.name == r.leader:
            state = "winner"
        elif s.name == r.runner_up:
            state = "runner-up"
        elif s.name in r.dropped:
            state = f"dropped after {r.dropped[s.name]['after_blocks']} blocks"
        else:
            state = "racing at the end"
        pred = r.predicted(s.name)
        rows.append((s.name, _pct(None if pred is None else pred - 1), f"{_pct(s.change)} {interval_text(s.interval)}".strip(),
                     "" if s.acceptance is None else f"{s.acceptance:.0%}", str(s.n_blocks), state))
    return fmt(("config", "predicted", "measured vs plain [95%]", "accept", "blocks", "state"), rows).splitlines()


def _versus_line(r: Report) -> str:
    v = r.against_runner_up
    if r.runner_up is None or v is None or v.change is None:
        return ""
    if r.runner_up == PLAIN:
        return ""
    return (f"  against the runner-up, {r.runner_up}: {_pct(v.change)} {interval_text(v.t_interval)} "
            f"(the same blocks, paired)")


def text(r: Report) -> str:
    lines = [f"== tune: {r.target.name}" + (f" on {r.card}" if r.card else "") +
             f", {r.parallel} stream{'s' if r.parallel > 1 else ''} ==",
             f"searched {_n(r.n_candidates, 'config')} in {len(r.families)} famil{'y' if len(r.families) == 1 else 'ies'} "
             f"(one pilot each), ranked them by predict; " + (f"raced {len(r.standings)} against plain decoding over "
                                                               f"{_n(r.blocks, 'block')}; "
                             if r.standings else "no race; ") + f"{clock(r.elapsed)} of {clock(r.budget)}"
             + (f" (stopped: {r.stopped})" if r.stopped else "")]
    lines += [f"note: {n}" for n in r.notes]
    if r.synthetic:
        lines.append("acceptance: synthetic (--accept), standing in for real text: these are the card's speeds at "
                     "that acceptance, not on your prompts' text")
    if r.standings:
        lines += [""] + table(r)
        lines += [f"  {name}: {d['reason']}" for name, d in r.dropped.items() if name in r.standings]
    lines.append("")
    base = r.standings.get(r.leader)
    if r.leader == PLAIN and r.standings:
        best = max((s for s in r.standings.values() if s.change is not None), key=lambda s: s.change, default=None)
        lines.append("winner: plain decoding: no config beat it" + (
            f" (the best, {best.name}: {_pct(best.change)} {interval_text(best.interval)} over {best.n_blocks} blocks)"
            if best else ""))
    elif base is not None:
        lines.append(f"winner: {r.leader}")
        lines.append(f"  against plain decoding: {_pct(base.change)} {interval_text(base.interval)} (95% t-interval over "
                     f"{base.n_blocks} blocks, each the mean over the same prompts: block-to-block timing varies "
                     f"inside it, the choice of prompts does not)")
        if base.interval and base.interval[0] <= 0:
            lines.append("  not yet told apart from plain decoding: its interval holds zero (give more --time, or "
                         "re-measure the finalists)")
        if base.acceptance is not None:
            lines.append(f"  acceptance {base.acceptance:.1%}")
        extra = _versus_line(r)
        if extra:
            lines.append(extra)
    ranked = [x for x in r.ranking if x["predicted"] is not None and not x.get("note")][:3]
    if not r.standings and not ranked:
        lines.append("winner: plain decoding: no config had a draft accepted in its pilot on these prompts")
    elif not r.standings:
        lines.append("winner: none measured (no whole race block): plain decoding's command below; give more --time, "
                     "or run the same command again to resume")
        if ranked:
            lines.append("  predicted (not measured): " + "; ".join(f"{x['name']} {_pct(x['predicted'] - 1)}"
                                                                     for x in ranked))
    lines += ["", "llama-server:", "  " + render.line("llama-server", render.server_args(r.settings, r.models)),
              "llama-cli:", "  " + render.line("llama-cli", render.cli_args(r.settings, r.models)), ""]
    if r.standings:
        lines.append("measured with llama-server's slot loop in process, greedy (temperature 0) and every prompt "
                     "generating its tokens (ignore_eos): requests that sample accept fewer drafts")
    if r.finalists:
        lines.append(f"re-measure the finalists afresh: specsweep run {r.finalists}")
    if r.grid:
        lines.append(f"every candidate: {r.grid}" + (f" (about {clock(r.grid_estimate)} at the race's pace)"
                                                      if r.grid_estimate else ""))
    lines.append(f"records: specsweep plot {r.out}")
    return "\n".join(lines)


def to_json(r: Report) -> dict:
    def standing(s: Standing) -> dict:
        return {"change": s.change, "interval": s.interval, "blocks": s.n_blocks, "acceptance": s.acceptance,
                "predicted_speedup": r.predicted(s.name), "dropped": r.dropped.get(s.name)}

    v = r.against_runner_up
    return {"kind": "tune", "target": str(r.target), "card": r.card, "parallel": r.parallel, "winner": r.leader,
            "measured": bool(r.standings),
            "against_plain": standing(r.standings[r.leader]) if r.leader in r.standings else None,
            "runner_up": r.runner_up,
            "against_runner_up": None if v is None else {"change": v.change, "interval": v.t_interval,
                                                         "blocks": v.n_blocks},
            "llama_server": render.server_args(r.settings, r.models),
            "llama_cli": render.cli_args(r.settings, r.models),
            "raced": {n: standing(s) for n, s in r.standings.items()}, "ranking": r.ranking,
            "stopped": r.stopped, "notes": r.notes, "seconds": r.elapsed, "budget_seconds": r.budget,
            "synthetic_acceptance": r.synthetic, "finalists": str(r.finalists or ""), "grid": str(r.grid or ""),
            "grid_estimate_seconds": r.grid_estimate}
