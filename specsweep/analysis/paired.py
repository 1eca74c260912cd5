"""Each config against the baseline of its own block: paired changes with honest intervals.

In the blocks design a block runs every cell of a group once per prompt, in a balanced order, so a
cell's trial and the baseline's trial on the same prompt in the same (run, block) were measured
minutes apart, under the same clocks and temperature. The unit of replication is the block:

- per (run, block, prompt): d = log(tps_cell / tps_baseline) (several baseline trials there: the
  mean of their logs);
- per block: the mean of its d over prompts, one value per block;
- the change: exp(mean over blocks) - 1, with a 95% t-interval over blocks and a block bootstrap
  (blocks resampled with replacement, percentile interval, fixed seed).

Blocks of every run are pooled for the interval, which is therefore within-run: a run is a fresh
process (allocations, graph captures, clocks), and whatever differs between runs is reported
separately, as the change per run and its spread (stdev, min, max over runs).

Records without blocks (the sequential design) pair by trial index: the baseline's trial 0 with the
cell's trial 0. They ran at different moments, so the pairing removes prompt effects but not drift;
such rows are labelled "sequential".
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from specsweep.analysis import records as rec
from specsweep.errors import SpecsweepError
from specsweep.records.attempts import block_of, kept, run_of

BOOTSTRAP = 2000
SEED = 20261201
LEVEL = 0.95
MIN_BOOT_BLOCKS = 5  # below this a percentile bootstrap is far too narrow (2 blocks: their min and max)


@dataclass
class Unpaired:
    cell: str
    cell_id: str
    run: int
    block: int
    prompt_id: str
    reason: str


@dataclass
class RunChange:
    run: int
    change: float
    n_blocks: int
    t_interval: tuple[float, float] | None


@dataclass
class PairedRow:
    cell_id: str
    cell: str
    method: str
    reference_key: str
    target: str  # the target's file (with a sha256 prefix where two models share one)
    target_key: str  # its sha256 where recorded
    design: str  # "blocks" or "sequential" (paired by trial index)
    n_kept: int  # trials that count (highest attempt)
    tps_mean: float
    tps_min: float
    tps_max: float
    baseline_tps: float | None  # mean tok/s of the baseline trials it was paired with
    n_pairs: int
    n_blocks: int
    mean_log: float | None
    change: float | None
    t_interval: tuple[float, float] | None
    bootstrap_interval: tuple[float, float] | None
    acceptance: float | None
    n_drafted: int
    n_accepted: int
    runs: list[RunChange] = field(default_factory=list)
    run_spread: dict | None = None  # {n_runs, stdev, min, max} of the per-run changes (2+ runs)
    n_unpaired: int = 0
    n_throttled: int = 0  # trials whose telemetry saw the GPU throttle
    synthetic: bool = False  # acceptance forced by llama.cpp's synthetic acceptance
    configured_acceptance: float | None = None  # what synthetic acceptance asked for (acceptance: what was drawn)
    ckpt_restores_per_token: float | None = None
    arm: str = ""  # drafter family and draft limit ("mtp n=2"): one curve of an acceptance sweep
    run_by: str = ""  # " [server]", " x4": what ran it, where not one stream in process

    @property
    def speedup(self) -> float | None:
        return None if self.change is None else 1.0 + self.change


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The t-interval of the mean (None below 2 values)."""
    n = len(values)
    if n < 2:
        return None
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(n)
    h = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return m - h, m + h


def bootstrap_interval(values: list[float], n_boot: int = BOOTSTRAP, seed: int = SEED,
                       level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile interval of the mean over `values` resampled with replacement (None below
    MIN_BOOT_BLOCKS values)."""
    if len(values) < MIN_BOOT_BLOCKS:
        return None
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _change(x: float) -> float:
    return math.expm1(x)


def _as_change(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if ci is None else (_change(ci[0]), _change(ci[1]))


def _slot(r: dict) -> tuple:
    """Where a trial's baseline is: same reference key, run, design, block and prompt (the design
    too, so that an older sequential trial never pairs with a block of a later blocks run)."""
    return r.get("reference_key"), run_of(r), rec.design_of(r), block_of(r), r.get("prompt_id")


def _baselines(trials: list[dict]) -> dict[tuple, list[float]]:
    """_slot -> the baseline's tok/s there."""
    out: dict[tuple, list[float]] = defaultdict(list)
    for r in trials:
        if rec.is_baseline(r):
            out[_slot(r)].append(float(r["decode_tps"]))
    return out


def pairs(trials: list[dict]) -> tuple[dict[str, list[tuple[dict, float]]], list[Unpaired]]:
    """cell_id -> [(trial, log ratio to its block's baseline)], and the trials that have none."""
    trials = [r for r in kept(trials) if rec.usable(r)]
    base = _baselines(trials)
    out: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    missing: list[Unpaired] = []
    for r in trials:
        if rec.is_baseline(r):
            continue
        key = _slot(r)
        b = base.get(key)
        if not b:
            why = ("no baseline with this reference key" if not any(k[0] == key[0] for k in base)
                   else f"no baseline trial in the same run, block and prompt ({key[2]} design)")
            missing.append(Unpaired(str(r.get("cell")), str(r.get("cell_id")), key[1], key[3], str(key[4]), why))
            out.setdefault(str(r.get("cell_id")), [])
            continue
        log_base = statistics.fmean(math.log(x) for x in b)
        out[str(r.get("cell_id"))].append((r, math.log(float(r["decode_tps"])) - log_base))
    return out, missing


def unpaired_blocks(trials: list[dict]) -> list[Unpaired]:
    """The speculative trials that have no baseline in their own (run, block, prompt)."""
    return pairs(trials)[1]


