"""The MoE expert-saturation test: does time per token bend where expert coverage saturates?

The hypothesis: verifying K tokens reads the union of their experts, so cost should change course
where that union covers (nearly) all experts. Each trial gets its routed-expert coverage per verify
pass, averaged over the verify passes that carried a draft: measured, when the trial was traced
(`trace_experts`: the distinct experts each layer's router chose for that very batch, over E,
averaged over layers; records/expert_union.py), else expected, c(K) = 1 - (1 - k/E)^K for
K = drafted + 1 tokens (`theory.expected_union` / E: uniform, independent routing, the
hypothesis' own model and the reference a traced union is set against). The draft length of each comes from the record: `drafted_by_pos[i]` counts the
drafts that reached position i, so `drafted_by_pos[j-1] - drafted_by_pos[j]` drafted exactly j
tokens. Steps without a draft (nothing to draft, the last tokens of a trial, a checkpoint's replay
of accepted tokens) are left out: they are not the verify the hypothesis is about, and a drafter
that rolls back through checkpoints would otherwise look as if its verifies read half the experts
they do. (The audit this test follows used the configured draft length; drafts cut short by the
tokens left to generate are counted at their real length here.)

On a family's line y = a + b x (cost model), the test is
- the residuals against coverage (Spearman's rho; mean residual past and before 95%);
- a hinge y = a + b x + d max(0, x - x95), x95 the draft rate that best separates the trials past
  95% coverage from those before it, against the straight line: an F-test with 1 and n - 3
  degrees of freedom (the breakpoint is fixed by the hypothesis, not fitted);
- the same hinge at every breakpoint of a grid, its largest F judged against a residual bootstrap
  of the straight line (the search would find a "knee" in pure noise otherwise).

A dense target has no experts: it gets the same hinge where a MoE's coverage would cross 95%
(the routing of a MoE target among the same records, else 256 experts top-8) as a control, since
anything that bends there on a dense model is not expert saturation.

Trials are treated as independent points; the p-values are for that model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from specsweep.analysis import records as rec
from specsweep.probe import theory
from specsweep.records import expert_union

FRACTION = theory.SATURATION_FRACTION
MIN_LEVELS = 4  # distinct draft lengths needed to tell a bend from a line
ALPHA = 0.05
SEARCH_BOOT = 999
REFERENCE_ROUTING = (256, 8)  # the 35B-A3B's: what a dense control is tested against when no MoE is at hand


@dataclass
class Routing:
    n_expert: int
    n_used: int
    source: str  # where the numbers came from

    @property
    def moe(self) -> bool:
        return self.n_expert > 0 and self.n_used > 0


@dataclass
class Hinge:
    breakpoint: float
    slope_before: float
    slope_after: float
    change: float  # d: slope after - slope before
    change_ci: tuple[float, float]
    f: float
    p: float
    n: int


@dataclass
class KneeTest:
    role: str  # "moe", "control" (dense target) or "untested"
    status: str  # "tested", "not enough draft lengths", "no routing", "no line", "no crossing"
    verdict: str
    routing: Routing | None = None
    saturation_tokens: int | None = None  # verify length K whose expected coverage reaches 95%
    breakpoint_x: float | None = None
    n_misplaced: int = 0  # trials on the wrong side of breakpoint_x for their coverage
    at_saturation: Hinge | None = None
    search: dict | None = None  # {x, coverage, f, p, n_grid, n_boot}
    residuals: dict | None = None  # {rho, p, mean_past, mean_before, n_past, n_before}
    points: list[dict] = field(default_factory=list)  # {x, y, coverage, residual, cell}
    coverage_source: str = "i.i.d. formula"  # or "traced": each verify's measured union
    n_verifies: int | None = None  # traced: verifies that carried a draft, over the family's trials
    n_verifies_past: int | None = None  # ... whose measured coverage reached FRACTION


# --- coverage per trial ---

def verify_lengths(r: dict, drafts_only: bool = False) -> dict[float, int]:
    """Verify length K -> number of the trial's verify steps of that length (`drafts_only`: only
    the steps that verified a draft)."""
    pos = [int(v) for v in (r.get("drafted_by_pos") or [])]
    n_steps = int(r.get("n_steps") or 0)
    drafted = int(r.get("n_drafted") or 0)
    counts: dict[float, int] = {}
    if pos:
        for j in range(1, len(pos) + 1):
            c = pos[j - 1] - (pos[j] if j < len(pos) else 0)
            if c > 0:
                counts[float(j + 1)] = counts.get(float(j + 1), 0) + c
        plain = n_steps - pos[0]
    elif drafted and n_steps:  # no per-position counts: every step at the mean draft length
        counts[1.0 + drafted / n_steps] = n_steps
        plain = 0
    else:
        plain = n_steps or int(r.get("n_generated") or 0)
    if plain > 0 and not (drafts_only and counts):
        counts[1.0] = counts.get(1.0, 0) + plain
    return counts


def mean_coverage(r: dict, n_expert: int, n_used: int) -> float:
    """Expected share of routed experts one verify pass of a draft in this trial reads."""
    counts = verify_lengths(r, drafts_only=True)
    total = sum(counts.values())
    if not total or n_expert <= 0:
        return 0.0
    return sum(n * theory.expected_union(n_expert, n_used, k) for k, n in counts.items()) / (total * n_expert)


def traced_coverage(r: dict, n_expert: int = 0, n_used: int = 0) -> float:
    """The measured share of routed experts one verify of a draft in this trial read (the traced
    union over E, averaged over layers and over the trial's verifies)."""
    t = expert_union.read(r)
    v = t.select("v") if t is not None else []
    return float(t.coverage[v].mean()) if len(v) else 0.0


def configured_coverage(r: dict, n_expert: int, n_used: int) -> float:
    """The coverage of a full draft at the cell's draft limit, K = draft_max + 1: how the published
    audit counted it (it ignores drafts cut short by the tokens left to generate)."""
    n = rec.draft_max(r) or 0
    return theory.expected_union(n_expert, n_used, n + 1) / n_expert if n_expert > 0 else 0.0


def routing_for(trials: list[dict], probes: list[dict]) -> Routing | None:
    """n_expert and n_expert_used of these trials' target: its `target_shape`, else a probe record of
    the same model (same sha256 where the probe has one, else the same file name)."""
    for r in trials:
        shape = r.get("target_shape")
        if isinstance(shape, dict) and shape.get("n_expert") is not None:
            return Routing(int(shape.get("n_expert") or 0), int(shape.get("n_expert_used") or 0), "target_shape")
    target = (trials[0].get("models") or {}).get("target") or {} if trials else {}
    sha, file = target.get("sha256"), target.get("file")
    for how in ("sha256", "file"):
        for p in probes:
            m = p.get("model") or {}
            if how == "sha256" and sha and m.get("sha256") == sha or how == "file" and file and m.get("file") == file:
                if m.get("n_expert") is None:
                    continue
                return Routing(int(m.get("n_expert") or 0), int(m.get("n_expert_used") or 0),
                               f"probe record of {m.get('file')} (same {how})")
    return None


# --- the hinge ---

def _design(x: np.ndarray, c: float | None) -> np.ndarray:
    cols = [np.ones_like(x), x] + ([] if c is None else [np.maximum(x - c, 0.0)])
    return np.column_stack(cols)


def hinge_at(x, y, c: float) -> Hinge:
    """The straight line against a line that changes slope at x = c: F(1, n - 3)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    X0, X1 = _design(x, None), _design(x, c)
    b0, *_ = np.linalg.lstsq(X0, y, rcond=None)
    b1, *_ = np.linalg.lstsq(X1, y, rcond=None)
    rss0 = float(np.sum((y - X0 @ b0) ** 2))
    rss1 = float(np.sum((y - X1 @ b1) ** 2))
    dof = n - 3
    s2 = rss1 / dof if dof > 0 else float("nan")
    cov = s2 * np.linalg.pinv(X1.T @ X1)
    se = float(np.sqrt(max(cov[2, 2], 0.0)))
    q = float(stats.t.ppf(0.975, dof)) if dof > 0 else float("nan")
    f = _f(rss0, rss1, dof)
    p = float(stats.f.sf(f, 1, dof)) if dof > 0 and np.isfinite(f) else (0.0 if f == np.inf else float("nan"))
    return Hinge(float(c), float(b1[1]), float(b1[1] + b1[2]), float(b1[2]),
                 (float(b1[2] - q * se), float(b1[2] + q * se)), float(f), p, n)


def _f(rss0: float, rss1: float, dof: int) -> float:
    if dof <= 0:
        return float("nan")
    if rss1 <= 1e-12 * max(rss0, 1e-300):
        return float("inf") if rss0 > 1e-300 else 0.0
    return max(rss0 - rss1, 0.0) / (rss1 / dof)


def _rss_columns(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Residual sum of squares of every column of Y regressed on X (through an orthonormal basis)."""
    Q, _ = np.linalg.qr(X)
    return np.sum(Y * Y, axis=0) - np.sum((Q.T @ Y) ** 2, axis=0)


def _grid(x: np.ndarray, lengths: np.ndarray) -> list[float]:
    """Candidate breakpoints: x quantiles 5%..95% with at least two draft lengths on either side."""
    out = []
    for c in np.unique(np.quantile(x, np.linspace(0.05, 0.95, 19))):
        if len(np.unique(lengths[x <= c])) >= 2 and len(np.unique(lengths[x > c])) >= 2:
            out.append(float(c))
    return out


def search(x, y, lengths, n_boot: int = SEARCH_BOOT, seed: int = 0) -> dict | None:
    """The breakpoint with the largest F over a grid, its p-value from a residual bootstrap of the
    straight line (the sup-F statistic's own null distribution)."""
    x, y, lengths = np.asarray(x, float), np.asarray(y, float), np.asarray(lengths)
    grid = _grid(x, lengths)
    n = len(x)
    if not grid or n < 5:
        return None
    X0 = _design(x, None)
    b0, *_ = np.linalg.lstsq(X0, y, rcond=None)
    fitted, resid = X0 @ b0, (y - X0 @ b0) * np.sqrt(n / (n - 2))  # fitted residuals run small by (n-2)/n
    rng = np.random.default_rng(seed)
    Y = np.column_stack([y, fitted[:, None] + resid[rng.integers(0, n, size=(n, n_boot))]])
    rss0 = _rss_columns(X0, Y)
    best = np.full(Y.shape[1], -np.inf)
    arg = 0
    for i, c in enumerate(grid):
        rss1 = np.maximum(_rss_columns(_design(x, c), Y), 1e-300)
        f = np.maximum(rss0 - rss1, 0.0) / (rss1 / (n - 3))
        if f[0] > best[0]:
            arg = i
        best = np.maximum(best, f)
    p = (1 + int(np.sum(best[1:] >= best[0] - 1e-12))) / (n_boot + 1)
    return {"x": grid[arg], "f": float(best[0]), "p": float(p), "n_grid": len(grid), "n_boot": n_boot}


def crossing_x(x, coverage, fraction: float = FRACTION) -> tuple[float | None, int]:
    """The draft rate that best separates trials past `fraction` coverage from those before it
    (fewest on the wrong side; the middle of a tie), and how many are on the wrong side."""
    x, cov = np.asarray(x, float), np.asarray(coverage, float)
    past = cov >= fraction
    if past.all() or not past.any():
        return None, 0
    ux = np.unique(x)
    cuts = (ux[:-1] + ux[1:]) / 2
    wrong = np.array([int(np.sum((x <= c) & past) + np.sum((x > c) & ~past)) for c in cuts])
    best = np.flatnonzero(wrong == wrong.min())
    return float(cuts[best[len(best) // 2]]), int(wrong.min())


# --- the test of one family's line ---

def knee_test(fam, routing: Routing | None, reference: Routing | None = None, seed: int = 0,
              n_boot: int = SEARCH_BOOT, configured: bool = False, traced: bool = False) -> KneeTest:
    """The coverage test of one `costmodel.FamilyFit` (its trials and line); `configured`: with each
    trial's coverage at its configured draft length, as the audit counted it, instead of its drafts';
    `traced`: with each trial's measured coverage (every trial of the family must be traced)."""
    trials = fam.trials
    if routing is None:
        return KneeTest("untested", "no routing",
                        f"coverage test skipped: the records of {fam.target} carry no target_shape and no probe "
                        f"record of it was given (run `specsweep probe` on it and pass results/probe)")
    role = "moe" if routing.moe else "control"
    use = routing if routing.moe else (reference or Routing(*REFERENCE_ROUTING, "the 35B-A3B's routing"))
    x = np.array([rec.draft_per_token(r) for r in trials])
    y = np.array([rec.ms_per_token(r) for r in trials])
    of = traced_coverage if traced else configured_coverage if configured else mean_coverage
    cov = np.array([of(r, use.n_expert, use.n_used) for r in trials])
    lengths = np.array([rec.draft_max(r) or 0 for r in trials])
    k95 = theory.saturation_tokens(use.n_expert, use.n_used)
    prefix = ("" if role == "moe" else
              f"control (dense target, no experts; tested where {use.n_expert} experts top-{use.n_used} would "
              f"saturate): ")
    if traced:
        prefix += "measured union: "
    test = KneeTest(role, "tested", "", routing, k95)
    if traced:
        test.coverage_source = "traced"
        unions = [expert_union.read(r) for r in trials]
        covs = [t.coverage[t.select("v")] for t in unions]
        test.n_verifies = int(sum(len(c) for c in covs))
        test.n_verifies_past = int(sum(np.sum(c >= FRACTION) for c in covs))
    if fam.fit is None:
        test.status, test.verdict = "no line", prefix + f"no line to test ({fam.note})"
        return test
    resid = y - (fam.fit.intercept + fam.fit.slope * x)
    test.points = [{"x": float(a), "y": float(b), "coverage": float(c), "residual": float(e),
                    "cell": str(r.get("cell"))} for a, b, c, e, r in zip(x, y, cov, resid, trials)]
    past = cov >= FRACTION
    rho, rho_p = stats.spearmanr(cov, resid) if np.ptp(cov) > 0 and np.ptp(resid) > 0 else (None, None)
    test.residuals = {"rho": None if rho is None else float(rho), "p": None if rho_p is None else float(rho_p),
                      "mean_past": float(resid[past].mean()) if past.any() else None,
                      "mean_before": float(resid[~past].mean()) if (~past).any() else None,
                      "n_past": int(past.sum()), "n_before": int((~past).sum())}
    if fam.n_levels < MIN_LEVELS:
        test.status = "not enough draft lengths"
        test.verdict = prefix + (f"not enough draft lengths to test ({fam.n_levels}; {MIN_LEVELS} needed); "
                                 f"coverage spans {cov.min():.0%}-{cov.max():.0%}")
        return test
    found = search(x, y, lengths, n_boot=n_boot, seed=seed)
    if found:
        order = np.argsort(x)
        found["coverage"] = float(np.interp(found["x"], x[order], cov[order]))
    test.search = found
    where = ("" if not found else
             f"; the best breakpoint anywhere, x = {found['x']:.2f} (coverage about {found['coverage']:.0%}), "
             f"p = {found['p']:.2g} after the search")
    xc, wrong = crossing_x(x, cov)
    if xc is None:
        test.status = "no crossing"
        side = "below" if not past.any() else "past"
        need = ("; " + _traced_count(test)) if traced else f"; a verify needs {k95} tokens"
        test.verdict = prefix + (f"cannot test at saturation: every trial is {side} {FRACTION:.0%} coverage "
                                 f"(coverage {cov.min():.0%}-{cov.max():.0%}{need})" + where)
        return test
    test.breakpoint_x, test.n_misplaced = xc, wrong
    if len(np.unique(lengths[x <= xc])) < 2 or len(np.unique(lengths[x > xc])) < 2:
        test.status = "no crossing"
        test.verdict = prefix + (f"cannot test at saturation: fewer than two draft lengths on one side of "
                                 f"x = {xc:.2f}, where coverage crosses {FRACTION:.0%}" + where)
        return test
    h = hinge_at(x, y, xc)
    test.at_saturation = h
    if traced:
        where += f"; {_traced_count(test)}"
    if h.p < ALPHA:
        way = "steeper" if h.change > 0 else "flatter"
        test.verdict = prefix + (f"knee at coverage {FRACTION:.0%} (x = {xc:.2f}): slope {h.slope_before:.3f} -> "
                                 f"{h.slope_after:.3f} ms per draft token ({way}), p = {h.p:.2g}" + where)
    else:
        test.verdict = prefix + (f"no knee: one line fits (R^2 {fam.fit.r2:.3f}); at coverage {FRACTION:.0%} "
                                 f"(x = {xc:.2f}) the slope goes {h.slope_before:.3f} -> {h.slope_after:.3f} ms "
                                 f"per draft token, p = {h.p:.2g}" + where)
    return test


def _traced_count(test: KneeTest) -> str:
    return f"{test.n_verifies_past} of {test.n_verifies} traced verifies reached {FRACTION:.0%}"
