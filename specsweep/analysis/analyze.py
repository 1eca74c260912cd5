"""Everything `specsweep analyze` computes, per source (one card's records), as plain data.

Sources are analysed apart: a cost per token belongs to one GPU, and a pair to one results folder.
Probe records of every source given are offered to every source, so that `results/probe` supplies
the expert counts of targets whose trials do not record their shape.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from specsweep.analysis import coverage, costmodel, paired, union
from specsweep.analysis import records as rec
from specsweep.records import attempts
from specsweep.records.sources import Source


@dataclass
class SourceAnalysis:
    source: str  # the source's label (its card, and name where two share a card)
    n_trials: int
    n_kept: int  # after dropping superseded attempts
    designs: list[str]
    n_runs: int
    paired: list[paired.PairedRow]
    unpaired: list[paired.Unpaired]
    fits: list[costmodel.FamilyFit]
    break_even: list[costmodel.BreakEven]
    notes: list[str] = field(default_factory=list)


def analyze_source(src: Source, probes: list[dict], n_boot: int = paired.BOOTSTRAP,
                   seed: int = paired.SEED) -> SourceAnalysis:
    kept = attempts.kept(src.trials)
    rows, missing = paired.paired_rows(src.trials, n_boot, seed)
    fits = costmodel.family_fits(src.trials)
    routings = {}
    for f in fits:
        if f.target_key not in routings:
            routings[f.target_key] = coverage.routing_for(f.trials, probes)
    moe = [r for r in routings.values() if r is not None and r.moe]
    reference = coverage.Routing(moe[0].n_expert, moe[0].n_used, f"a MoE target's routing in the same records "
                                 f"({moe[0].source})") if moe else None
    for f in fits:
        routing = routings[f.target_key]
        traced = bool(f.trials) and all(r.get("experts") for r in f.trials)
        f.knee = coverage.knee_test(f, routing, reference, seed=seed, traced=traced)
        # the formula stays as the reference a measured union is set against
        f.knee_formula = coverage.knee_test(f, routing, reference, seed=seed) if traced else None
        f.knee_configured = coverage.knee_test(f, routing, reference, seed=seed, configured=True)
        if traced:
            f.union = union.union_by_k(f.trials)
            f.pass_test = union.pass_test(f.trials)
    notes = []
    designs = sorted({rec.design_of(r) for r in kept if not rec.is_baseline(r)})
    if "sequential" in designs:
        notes.append("sequential records (no blocks): each config is paired with the baseline by trial index; "
                     "the pairs share a prompt, not a moment, so drift between cells is not removed")
    if len(kept) < len(src.trials):
        notes.append(f"{len(src.trials) - len(kept)} trial(s) superseded by a later attempt of their block")
    if missing:
        notes.append(f"{len(missing)} trial(s) of {len({u.cell_id for u in missing})} config(s) have no baseline "
                     f"in their own run, block and prompt, and are left out of the changes")
    n_runs = len({attempts.run_of(r) for r in kept})
    return SourceAnalysis(src.label or src.name, len(src.trials), len(kept), designs, n_runs, rows, missing, fits,
                          costmodel.break_even(rows, n_boot, seed), notes)


def analyze(sources: list[Source], n_boot: int = paired.BOOTSTRAP, seed: int = paired.SEED) -> list[SourceAnalysis]:
    """One analysis per source that has trials."""
    probes = [p for s in sources for p in s.probes]
    return [analyze_source(s, probes, n_boot, seed) for s in sources if s.trials]


def _clean(v):
    """JSON-safe: dataclasses to dicts, tuples to lists, NaN and infinity to None."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _clean(getattr(v, f.name)) for f in dataclasses.fields(v) if f.name != "trials"}
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "item"):  # numpy scalars
        return _clean(v.item())
    return v


def to_json(analyses: list[SourceAnalysis]) -> dict:
    return {"kind": "analysis", "sources": [_clean(a) for a in analyses]}