def require_paired(trials: list[dict]) -> None:
    """A one-line SpecsweepError naming the blocks whose trials cannot be paired, if any."""
    missing = unpaired_blocks(trials)
    if missing:
        where = sorted({(u.run, u.block) for u in missing})
        cells = sorted({u.cell for u in missing})
        shown = ", ".join(f"run {run} block {block}" for run, block in where[:6]) + (" ..." if len(where) > 6 else "")
        raise SpecsweepError(f"{len(missing)} trial(s) of {len(cells)} config(s) ({', '.join(cells[:3])}"
                             f"{' ...' if len(cells) > 3 else ''}) have no baseline in their own block: {shown}")


def _block_means(items: list[tuple[dict, float]]) -> dict[tuple[int, int], float]:
    by_block: dict[tuple[int, int], list[float]] = defaultdict(list)
    for r, d in items:
        by_block[(run_of(r), block_of(r))].append(d)
    return {k: statistics.fmean(v) for k, v in sorted(by_block.items())}


def paired_rows(trials: list[dict], n_boot: int = BOOTSTRAP,
                seed: int = SEED) -> tuple[list[PairedRow], list[Unpaired]]:
    """One row per speculative config (cell), in the order the records first name them."""
    trials = [r for r in kept(trials) if rec.usable(r)]
    by_pair, missing = pairs(trials)
    base_tps = _baselines(trials)
    cells: dict[str, list[dict]] = defaultdict(list)
    for r in trials:
        if not rec.is_baseline(r):
            cells[str(r.get("cell_id"))].append(r)
    labels = rec.target_labels(trials)
    n_missing = defaultdict(int)
    for u in missing:
        n_missing[u.cell_id] += 1
    rows = []
    for cid, mine in cells.items():
        first = mine[0]
        tps = [float(r["decode_tps"]) for r in mine]
        items = by_pair.get(cid, [])
        blocks = _block_means(items)
        values = list(blocks.values())
        mean_log = statistics.fmean(values) if values else None
        used_base = [x for r, _ in items for x in base_tps[_slot(r)]]
        runs = []
        for run in sorted({k[0] for k in blocks}):
            v = [x for k, x in blocks.items() if k[0] == run]
            runs.append(RunChange(run, _change(statistics.fmean(v)), len(v), _as_change(t_interval(v))))
        spread = None
        if len(runs) > 1:
            ch = [x.change for x in runs]
            spread = {"n_runs": len(ch), "stdev": statistics.stdev(ch), "min": min(ch), "max": max(ch)}
        drafted = sum(int(r.get("n_drafted") or 0) for r in mine)
        accepted = sum(int(r.get("n_accepted") or 0) for r in mine)
        restores = [float((r.get("ckpt") or {}).get("restores", 0)) / float(r["n_generated"])
                    for r in mine if isinstance(r.get("ckpt"), dict)]
        designs = {rec.design_of(r) for r in mine}
        rows.append(PairedRow(
            cell_id=cid, cell=str(first.get("cell")), method=str(first.get("method")),
            reference_key=str(first.get("reference_key")), target=labels[rec.target_key(first)],
            target_key=rec.target_key(first),
            design=designs.pop() if len(designs) == 1 else "mixed", n_kept=len(mine),
            tps_mean=statistics.fmean(tps), tps_min=min(tps), tps_max=max(tps),
            baseline_tps=statistics.fmean(used_base) if used_base else None,
            n_pairs=len(items), n_blocks=len(values), mean_log=mean_log,
            change=None if mean_log is None else _change(mean_log),
            t_interval=_as_change(t_interval(values)),
            bootstrap_interval=_as_change(bootstrap_interval(values, n_boot, seed)),
            acceptance=accepted / drafted if drafted else None, n_drafted=drafted, n_accepted=accepted,
            runs=runs if len(runs) > 1 else [], run_spread=spread, n_unpaired=n_missing[cid],
            n_throttled=sum(rec.throttled(r) for r in mine), synthetic=any(rec.synthetic(r) for r in mine),
            configured_acceptance=rec.configured_acceptance(first),
            ckpt_restores_per_token=statistics.fmean(restores) if restores else None,
            arm=f"{rec.family(first)} n={rec.draft_max(first)}", run_by=rec.run_by(first)))
    return rows, missing


@dataclass
class Versus:
    """One config against another measured in the same blocks (`versus`)."""
    change: float | None  # exp(mean over blocks of the block's mean log ratio) - 1
    t_interval: tuple[float, float] | None  # 95% t-interval over blocks, as a change
    n_blocks: int


def versus(trials: list[dict], a: str, b: str, level: float = LEVEL) -> Versus:
    """Config `a` against config `b` (cell ids), paired as each config is with its baseline: per
    (run, block, prompt) where both ran, log(tps_a / tps_b); per block the mean over its prompts;
    the change and its t-interval over blocks. With `b` the baseline this is `paired_rows`' row."""
    tps: dict[tuple[str, tuple], list[float]] = defaultdict(list)
    for r in kept(trials):
        cid = str(r.get("cell_id"))
        if cid in (a, b) and rec.usable(r):
            tps[(cid, _slot(r)[1:])].append(  # the pairing rule of a config with its baseline
                math.log(float(r["decode_tps"])))
    by_block: dict[tuple, list[float]] = defaultdict(list)
    for (cid, slot), logs in tps.items():
        if cid == a and (b, slot) in tps:
            by_block[slot[:3]].append(statistics.fmean(logs) - statistics.fmean(tps[(b, slot)]))
    values = [statistics.fmean(v) for _, v in sorted(by_block.items(), key=lambda kv: str(kv[0]))]
    if not values:
        return Versus(None, None, 0)
    return Versus(_change(statistics.fmean(values)), _as_change(t_interval(values, level)), len(values))
