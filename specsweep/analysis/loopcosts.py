"""What each part of the speculative loop costs on one card: the probe's verify curve, and the loop's
own costs fitted from trial records (draft, rollback, host, and how the loop's verify passes
compare with the probe's).

- `Shape`: a target's shape (architecture, trunk layers, experts, experts per token), from a
  probe's header or a trial's `target_shape` (or, in older records, the synth card its `ref`
  names). Predictions only combine a probe with records and profiles of the same shape.
- `Curve`: the probe's T(K), one median per probed batch size, between them linear, except across
  llama.cpp's CUDA kernel switch at 8 tokens (MMVQ_MAX_BATCH_SIZE: batches above 8 leave the
  matrix-vector kernels), where a size above 8 takes the next probed size's time; `switch` is
  what a one-token pass right after a K = 2 pass costs beyond T(1), taken as the cost of any
  change of batch size.
- Fitted costs, in the probe's milliseconds. The records' times are first divided by b, their
  session's baseline step over the probe's T(1) (a session at another clock than the probe's), then
  fitted by non-negative least squares, each trial weighted by its own total: the verify passes
  beyond the probe's T(K) = per pass + per verified token + per change of batch size (into <= 8
  tokens, into more; the probe's figure unless 3 configs change shape on 20% of their passes),
  with the passes `loopsim` expects for each trial's own profile; the drafter's t_draft = per pass +
  per call + per drafted token; the target's t_rollback = per checkpoint save + per restore + per
  pass (the last from trials that saved nothing); t_host = per pass + per drafted token.

Each fitted cost carries its source, and the trials it came from (for the bootstrap).
"""

from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from specsweep.analysis import loopsim, profiles
from specsweep.analysis import records as rec
from specsweep.errors import SpecsweepError

KERNEL_SWITCH_K = 8  # llama.cpp's MMVQ_MAX_BATCH_SIZE (ggml-cuda/mmvq.cuh)


@dataclass(frozen=True)
class Shape:
    arch: str
    n_layer: int  # trunk layers (a multi-token-prediction layer not counted)
    n_expert: int
    n_expert_used: int

    def __str__(self) -> str:
        moe = f", {self.n_expert} experts top-{self.n_expert_used}" if self.n_expert else ", dense"
        return f"{self.arch}, {self.n_layer} layers{moe}"


def probe_shape(probe: dict) -> Shape | None:
    h = (probe.get("model") or {}).get("header") or {}
    if not h.get("architecture") or h.get("block_count") is None:
        return None
    return Shape(str(h["architecture"]), int(h["block_count"]) - int(h.get("nextn_predict_layers") or 0),
                 int(h.get("expert_count") or 0), int(h.get("expert_used_count") or 0))


def trial_shape(trial: dict) -> Shape | None:
    s = trial.get("target_shape")
    if isinstance(s, dict) and s.get("arch"):
        return Shape(str(s["arch"]), int(s.get("n_layer") or 0), int(s.get("n_expert") or 0),
                     int(s.get("n_expert_used") or 0))
    ref = str(((trial.get("models") or {}).get("target") or {}).get("ref") or "")
    if ref.startswith("synth "):
        from specsweep.synth.cards import CARDS  # a shape card is plain data

        card = CARDS.get(ref.split()[1])
        if card is not None:
            return Shape(card.arch, card.n_layer, card.n_expert, card.n_expert_used)
    return None


def probe_gpus(probe: dict) -> int:
    return len((probe.get("settings") or {}).get("gpus") or [])


def trial_gpus(trial: dict) -> int:
    """The GPUs a trial's target ran on; -1 for a layout a one-card probe does not describe (a
    draft model on another GPU)."""
    s = trial.get("settings") or {}
    gpus = list(s.get("gpus") or [])
    if s.get("draft_gpu") is not None and s.get("draft_gpu") not in gpus:
        return -1
    return len(gpus)


