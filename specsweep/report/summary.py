"""Per-cell statistics from trial records, and the table `specsweep run` prints at the end.

A cell's change against baseline compares it with the baseline cell that shares its reference key
(same target, KV type, devices, n_predict and prompts), measured in the same results folder.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from specsweep.analysis.records import acceptance_label, configured_acceptance


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
    n_generated: int = 0
    ckpt_bytes: int = 0  # the target's checkpoint copies (hybrid targets without snapshots)
    n_throttled: int = 0  # trials whose GPU telemetry saw a throttle reason
    # the paired change against the baseline of the same block and its 95% t-interval (blocks design)
    paired: float | None = None
    paired_ci: tuple[float, float] | None = None
    target: str = ""  # the target model's name in the matrix
    configured_acceptance: float | None = None  # synthetic acceptance: what the settings ask for

    @property
    def drafted_per_token(self) -> float | None:
        return self.n_drafted / self.n_generated if self.n_generated else None

    @property
    def ckpt_mb_per_token(self) -> float | None:
        return self.ckpt_bytes / self.n_generated / 1e6 if self.n_generated else None

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
                                                  r["settings"]["n_predict"], r["reference_key"], [], 0, 0, 0, 0,
                                                  target=str(((r.get("models") or {}).get("target") or {})
                                                             .get("name") or ""))
        if s.configured_acceptance is None:
            s.configured_acceptance = configured_acceptance(r)
        s.tps.append(r["decode_tps"])
        s.n_drafted += r["n_drafted"]
        s.n_accepted += r["n_accepted"]
        s.n_lossless += bool(r["lossless"])
        s.n_synthetic += bool(r.get("synthetic"))
        s.n_generated += int(r.get("n_generated") or 0)
        s.ckpt_bytes += int((r.get("ckpt") or {}).get("bytes", 0))
        s.n_throttled += bool((r.get("telemetry") or {}).get("throttled"))
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


def with_paired(stats: list[CellStats], rows) -> list[CellStats]:
    """Attach the analysis' paired changes (analysis.paired.PairedRow by cell id) to the stats."""
    by_id = {r.cell_id: r for r in rows}
    for s in stats:
        r = by_id.get(s.cell_id)
        if r is not None and r.design == "blocks" and r.change is not None:
            s.paired, s.paired_ci = r.change, r.t_interval
    return stats


def _change(s: CellStats) -> str:
    if s.method == "baseline":
        return ""
    if s.paired is not None:  # against the baseline of the same block, 95% t-interval over blocks
        ci = f" [{s.paired_ci[0]:+.1%}, {s.paired_ci[1]:+.1%}]" if s.paired_ci else ""
        return f"{s.paired:+.1%}{ci}"
    return "n/a" if s.vs_baseline is None else f"{s.vs_baseline:+.1%}"


def table(stats: list[CellStats]) -> str:
    """The run's summary: tok/s, the change against the baseline (paired within blocks, with its
    interval, in the blocks design), acceptance, draft economy, lossless trials."""
    # a matrix of several targets names each row's (its baselines would look alike otherwise)
    several = len({s.target for s in stats}) > 1
    head = ("config",) + (("target",) if several else ()) + (
        "kv", "n_pred", "trials", "tok/s mean", "min", "max", "vs base", "accept", "drafted/tok", "ckpt MB/tok",
        "lossless")
    rows = [head]
    for s in stats:
        rows.append((
            s.name + (" (throttled)" if s.n_throttled else ""), *((s.target,) if several else ()),
            s.kv, str(s.n_predict), str(s.n_trials),
            f"{s.mean:.1f}", f"{min(s.tps):.1f}", f"{max(s.tps):.1f}", _change(s),
            acceptance_label(s.acceptance, s.configured_acceptance),
            "" if s.method == "baseline" or s.drafted_per_token is None else f"{s.drafted_per_token:.2f}",
            f"{s.ckpt_mb_per_token:.2f}" if s.ckpt_bytes and s.ckpt_mb_per_token is not None else "",
            s.lossless_text,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def uneven_stops(trials: list[dict]) -> list[str]:
    """Prompts on which trials with ignore_eos off, compared with one baseline, ended at different
    lengths below n_predict (an end-of-generation token cut some short): '<cell> / <prompt>'."""
    lengths: dict[tuple, dict[str, int]] = {}
    for t in trials:
        s = t.get("settings") or {}
        if s.get("ignore_eos", False) or t.get("synthetic"):
            continue
        n = min(int(t.get("n_generated") or 0), int(s.get("n_predict") or 0))
        lengths.setdefault((t.get("reference_key"), t.get("prompt_id")), {})[str(t.get("cell"))] = n
    return [f"{min(v, key=v.get)} / {k[1]}" for k, v in lengths.items() if len(set(v.values())) > 1]
