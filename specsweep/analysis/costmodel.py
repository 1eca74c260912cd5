"""The cost model: what a generated token costs against how much was drafted for it, and the
acceptance at which speculation breaks even.

(a) Per target and drafter family (and per KV type and rollback mode, which change the cost of a
token for the same pair), an ordinary least-squares line through one point per trial:

    y = 1000 / decode_tps  (ms per generated token),   x = n_drafted / n_generated

The slope is what one more drafted token costs, drafting and verifying it and rolling it back
when rejected; the intercept is the cost of a generated token with nothing drafted, to be set
beside the baseline's own ms per token (the loop's fixed overhead). The published audit found one
such line, 27.00 + 4.040 x ms with R^2 0.993, across draft lengths 1 to 128.

(b) Per target, over the speculative configs: speed-up (paired change + 1) against acceptance
(accepted / drafted tokens), a straight line, and where it crosses 1: the break-even acceptance,
with a bootstrap interval over configs. Not estimable with fewer than 3 configs, or when the line
does not rise with acceptance.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from specsweep.analysis import records as rec
from specsweep.analysis.paired import BOOTSTRAP, LEVEL, SEED, PairedRow
from specsweep.records.attempts import kept

MIN_CONFIGS = 3
MIN_SPREAD = 0.25  # x's range over its mean below which one draft length gets no line


@dataclass
class LineFit:
    n: int
    slope: float
    intercept: float
    slope_ci: tuple[float, float]
    intercept_ci: tuple[float, float]
    r2: float

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x


@dataclass
class FamilyFit:
    target: str  # the target's file (what the page shows)
    target_key: str  # its sha256 where recorded
    family: str  # method · drafting model
    kv: str
    rollback: str
    n_trials: int
    n_levels: int  # distinct draft lengths (draft_max) among its trials
    x_range: tuple[float, float]
    fit: LineFit | None
    note: str  # why there is no fit, else ""
    baseline_ms: float | None  # the baseline's mean ms per generated token (same reference keys)
    n_baseline: int
    n_synthetic: int  # trials whose acceptance llama.cpp forced
    label: str = ""
    knee: object | None = None  # a coverage.KneeTest, filled in by the analysis (its drafts' coverage)
    knee_configured: object | None = None  # the same test at the configured draft length (the audit's way)
    knee_formula: object | None = None  # traced families: the test on the i.i.d. formula, for reference
    union: list | None = None  # traced families: union.UnionRow per verify length (measured U(K))
    pass_test: object | None = None  # traced families: union.PassTest (each pass's time against K)
    trials: list[dict] = field(default_factory=list, repr=False)  # not written to JSON


@dataclass
class BreakEven:
    target: str
    n_configs: int
    fit: LineFit | None
    acceptance: float | None  # where the speed-up line crosses 1
    interval: tuple[float, float] | None  # bootstrap over configs
    note: str
    points: list[dict] = field(default_factory=list)  # {cell, acceptance, speedup, synthetic}


def ols(x, y, level: float = LEVEL) -> LineFit | None:
    """y = intercept + slope x with t-intervals; None below 3 points or with one x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    res = stats.linregress(x, y)
    q = float(stats.t.ppf(0.5 + level / 2, len(x) - 2))
    return LineFit(len(x), float(res.slope), float(res.intercept),
                   (float(res.slope - q * res.stderr), float(res.slope + q * res.stderr)),
                   (float(res.intercept - q * res.intercept_stderr), float(res.intercept + q * res.intercept_stderr)),
                   float(res.rvalue ** 2))


def family_fits(trials: list[dict]) -> list[FamilyFit]:
    """One fit per (target, drafter family, KV, rollback) over the speculative trials."""
    trials = [r for r in kept(trials) if rec.usable(r)]
    base: dict[str, list[float]] = defaultdict(list)
    for r in trials:
        if rec.is_baseline(r):
            base[str(r.get("reference_key"))].append(rec.ms_per_token(r))
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in trials:
        if not rec.is_baseline(r):
            groups[(rec.target_key(r), rec.family(r), *rec.variant(r))].append(r)
    # name the KV type and rollback mode only where a family has more than one
    variants: dict[tuple, set] = defaultdict(set)
    for tkey, fam, kv, rb in groups:
        variants[(tkey, fam)].add((kv, rb))
    labels = rec.target_labels(trials)
    out = []
    for (tkey, fam, kv, rb), mine in groups.items():
        xs = [rec.draft_per_token(r) for r in mine]
        ys = [rec.ms_per_token(r) for r in mine]
        levels = {rec.draft_max(r) for r in mine if r.get("n_drafted")}
        spread = max(xs) - min(xs)
        if len(levels) < 2 and spread < MIN_SPREAD * max(statistics.fmean(xs), 1e-9):
            # one draft length: x moves only with acceptance, too little to tell a slope from noise
            fit, note = None, f"one draft length, x moves only {spread:.2f}"
        else:
            fit = ols(xs, ys)
            note = "" if fit else ("fewer than 3 trials" if len(mine) < 3 else "one draft rate only (x does not vary)")
        refs = {str(r.get("reference_key")) for r in mine}
        b = [v for k in refs for v in base.get(k, [])]
        label = fam
        if len(variants[(tkey, fam)]) > 1:
            label += f" (KV {kv}, {rb})"
        out.append(FamilyFit(target=labels[tkey], target_key=tkey, family=fam, kv=kv, rollback=rb,
                             n_trials=len(mine), n_levels=len(levels), x_range=(min(xs), max(xs)), fit=fit,
                             note=note, baseline_ms=statistics.fmean(b) if b else None, n_baseline=len(b),
                             n_synthetic=sum(rec.synthetic(r) for r in mine), label=label, trials=mine))
    out.sort(key=lambda f: (f.target, f.family, f.kv, f.rollback))
    return out