@dataclass
class Curve:
    """A probe's verify cost, ms."""
    ks: list[int]
    times: dict[int, list[float]]
    switch_times: list[float]
    gpu: bool
    hybrid: bool  # the probe rolled back with a checkpoint: a hybrid target
    card: str
    file: str
    kv: str
    probe: dict = field(repr=False, default_factory=dict)
    checkpoint_ms: tuple[float, float] | None = None  # (save, restore) if the probe timed them

    @property
    def t1(self) -> float:
        return statistics.median(self.times[1])

    @property
    def switch(self) -> float:
        """Extra cost of a pass whose batch size differs from the last pass's."""
        if not self.switch_times:
            return 0.0
        return max(statistics.median(self.switch_times) - self.t1, 0.0)

    def table(self, k_max: int) -> np.ndarray:
        """T(K) for K = 0..k_max (T(0) = 0)."""
        med = [statistics.median(self.times[k]) for k in self.ks]
        out = np.zeros(k_max + 1)
        for k in range(1, k_max + 1):
            out[k] = self._at(k, med)
        return out

    def _at(self, k: int, med: list[float]) -> float:
        ks = self.ks
        i = bisect.bisect_left(ks, k)
        if i < len(ks) and ks[i] == k:
            return med[i]
        if i == 0:
            return med[0]
        if i == len(ks):  # beyond the largest probed size: the last two points' line
            if len(ks) == 1:
                return med[0] * k / ks[0]
            k0, k1, t0, t1 = ks[-2], ks[-1], med[-2], med[-1]
            return t1 + (t1 - t0) / (k1 - k0) * (k - k1)
        k0, k1, t0, t1 = ks[i - 1], ks[i], med[i - 1], med[i]
        if self.gpu and k0 <= KERNEL_SWITCH_K < k:
            return t1
        return t0 + (t1 - t0) * (k - k0) / (k1 - k0)

    def resampled(self, rng: np.random.Generator) -> "Curve":
        times = {k: list(rng.choice(v, len(v))) for k, v in self.times.items()}
        sw = list(rng.choice(self.switch_times, len(self.switch_times))) if self.switch_times else []
        return Curve(self.ks, times, sw, self.gpu, self.hybrid, self.card, self.file, self.kv, self.probe,
                     self.checkpoint_ms)


def _usual(times: list[float]) -> list[float]:
    """A probe's timed passes of one K without the ones over twice their median: with the probe's
    single warm-up pass of earlier versions the first timed pass was llama.cpp's CUDA graph capture
    (5x T(1) on the H200), which a resampled median must not pick up."""
    med = statistics.median(times)
    return [x for x in times if x <= 2.0 * med] or times


def curve_of(probe: dict, card: str) -> Curve:
    rows = sorted(probe.get("curve") or [], key=lambda r: r["k"])
    times = {int(r["k"]): _usual([float(x) for x in (r.get("times_ms") or [r["median_ms"]])]) for r in rows}
    if 1 not in times:
        raise SpecsweepError(f"probe of {(probe.get('model') or {}).get('file')} has no T(1)")
    s = probe.get("settings") or {}
    ck = probe.get("checkpoint") or {}
    ck_ms = (float(ck["save_ms"]), float(ck["restore_ms"])) if ck.get("save_ms") is not None else None
    switch = [float(x) for x in (probe.get("switch") or {}).get("times_ms") or []]
    return Curve(sorted(times), times, _usual(switch) if switch else [],
                 bool(s.get("gpus")), s.get("rollback") == "checkpoint", card,
                 str((probe.get("model") or {}).get("file")), str(s.get("kv")), probe, ck_ms)


def pooled_curve(probes: list[dict], card: str) -> Curve:
    """One curve from repeated probes of one file, card and placement: each K's passes pooled over
    the probes (metadata and checkpoint timing from the newest). With experts on a host CPU one
    probe's T(1) can be off by 2x from the next one's minutes later (H200 host, 2026-12-02), so
    picking one probe would pick its jitter."""
    curves = sorted((curve_of(p, card) for p in probes), key=lambda c: str(c.probe.get("time") or ""))
    times: dict[int, list[float]] = {}
    for c in curves:
        for k, v in c.times.items():
            times.setdefault(k, []).extend(v)
    newest = curves[-1]
    switch = [x for c in curves for x in c.switch_times]
    return Curve(sorted(times), times, switch, newest.gpu, newest.hybrid, card, newest.file, newest.kv,
                 newest.probe, newest.checkpoint_ms)


