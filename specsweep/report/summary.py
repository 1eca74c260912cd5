"""Per-cell statistics from trial records, and the table `specsweep run` prints at the end.

A cell's change against baseline compares it with the baseline cell that shares its reference key
(same target, KV type, devices, n_predict and prompts), measured in the same results folder.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class CellStats:
    cell_id: str
    name: str
    method: str
    kv: str
    n_predict: int
    reference_key: str
    tps: list[float]
    n_drafted: int
    n_accepted: int
    n_lossless: int
    n_trials: int
    vs_baseline: float | None = None  # mean tok/s / baseline mean tok/s - 1
    n_synthetic: int = 0  # synthetic-acceptance trials: no lossless verdict (their tokens are not text)

    @property
    def lossless_text(self) -> str:
        return lossless_text(self.n_lossless, self.n_synthetic, self.n_trials)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.tps)

    @property
    def acceptance(self) -> float | None:
        return self.n_accepted / self.n_drafted if self.n_drafted else None


def lossless_text(n_lossless: int, n_synthetic: int, n_trials: int) -> str:
    """The lossless column: lossless of the checked trials, and "synthetic" for trials whose
    acceptance was synthetic (their tokens are not the target's text, so they have no verdict)."""
    checked = n_trials - n_synthetic
    if not checked:
        return "synthetic"
    return f"{n_lossless}/{checked}" + (f" +{n_synthetic} synthetic" if n_synthetic else "")


def cell_stats(records: list[dict], order: list[str] | None = None) -> list[CellStats]:
    by_cell: dict[str, CellStats] = {}
    for r in records:
        if r.get("kind") != "trial":
            continue
        s = by_cell.get(r["cell_id"])
        if s is None:
            s = by_cell[r["cell_id"]] = CellStats(r["cell_id"], r["cell"], r["method"], r["settings"]["kv"],
                                                  r["settings"]["n_predict"], r["reference_key"], [], 0, 0, 0, 0)
        s.tps.append(r["decode_tps"])
        s.n_drafted += r["n_drafted"]
        s.n_accepted += r["n_accepted"]
        s.n_lossless += bool(r["lossless"])
        s.n_synthetic += bool(r.get("synthetic"))
        s.n_trials += 1
    baselines = {s.reference_key: s.mean for s in by_cell.values() if s.method == "baseline"}
    for s in by_cell.values():
        if s.reference_key in baselines and baselines[s.reference_key] > 0:
            s.vs_baseline = s.mean / baselines[s.reference_key] - 1
    stats = list(by_cell.values())
    if order:
        rank = {cid: i for i, cid in enumerate(order)}
        stats.sort(key=lambda s: rank.get(s.cell_id, len(rank)))
    return stats


def table(stats: list[CellStats]) -> str:
    head = ("config", "kv", "n_pred", "trials", "tok/s mean", "min", "max", "vs base", "accept", "lossless")
    rows = [head]
    for s in stats:
        rows.append((
            s.name, s.kv, str(s.n_predict), str(s.n_trials), f"{s.mean:.1f}", f"{min(s.tps):.1f}",
            f"{max(s.tps):.1f}",
            "" if s.method == "baseline" else ("n/a" if s.vs_baseline is None else f"{s.vs_baseline:+.1%}"),
            "" if s.acceptance is None else f"{s.acceptance:.1%}",
            s.lossless_text,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
