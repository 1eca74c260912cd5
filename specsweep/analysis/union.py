"""The expert union as traced (`trace_experts`), against the i.i.d. formula it replaces.

A traced trial's record holds, for every target pass of its loop, the distinct experts each MoE
layer read (records/expert_union.py). From it:
- a trial's measured coverage: the share of a layer's experts its verifies read, averaged over
  layers and over the passes that verified a draft, and how many of those passes reached 95%;
- U(K): the measured union by verify length K over a set of trials, beside the i.i.d. formula
  E (1 - (1 - k/E)^K) at K tokens and at the pass's distinct tokens (a token repeated within a
  batch routes the same way, so the formula at K overstates the union of repetitive text);
- the pass test: each traced pass's time (the timed loop's decode and sync of that very batch)
  against its length K, and whether it bends at the K where the measured union reaches 95%: a
  hinge at that K against one line, F(1, n - 3), with passes as independent points (passes of one
  trial share the GPU's state, so the p-value is optimistic; the verdict says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specsweep.analysis import coverage
from specsweep.probe import theory
from specsweep.records import expert_union

FRACTION = theory.SATURATION_FRACTION
TIMED_KINDS = "vp"  # verifies and plain steps: one decode of K tokens from the loop's own state


@dataclass
class TrialCoverage:
    mean: float  # measured coverage averaged over the trial's verifies
    n_verifies: int
    n_past: int  # verifies whose measured coverage reached FRACTION
    mismatches: int  # replayed outputs that differed from the timed trial's


def traced(trials: list[dict]) -> list[tuple[dict, expert_union.TracedUnion]]:
    return [(r, t) for r in trials if (t := expert_union.read(r)) is not None]


def trial_coverage(r: dict) -> TrialCoverage | None:
    t = expert_union.read(r)
    if t is None:
        return None
    v = t.select("v")
    cov = t.coverage[v]
    return TrialCoverage(float(cov.mean()) if len(v) else 0.0, len(v), int(np.sum(cov >= FRACTION)), t.mismatches)


@dataclass
class UnionRow:
    k: int  # tokens in the pass
    n_passes: int
    coverage: float  # measured union / E, mean over passes and layers
    coverage_sd: float  # over passes (each pass's mean over layers)
    layer_min: float  # the least and most covered layer, mean over passes
    layer_max: float
    iid: float  # the formula's coverage at K tokens
    iid_distinct: float  # ... at each pass's distinct tokens, averaged
    expert_mb: float  # routed-expert MB read, mean over passes
    verify_ms: float | None  # median time of these passes in the timed loop


def union_by_k(trials: list[dict], kinds: str = "v") -> list[UnionRow]:
    """Measured coverage by pass length over the traced trials given (one target's)."""
    by_k: dict[int, list] = {}
    for _, t in traced(trials):
        for i in t.select(kinds):
            by_k.setdefault(int(t.n_tokens[i]), []).append((t, i))
    rows = []
    for k, items in sorted(by_k.items()):
        e, used = items[0][0].n_expert, items[0][0].n_used
        cov = np.array([t.coverage[i] for t, i in items])
        per_layer = np.array([t.unions[i] / t.n_expert for t, i in items])
        times = [t.verify_ms[i] for t, i in items if t.verify_ms is not None]
        rows.append(UnionRow(
            k, len(items), float(cov.mean()), float(cov.std(ddof=1)) if len(cov) > 1 else 0.0,
            float(per_layer.mean(axis=0).min()), float(per_layer.mean(axis=0).max()),
            theory.expected_union(e, used, k) / e,
            float(np.mean([theory.expected_union(e, used, int(t.n_distinct[i])) / e for t, i in items])),
            float(np.mean([t.bytes_read[i] for t, i in items])) / 1e6,
            float(np.median(times)) if times else None))
    return rows


def saturation_k(rows: list[UnionRow], fraction: float = FRACTION) -> int | None:
    """The first traced pass length whose mean measured coverage reaches `fraction`."""
    return next((r.k for r in rows if r.coverage >= fraction), None)


@dataclass
class PassTest:
    n_passes: int
    n_trials: int
    k_range: tuple[int, int]
    k_saturation: int | None  # measured; None: no pass length reached 95%
    k_saturation_iid: int  # where the formula puts it
    max_coverage: float  # the highest mean measured coverage of any pass length
    hinge: coverage.Hinge | None  # time per pass against K, bending at k_saturation
    ms_per_token: float | None  # one line's slope: ms per verified token
    ms_per_gb: float | None  # time against routed-expert bytes read: ms per GB
    r2_bytes: float | None
    verdict: str


def pass_test(trials: list[dict]) -> PassTest | None:
    """Each traced pass's timed duration against its length: does it bend where the measured union
    saturates? None when no trial carries pass times."""
    pts = [(int(t.n_tokens[i]), float(t.verify_ms[i]), float(t.bytes_read[i]))
           for _, t in traced(trials) if t.verify_ms is not None for i in t.select(TIMED_KINDS)]
    if len(pts) < 5:
        return None
    first = traced(trials)[0][1]
    k, ms, gb = (np.array(c, dtype=float) for c in zip(*pts))
    gb = gb / 1e9
    rows = union_by_k(trials, TIMED_KINDS)
    k95 = saturation_k(rows)
    k95_iid = theory.saturation_tokens(first.n_expert, first.n_used)
    top = max(rows, key=lambda r: r.coverage)
    slope = float(np.polyfit(k, ms, 1)[0]) if np.ptp(k) > 0 else None
    ms_per_gb = r2 = None
    if np.ptp(gb) > 0:
        b, a = np.polyfit(gb, ms, 1)
        pred = a + b * gb
        ms_per_gb = float(b)
        r2 = float(1 - np.sum((ms - pred) ** 2) / np.sum((ms - ms.mean()) ** 2)) if np.ptp(ms) > 0 else None
    test = PassTest(len(k), len(traced(trials)), (int(k.min()), int(k.max())), k95, k95_iid, top.coverage,
                    None, slope, ms_per_gb, r2, "")
    if k95 is None:
        test.verdict = (f"no traced pass length reached {FRACTION:.0%} of the experts (at most {top.coverage:.0%}, "
                        f"K = {top.k}; the i.i.d. formula puts {FRACTION:.0%} at K = {k95_iid}): nothing saturates "
                        f"within these drafts")
        return test
    if np.sum(k < k95) < 3 or np.sum(k >= k95) < 3 or len(np.unique(k[k < k95])) < 2 or len(np.unique(k[k >= k95])) < 2:
        test.verdict = (f"the measured union reaches {FRACTION:.0%} at K = {k95} (formula: {k95_iid}), but fewer "
                        f"than two pass lengths lie on one side of it: no test")
        return test
    h = coverage.hinge_at(k, ms, k95 - 0.5)
    test.hinge = h
    way = "flatter" if h.change < 0 else "steeper"
    test.verdict = (f"the measured union reaches {FRACTION:.0%} at K = {k95} (formula: {k95_iid}); a pass's time "
                    f"goes {h.slope_before:.4f} -> {h.slope_after:.4f} ms per token there ({way}, change "
                    f"{h.change:+.4f} [{h.change_ci[0]:+.4f}, {h.change_ci[1]:+.4f}], p = {h.p:.2g}; {len(k)} passes "
                    f"of {test.n_trials} trials taken as independent)")
    return test


# --- the knee on a traced probe: T(K) of batches whose union was traced ---

K_LINE = 16  # the probe's batches from here on: past the small-batch kernels (the H100 probe's T(K) jumps
             # by 60% between K = 8 and 10, llama.cpp's switch of MoE kernels), so one line can hold


@dataclass
class ProbeKnee:
    file: str
    batch_tokens: str  # what the batches held (probe --batch-tokens)
    device: str
    k_range: tuple[int, int]
    k_saturation: int | None  # the first probed K whose traced coverage reached FRACTION
    max_coverage: float
    hinge: coverage.Hinge | None  # every timed pass (reps) of K >= K_LINE, bending at k_saturation
    bytes_per_token: tuple[float, float] | None  # routed-expert MB per added token, before and after
    verdict: str


def probe_knee(probe: dict) -> ProbeKnee | None:
    """Does T(K) bend where the traced union of the batch reaches 95%? None for an untraced probe.
    The interval holds the rep-to-rep timing noise of one load on one device, nothing else."""
    rows = [r for r in probe.get("curve", []) if "traced" in r]
    if not rows:
        return None
    rows.sort(key=lambda r: r["k"])
    k95 = next((r["k"] for r in rows if r["traced"]["coverage"] >= FRACTION), None)
    top = max(rows, key=lambda r: r["traced"]["coverage"])
    line = [r for r in rows if r["k"] >= K_LINE]
    device = (probe.get("machine") or {}).get("gpu_name") or "CPU"
    test = ProbeKnee(probe["model"]["file"], probe["settings"].get("batch_tokens", "text"), device,
                     (rows[0]["k"], rows[-1]["k"]), k95, top["traced"]["coverage"], None, None, "")
    what = f"batches of {test.batch_tokens} tokens"
    if k95 is None:
        test.verdict = (f"{what}: no probed K reached {FRACTION:.0%} of the experts (at most "
                        f"{top['traced']['coverage']:.1%}, K = {top['k']}): nothing saturates up to K = {rows[-1]['k']}")
        return test
    before = sorted({r["k"] for r in line if r["k"] < k95})
    after = sorted({r["k"] for r in line if r["k"] >= k95})
    if len(before) < 2 or len(after) < 2:
        test.verdict = (f"{what}: the traced union reaches {FRACTION:.0%} at K = {k95}, but fewer than two probed K "
                        f"from {K_LINE} on lie on one side of it: no test")
        return test
    k = np.array([r["k"] for r in line for _ in r["times_ms"]], dtype=float)
    ms = np.array([t for r in line for t in r["times_ms"]], dtype=float)
    test.hinge = h = coverage.hinge_at(k, ms, k95 - 0.5)

    traced_bytes = {r["k"]: r["traced"]["bytes"] for r in line}

    def mb_per_token(k0: int, k1: int) -> float:
        return (traced_bytes[k1] - traced_bytes[k0]) / (k1 - k0) / 1e6

    test.bytes_per_token = (mb_per_token(before[0], after[0]), mb_per_token(after[0], after[-1]))
    way = "flatter" if h.change < 0 else "steeper"
    test.verdict = (f"{what}: the traced union reaches {FRACTION:.0%} at K = {k95}; from K = {K_LINE} a pass costs "
                    f"{h.slope_before:.3f} -> {h.slope_after:.3f} ms per added token there ({way}: change "
                    f"{h.change:+.3f} [{h.change_ci[0]:+.3f}, {h.change_ci[1]:+.3f}] ms, {h.change / h.slope_before:+.0%} "
                    f"of the slope, p = {h.p:.2g}; {h.n} timed passes, the interval holds their noise only), while the "
                    f"expert bytes a token adds fall {test.bytes_per_token[0]:.1f} -> {test.bytes_per_token[1]:.1f} MB")
    return test