# --- the loop's costs from records ---

@dataclass
class Fit:
    """Coefficients (ms per unit) of one cost, and where they came from."""
    coef: dict[str, float]
    source: str

    def __getitem__(self, key: str) -> float:
        return self.coef.get(key, 0.0)


def t_ms(trial: dict, part: str) -> float:
    return float((trial.get("time_s") or {}).get(part) or 0.0) * 1e3


def calls_of(trial: dict) -> float:
    pos = trial.get("drafted_by_pos") or []
    return float(pos[0]) if pos else 0.0


def checkpoint_mode(trial: dict) -> bool:
    rb = trial.get("rollback") or (trial.get("settings") or {}).get("rollback")
    shape = trial.get("target_shape") or {}
    return rb == "checkpoint" and shape.get("hybrid", True) is not False


def saves_restores(trial: dict) -> tuple[float, float]:
    ck = trial.get("ckpt")
    if isinstance(ck, dict):
        return float(ck.get("saves") or 0), float(ck.get("restores") or 0)
    if not checkpoint_mode(trial):
        return 0.0, 0.0
    return calls_of(trial), float(trial.get("n_rollbacks") or 0)


def session_scales(trials: list[dict], curve: Curve):
    """b(trial): its session's (manifest's) baseline step over the probe's T(1); 1 for a session
    without baseline trials. Dividing a session's times by it puts them on the probe's clock."""
    steps: dict[str, float] = {}
    verify: dict[str, float] = {}
    for t in trials:
        if rec.is_baseline(t) and rec.usable(t):
            m = str(t.get("manifest"))
            steps[m] = steps.get(m, 0) + float(t.get("n_steps") or 0)
            verify[m] = verify.get(m, 0.0) + t_ms(t, "verify")
    scale = {m: verify[m] / steps[m] / curve.t1 for m in steps if steps[m] > 0 and verify[m] > 0}
    return lambda t: scale.get(str(t.get("manifest")), 1.0)


def _nnls(rows: list[list[float]], ys: list[float], names: tuple[str, ...], weights=None) -> dict[str, float]:
    """Non-negative least squares, each row weighted (relative errors: a long config's times would
    otherwise outweigh a short one's)."""
    a, y = np.asarray(rows, dtype=float).reshape(-1, len(names)), np.asarray(ys, dtype=float)
    coef = dict.fromkeys(names, 0.0)
    if not len(y):
        return coef
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    keep = [j for j in range(a.shape[1]) if np.any(a[:, j])]
    if not keep:
        return coef
    x, _ = nnls(a[:, keep] * w[:, None], y * w)
    for j, v in zip(keep, x):
        coef[names[j]] = float(v)
    return coef


def _relative(totals: list[float]) -> list[float]:
    """Weights that make each trial's error relative to its own total."""
    floor = max(max(totals, default=0.0) * 1e-3, 1e-9)
    return [1.0 / max(v, floor) for v in totals]


def fit_draft(trials: list[dict], b, source: str) -> Fit:
    """t_draft = per pass + per drafting call + per drafted token."""
    rows = [[float(t.get("n_steps") or 0), calls_of(t), float(t.get("n_drafted") or 0)] for t in trials]
    ys = [t_ms(t, "draft") / b(t) for t in trials]
    coef = _nnls(rows, ys, ("pass", "call", "token"), _relative(ys))
    return Fit(coef, source)


def fit_rollback(trials: list[dict], b, source: str) -> Fit:
    """t_rollback = per checkpoint save + per restore + per pass. The per-pass part (dropping the
    tail with seq_rm) is taken from the trials that saved nothing, so that a checkpoint's cost is
    not spread over the passes of configs that save one every step."""
    plain = [t for t in trials if saves_restores(t) == (0.0, 0.0)]
    steps = sum(float(t.get("n_steps") or 0) for t in plain)
    per_pass = sum(t_ms(t, "rollback") / b(t) for t in plain) / steps if steps else 0.0
    rows, ys = [], []
    for t in trials:
        saves, restores = saves_restores(t)
        if saves or restores:
            rows.append([saves, restores])
            ys.append(t_ms(t, "rollback") / b(t) - per_pass * float(t.get("n_steps") or 0))
    coef = _nnls(rows, ys, ("save", "restore"), _relative(ys)) if rows else {"save": 0.0, "restore": 0.0}
    coef["pass"] = per_pass
    return Fit(coef, source)