def _crossing(fit: LineFit) -> float | None:
    return (1.0 - fit.intercept) / fit.slope if fit.slope > 0 else None


def sweeps(rows: list[PairedRow]) -> dict[tuple, list[PairedRow]]:
    """The arms swept over synthetic acceptance: (target, arm) -> its rows by acceptance, where at
    least MIN_CONFIGS levels were measured (a curve of its own; fewer join the target's line)."""
    found: dict[tuple, list[PairedRow]] = defaultdict(list)
    for r in rows:
        if r.synthetic and r.n_drafted > 0 and r.change is not None and r.acceptance is not None:
            found[(r.target_key, r.arm)].append(r)
    return {k: sorted(v, key=lambda r: r.acceptance) for k, v in found.items()
            if len({round(r.acceptance, 3) for r in v}) >= MIN_CONFIGS}


def break_even(rows: list[PairedRow], n_boot: int = BOOTSTRAP, seed: int = SEED) -> list[BreakEven]:
    """Speed-up against acceptance, and where it crosses 1: one line per arm (drafter family and
    draft limit) that was swept over synthetic acceptance levels (its own curve, measured), and one
    over the other speculative configs of each target (across arms, as the audit drew it)."""
    usable = [r for r in rows if r.n_drafted > 0 and r.change is not None and r.acceptance is not None]
    swept = set(sweeps(usable))
    groups: dict[tuple, list[PairedRow]] = defaultdict(list)
    for row in usable:  # across arms: one line per target and backend/streams (the arm names them)
        key = (row.target_key, row.arm)
        groups[key if row.synthetic and key in swept else (row.target_key, row.run_by)].append(row)
    out = []
    for (_, arm), mine in sorted(groups.items(), key=lambda kv: (kv[1][0].target, kv[0][1])):
        swept_arm = arm and (mine[0].target_key, arm) in swept
        target = mine[0].target + (f" · {arm} (synthetic acceptance sweep)" if swept_arm else arm)
        acc = np.array([r.acceptance for r in mine])
        sp = np.array([r.speedup for r in mine])
        points = [{"cell": r.cell, "acceptance": r.acceptance, "speedup": r.speedup, "synthetic": r.synthetic,
                   "configured": r.configured_acceptance, "method": r.method} for r in mine]
        fit = ols(acc, sp)
        if len(mine) < MIN_CONFIGS or fit is None:
            why = (f"not estimable: {len(mine)} speculative config(s), at least {MIN_CONFIGS} needed"
                   if len(mine) < MIN_CONFIGS else "not estimable: every config has the same acceptance")
            out.append(BreakEven(target, len(mine), fit, None, None, why, points))
            continue
        if fit.slope <= 0:
            out.append(BreakEven(target, len(mine), fit, None, None,
                                 f"not estimable: speed-up does not rise with acceptance (slope {fit.slope:+.3f})",
                                 points))
            continue
        a = _crossing(fit)
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            i = rng.integers(0, len(mine), len(mine))
            if np.ptp(acc[i]) == 0:
                continue
            slope, intercept = np.polyfit(acc[i], sp[i], 1)
            if slope > 0:
                boots.append((1.0 - intercept) / slope)
        interval = None
        note = ""
        if len(boots) >= n_boot // 2:
            lo, hi = np.percentile(boots, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
            interval = (float(lo), float(hi))
        else:
            note = f"no interval: the line rose in only {len(boots)} of {n_boot} resamples"
        span = f"measured acceptance spans {acc.min():.0%}-{acc.max():.0%}"
        if a > 1:
            extra = f"no break-even within 0-100%: the line reaches 1x only at {a:.0%} (extrapolated; {span})"
        elif a < 0:
            extra = f"the line is above 1x even at 0% acceptance (extrapolated; {span})"
        elif not acc.min() <= a <= acc.max():
            extra = f"extrapolated: {span}"
        else:
            extra = ""
        note = "; ".join(x for x in (note, extra) if x)
        out.append(BreakEven(target, len(mine), fit, a, interval, note, points))
    return out