def fit_host(trials: list[dict], b, source: str) -> Fit:
    rows = [[float(t.get("n_steps") or 0), float(t.get("n_drafted") or 0)] for t in trials]
    ys = [t_ms(t, "host") / b(t) for t in trials]
    coef = _nnls(rows, ys, ("pass", "token"), _relative(ys))
    return Fit(coef, source)


class UnitsCache:
    """The counts `loopsim` expects for each recorded config (its measured profile), once each."""

    def __init__(self, trials: list[dict]):
        self.profiles = profiles.by_config(trials, measured=True)
        self._units: dict[str, loopsim.Units] = {}

    def of(self, trial: dict) -> loopsim.Units:
        cid = str(trial.get("cell_id"))
        if cid not in self._units:
            s = trial.get("settings") or {}
            prof = None if rec.is_baseline(trial) else self.profiles.get(cid)
            self._units[cid] = loopsim.expected_units(prof, int(s.get("n_predict") or trial.get("n_generated") or 1),
                                                      checkpoint_mode(trial) and prof is not None,
                                                      str(trial.get("loop") or "simple"))
        return self._units[cid]


# a class of shape changes is fitted (not the probe's figure) only where at least MIN_CONFIGS configs
# change shape on MIN_SHARE of their passes: the one or two changes at the end of every generation
# would otherwise soak up whatever else the loop costs per trial
MIN_SHARE, MIN_CONFIGS = 0.2, 3


def fit_verify(trials: list[dict], curve: Curve, b, units: UnitsCache, source: str) -> Fit:
    """The loop's verify passes beyond the probe's T(K): per pass, per verified token, and per change
    of batch size into a pass of at most 8 tokens and into a larger one (the probe's shape switch
    for a class the trials hardly hold). Fitted on verify - sum of T(K), each trial weighted by its
    own verify time."""
    names = ("pass", "token", "switch_small", "switch_large")
    cols, ys, totals = [], [], []
    table: np.ndarray | None = None
    busy: dict[int, set] = {2: set(), 3: set()}  # configs that change shape often, per class
    for t in trials:
        u = units.of(t)
        if table is None or len(table) < len(u.verify):
            table = curve.table(max(len(u.verify) - 1, 1))
        scale = float(t.get("n_steps") or 0) / u.passes if u.passes else 1.0  # the trial's own length
        t_sum = u.t_sum(table) + u.t_sum(table, "replay")
        total = t_ms(t, "verify") / b(t)
        totals.append(total)
        ys.append(total - t_sum * scale)
        top = len(u.switch) - 1
        cols.append([u.passes * scale, u.tokens_verified() * scale, u.switches_into(1, KERNEL_SWITCH_K) * scale,
                     u.switches_into(KERNEL_SWITCH_K + 1, top) * scale])
        for j in (2, 3):
            if u.passes and cols[-1][j] / (u.passes * scale) >= MIN_SHARE:
                busy[j].add(t.get("cell_id"))
    a, y = np.asarray(cols, dtype=float).reshape(-1, len(names)), np.asarray(ys, dtype=float)
    coef = {"pass": 0.0, "token": 0.0, "switch_small": curve.switch, "switch_large": curve.switch}
    fitted = [0, 1]
    for j in (2, 3):
        if len(busy[j]) >= MIN_CONFIGS:
            fitted.append(j)
        else:  # too few such changes in the records: the probe's figure
            y = y - a[:, j] * coef[names[j]]
    got = _nnls(a[:, fitted].tolist(), y.tolist(), tuple(names[j] for j in fitted), _relative(totals))
    coef.update(got)
    probe_for = [names[j].split("_")[1] for j in (2, 3) if j not in fitted]
    note = "; shape changes: " + ("fitted" if not probe_for else f"the probe's for {' and '.join(probe_for)} batches")
    return Fit(coef, source + note)
