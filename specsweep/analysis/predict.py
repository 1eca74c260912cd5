"""`specsweep predict`: decode speed and speed-up of a speculative config on a card, from that card's
probe and an acceptance profile, before the config (or the model) is run there.

The model. One generation of N tokens is the loop llama.cpp runs (`loopsim`: every target pass by
batch size, drafting calls, drafted tokens, checkpoint saves, restores and replays, batch-shape
changes, in expectation over the profile's acceptance draws), priced with the card's costs
(`loopcosts`, all in the probe's milliseconds):

    time = verify   sum over verify passes of T(K) + per pass + per verified token
         + draft    per pass * passes + per call * calls + per drafted token * drafted
         + rollback per save * saves + per restore * restores + per pass * passes
                    + the replay passes (checkpoint rollback decodes the accepted tokens again)
         + switch   per change of batch size (into <= 8 tokens, into more)
         + host     per pass * passes + per drafted token * drafted
    tok/s = tokens / time;  speed-up = tok/s over plain decoding's, N one-token passes at T(1)

Assumptions, each a place the prediction can be wrong:
- T(K) is the probe's, at its depth, interpolated between probed sizes (a GPU's kernel switch
  above 8 tokens respected); what the loop's own verify passes cost beyond it (per pass, per
  token) is fitted from trials on the card in the same rollback mode (snapshots slow every pass),
  else from another card's (scaled by the probes' T(1); as measured when it is the same GPU with
  the target placed otherwise, since offload moves only the target's experts), else 0 (probe only).
- Any change of batch size costs what the probe's one-token-after-two-token pass cost beyond T(1)
  (llama.cpp runs a new shape without its CUDA graph), unless the card's records change shape often
  enough to fit it; the drafter's own shape changes are part of its in-loop cost.
- The draft cost is the one measured inside the loop (records of that drafter on this card;
  else on the same GPU placed otherwise, as measured; else on another card, scaled by the two
  probes' T(1); else the probe's bare draft step, labelled:
  a hybrid draft costs several times its bare step in the loop).
- Rollback and host costs come from trials on this card (the probe's checkpoint timing where it
  has one); without either they count as 0 and the source says so.
- Acceptance: position i is accepted with the profile's conditional rate given the earlier ones,
  independently of the draft's length and from step to step (synthetic acceptance is exactly
  this; real text is burstier).
- Times of a session whose baseline ran at b x the probe's T(1) are divided by b.
- Which records: one-stream, in-process trials, in the order `pools.py` gives (the card's
  calibration of the probed file, the probed file's records, another file of the shape; the
  running engine's first); each term from the first pool that holds what it needs.
- Plain decoding: passes x (T(1) + host), the host term from this card's own baseline trials
  (else its speculative trials', else the same host placed otherwise, else 0: never another
  machine's); where the card measured the probed file's plain decoding, tok/s are given on the
  loop's clock (that measured speed, and the config at its predicted speed-up of it). The terms'
  ms per token stay on the probe's clock.

The interval is a 95% bootstrap over the probe's timed passes and the trials behind each fitted
cost (resampled within each config): measurement noise, not the model's error, which
`predict_validation` measures on the committed device matrices. The break-even acceptance is the
per-token rate a (every position accepted with probability a given the earlier ones) at which
the predicted speed-up is 1, with the config's costs; "never" when even a = 1 loses.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from specsweep import methods
from specsweep.analysis import loopcosts as lc
from specsweep.analysis import loopsim, profiles
from specsweep.analysis import pools as pl
from specsweep.analysis import records as rec
from specsweep.analysis.profiles import Profile
from specsweep.errors import SpecsweepError
from specsweep.models import placement

TERMS = ("draft", "verify", "rollback", "switch", "host")
BOOTSTRAP = 200
SEED = 20261203
LEVEL = 0.95
N_PREDICT = 512  # tokens per generation when nothing says otherwise


@dataclass
class CardData:
    """One card's probe of one target shape (and KV type and GPU count), and the trial records
    measured there with that target (the pool the loop's costs are fitted from)."""
    card: str
    shape: lc.Shape
    curve: lc.Curve
    trials: list[dict] = field(default_factory=list, repr=False)
    others: list["CardData"] = field(default_factory=list, repr=False)  # other cards, same shape
    gpu: str = ""  # the card without its placement: "NVIDIA H200" for "NVIDIA H200 [cpu-moe 20]"
    manifests: dict[int, dict] = field(default_factory=dict, repr=False)  # id(trial) -> its run's manifest
    _units: lc.UnitsCache | None = field(default=None, init=False, repr=False)
    _pools: list[pl.Pool] | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.gpu = self.gpu or self.card

    def same_gpu(self, other: "CardData") -> bool:
        """The same card with the target's weights placed otherwise. Expert offload moves the target's
        experts to the host; the drafter, the recurrent state a rollback copies and the loop's own
        per-pass work stay where they were, so their costs carry over as measured, not scaled by
        T(1) (the 35B-A3B placement matrix on one H200: the draft's ms per step and the rollback's
        ms per token agree within 10% across all-on-GPU, 20 and 40 layers' experts on the host)."""
        return self is not other and self.gpu == other.gpu

    def units(self) -> lc.UnitsCache:
        """The expected counts of every recorded config here (built once)."""
        if self._units is None:
            self._units = lc.UnitsCache(self.trials)
        return self._units

    def pools(self, exclude=None) -> list[pl.Pool]:
        """The card's records in order of preference (analysis/pools.py), without `exclude`d trials."""
        if self._pools is None:
            self._pools = pl.pools(self.trials, lambda t: self.manifests.get(id(t)), self.curve.file)
        if exclude is None:
            return self._pools
        kept = [dataclasses.replace(p, trials=[t for t in p.trials if not exclude(t)]) for p in self._pools]
        return [p for p in kept if p.trials]


def _ratio(data: CardData, other: CardData) -> tuple[float, str]:
    """How another card's loop costs carry over to this one, and the words for it."""
    if data.same_gpu(other):
        return 1.0, f"on {other.card} (the same GPU placed otherwise: as measured)"
    ratio = data.curve.t1 / other.curve.t1
    return ratio, f"on {other.card}, scaled by the probes' T(1) ratio {ratio:.2f}"


def _mtp_layer_on_host(data: CardData) -> bool:
    """The MTP head is the GGUF's layer after the trunk; llama.cpp's fit offloads it first."""
    return placement.experts_on_host(data.curve.probe.get("placement") or {}, data.shape.n_layer)


def _nearest_first(data: CardData) -> list[CardData]:
    """Other cards with this target, the same GPU under another placement first."""
    return sorted(data.others, key=lambda o: not data.same_gpu(o))


@dataclass
class Costs:
    verify: lc.Fit
    rollback: lc.Fit
    host: lc.Fit
    draft: lc.Fit
    base_host: float  # ms per plain decoding pass, host side
    switch: float
    checkpoint: bool
    base_source: str = ""  # where plain decoding's host term came from
    loop_base_tps: float | None = None  # the loop's own plain decoding measured on this card


@dataclass
class Prediction:
    card: str
    target: str  # the probed file
    shape: str
    config: str
    method: str
    n_max: int
    profile_source: str
    acceptance: float  # expected accepted / drafted
    synthetic: bool
    rollback: str
    n_predict: int
    tps: float
    tps_interval: tuple[float, float] | None
    baseline_tps: float
    speedup: float
    speedup_interval: tuple[float, float] | None
    break_even: float | None  # per-token acceptance where the speed-up is 1 (None: never)
    break_even_note: str
    ms_per_token: dict[str, float]  # by term
    dominant: str
    sources: dict[str, str]  # by term: where its cost came from
    units: dict[str, float]  # expected counts per generation
    measured: dict | None = None  # the card's own paired measurement of the config, when it has one

    @property
    def change(self) -> float:
        return self.speedup - 1.0


# --- which probe, which records ---

def _probe_rank(p: dict) -> tuple:
    s = p.get("settings") or {}
    return (s.get("outputs") == "sampled", -int(s.get("pos0") or s.get("depth") or 0), str(p.get("time") or ""))


def card_data(sources, card: str | None = None, target: str | None = None, kv: str = "q8_0",
              gpus: int | None = None) -> list[CardData]:
    """One CardData per (card, target shape, GPU count, placement) probed with this KV type (on
    `gpus` GPUs when given; 0 is the CPU); the probe chosen is the newest with the loop's settings
    (tokens picked on the device, the shallowest depth), pooled with its repeats of the same file.
    The card's trials: one stream in process (what the loop model describes). A one-line error when
    none is left."""
    from specsweep.records.sources import probe_card, trial_card

    found: dict[tuple, list[dict]] = defaultdict(list)
    for s in sources:
        for p in s.probes:
            c = (s.meta.get("card") if s.origin == "contribution" else None) or probe_card(p) or "unknown card"
            sh = lc.probe_shape(p)
            if sh is None or (card and card.lower() not in c.lower()):
                continue
            if (p.get("settings") or {}).get("kv") != kv or (gpus is not None and lc.probe_gpus(p) != gpus):
                continue
            if target and not _names_target(p, sh, target):
                continue
            found[(c, sh, lc.probe_gpus(p), rec.placement_of(p))].append(p)
    if not found:
        what = " ".join(x for x in (f"of {target}" if target else "", f"on a card named like {card!r}" if card else "")
                        if x)
        where = "" if gpus is None else (" on the CPU" if gpus == 0 else f" on {gpus} GPU(s)")
        raise SpecsweepError(f"no probe {what + ' ' if what else ''}with KV {kv}{where}: run "
                             f"`specsweep probe MODEL` (or `specsweep probe --synth NAME`) on the card first")
    out = []
    for (c, sh, n_gpus, placed), probes in sorted(found.items(),
                                                  key=lambda kv_: (kv_[0][0], str(kv_[0][1]), kv_[0][2], kv_[0][3])):
        # the newest probe with the loop's settings, pooled with its repeats (same file, same settings)
        chosen = max(probes, key=_probe_rank)
        settings, file = _probe_rank(chosen)[:2], (chosen.get("model") or {}).get("file")
        same = [p for p in probes if _probe_rank(p)[:2] == settings and (p.get("model") or {}).get("file") == file]
        # a placement other than every layer on the GPU is a card of its own: its own probe, its own records
        name = c + (f" [{placed}]" if placed else "")
        data = CardData(name, sh, lc.pooled_curve(same, name), gpu=c)
        for s in sources:
            by_id = {m.get("id"): m for m in s.manifests}
            for t in s.trials:
                tc = (s.meta.get("card") if s.origin == "contribution" else None) or trial_card(t, s.manifests)
                if tc == c and lc.trial_shape(t) == sh and (t.get("settings") or {}).get("kv") == kv \
                        and lc.trial_gpus(t) == n_gpus and rec.placement_of(t) == placed and rec.usable(t) \
                        and rec.one_stream_in_process(t):
                    data.trials.append(t)
                    data.manifests[id(t)] = by_id.get(t.get("manifest"))
        out.append(data)
    for d in out:
        d.others = [o for o in out if o is not d and o.shape == d.shape]
    return out


def _names_target(probe: dict, shape: lc.Shape, target: str) -> bool:
    """--target: a part of the probed file's name, the models.lock name a stand-in was probed for,
    or a synth card / models.lock name of its shape."""
    t = target.lower()
    if t in str((probe.get("model") or {}).get("file") or "").lower():
        return True
    if t == str((probe.get("stand_in") or {}).get("name") or "").lower():
        return True
    from specsweep.synth.stand_ins import card_of  # a shape card is plain data

    card = card_of(target)
    if card is None:
        return False
    return lc.Shape(card.arch, card.n_layer, card.n_expert, card.n_expert_used) == shape


# --- the costs of one config on one card ---

def arm_of(t: dict) -> tuple:
    return str(t.get("method")), profiles.drafter_key(t), profiles.n_max_of(t)


def _rollback_of(t: dict) -> str | None:
    return t.get("rollback") or (t.get("settings") or {}).get("rollback")


def _configs(trials: list[dict]) -> int:
    return len({t.get("cell_id") for t in trials})


def fit_costs(data: CardData, profile: Profile, rollback: str, pools: list[pl.Pool], curve: lc.Curve,
              units: lc.UnitsCache, rng: np.random.Generator | None = None) -> Costs:
    """The config's costs from the card's pools of records (resampled within each config when rng):
    each term from the first pool that holds what it needs (analysis/pools.py)."""
    if rng is not None:
        pools = [dataclasses.replace(p, trials=_resample(p.trials, rng)) for p in pools]
    checkpoint = rollback == "checkpoint" and curve.hybrid
    vp, same_mode = pl.first(pools, lambda t: not rec.is_baseline(t) and _rollback_of(t) == rollback)
    if same_mode:
        b = lc.session_scales(vp.trials, curve)
        n_cards = f"{_configs(same_mode)} config(s) on this card: {vp.label}"
        verify = lc.fit_verify(same_mode, curve, b, units, f"the probe's T(K) plus the loop's own cost per verified "
                                                         f"token ({rollback} rollback, {n_cards})")
        roll = lc.fit_rollback(same_mode, b, f"in-loop, {rollback} rollback, {n_cards}")
    else:
        verify, roll = _other_card(data, rollback, curve) or _probe_only(rollback, curve, checkpoint)
    hp, spec = pl.first(pools, lambda t: not rec.is_baseline(t))
    host_b, where = (lc.session_scales(hp.trials, curve), f"on this card: {hp.label}") if spec else (None, "")
    if not spec:  # the host's own work: Python's, the same loop on another card's host
        for other in data.others:
            op, spec = pl.first(other.pools(), lambda t: not rec.is_baseline(t))
            if spec:
                host_b, where = lc.session_scales(op.trials, other.curve), f"on {other.card}'s host"
                break
    host = lc.fit_host(spec, host_b, f"in-loop, {_configs(spec)} config(s) {where}") if spec \
        else lc.Fit({}, "unknown: no speculative trials, counted as 0")
    base_host, base_source, loop_tps = _plain_host(data, pools, curve, host if hp is not None else None)
    draft = draft_cost(data, profile, pools, curve)
    return Costs(verify, roll, host, draft, base_host, curve.switch, checkpoint, base_source, loop_tps)


def _plain_host(data: CardData, pools: list[pl.Pool], curve: lc.Curve,
                own_host: lc.Fit | None) -> tuple[float, str, float | None]:
    """Plain decoding's host term (ms per pass) and the loop's own plain decoding speed, from this
    card's baseline trials (its calibration first); without them the host per pass of this card's
    speculative trials, else of the same GPU placed otherwise (the same host machine), else 0, said
    so: never another machine's. The speed only from the probed file's own baseline (another file
    of the shape decodes at its own speed)."""
    bp, base = pl.first(pools, rec.is_baseline)
    if base:
        b = lc.session_scales(bp.trials, curve)
        steps = sum(float(t.get("n_steps") or 0) for t in base)
        if steps:
            host = sum(lc.t_ms(t, "host") / b(t) for t in base) / steps
            tps = statistics.fmean(float(t["decode_tps"]) for t in base) if bp.own_file else None
            return host, f"{len(base)} baseline trial(s) on this card: {bp.label}", tps
    if own_host is not None:
        return own_host["pass"], "this card's speculative trials' host work per pass (no baseline trials here)", None
    for other in data.others:
        if not data.same_gpu(other):
            continue
        op, theirs = pl.first(other.pools(), rec.is_baseline)
        steps = sum(float(t.get("n_steps") or 0) for t in theirs)
        if steps:
            b = lc.session_scales(op.trials, other.curve)
            return (sum(lc.t_ms(t, "host") / b(t) for t in theirs) / steps,
                    f"{len(theirs)} baseline trial(s) of the same GPU placed otherwise ({other.card}; the same host)",
                    None)
    return 0.0, "unknown: no trials on this card or its host (specsweep probe --calibrate), counted as 0", None


def _probe_only(rollback: str, curve: lc.Curve, checkpoint: bool) -> tuple[lc.Fit, lc.Fit]:
    verify = lc.Fit({"pass": 0.0, "token": 0.0, "switch_small": curve.switch, "switch_large": curve.switch},
                    f"the probe's T(K) and shape switch as they are (no trials in {rollback} rollback)")
    if checkpoint and curve.checkpoint_ms:
        roll = lc.Fit({"save": curve.checkpoint_ms[0], "restore": curve.checkpoint_ms[1]},
                      "the probe's checkpoint save and restore")
    else:
        roll = lc.Fit({}, "unknown: no trials in this rollback mode, counted as 0" if checkpoint
                      else "none (nothing to restore)")
    return verify, roll


def _other_card(data: CardData, rollback: str, curve: lc.Curve) -> tuple[lc.Fit, lc.Fit] | None:
    """The loop's verify extras and rollback costs measured on another card with the same target,
    scaled by the two probes' T(1) (as measured on the same GPU placed otherwise); the shape changes
    stay this card's probe's. The other card's records in its own order of preference."""
    for other in _nearest_first(data):
        op, mode = pl.first(other.pools(), lambda t: not rec.is_baseline(t) and _rollback_of(t) == rollback)
        if not mode:
            continue
        ratio, where = _ratio(data, other)
        b = lc.session_scales(op.trials, other.curve)
        verify = lc.fit_verify(mode, other.curve, b, other.units(),
                               f"the probe's T(K) plus the loop's own cost per verified token {where}")
        verify.coef = {"pass": verify["pass"] * ratio, "token": verify["token"] * ratio,
                       "switch_small": curve.switch, "switch_large": curve.switch}
        verify.source = verify.source.split("; shape changes")[0] + "; shape changes: this card's probe"
        roll = lc.fit_rollback(mode, b, f"in-loop {where}, {rollback} rollback")
        roll.coef = {k: v * ratio for k, v in roll.coef.items()}
        return verify, roll
    return None


def _resample(pool: list[dict], rng: np.random.Generator) -> list[dict]:
    by_cell: dict[str, list[dict]] = defaultdict(list)
    for t in pool:
        by_cell[str(t.get("cell_id"))].append(t)
    out = []
    for mine in by_cell.values():
        out.extend(mine[i] for i in rng.integers(0, len(mine), len(mine)))
    return out


def _family(profile: Profile, trials: list[dict]) -> tuple[str, list[dict]]:
    """The drafter a profile means and its trials among these."""
    mine = [t for t in trials if t.get("method") == profile.method and not rec.is_baseline(t)]
    keys = sorted({profiles.drafter_key(t) for t in mine})
    if profile.drafter:
        want = profile.drafter.lower()
        keys = [k for k in keys if want in k.lower()] or [profile.drafter]
    if len(keys) > 1:
        raise SpecsweepError(f"{profile.method}: the records hold {len(keys)} drafters ({', '.join(keys)}); name one "
                             f"as \"{profile.method}:NAME n{profile.n_max}=...\"")
    key = keys[0] if keys else profile.drafter
    return key, [t for t in mine if profiles.drafter_key(t) == key]


def draft_cost(data: CardData, profile: Profile, pools: list[pl.Pool], curve: lc.Curve) -> lc.Fit:
    key, _ = _family(profile, [t for p in pools for t in p.trials])
    who = f"{profile.method}{' · ' + key if key else ''}"

    def of(drafter: str):
        return lambda t: (t.get("method") == profile.method and not rec.is_baseline(t)
                          and profiles.drafter_key(t) == drafter)

    dp, mine = pl.first(pools, of(key))
    if mine:
        return lc.fit_draft(mine, lc.session_scales(dp.trials, curve),
                            f"in-loop, {who}, {_configs(mine)} config(s) on this card: {dp.label}")
    for other in _nearest_first(data):  # the same drafter measured on another card (see _ratio)
        theirs_key, _ = _family(Profile(profile.method, profile.n_max, profile.cond, drafter=key), other.trials)
        op, theirs = pl.first(other.pools(), of(theirs_key))
        if theirs:
            ratio, where = _ratio(data, other)
            if profile.method == "mtp" and data.same_gpu(other) and _mtp_layer_on_host(data) \
                    and not _mtp_layer_on_host(other):
                where += "; an underestimate: this placement keeps the MTP layer's experts on the host"
            fit = lc.fit_draft(theirs, lc.session_scales(op.trials, other.curve), f"in-loop {where}")
            fit.coef = {k: v * ratio for k, v in fit.coef.items()}
            return fit
    d = curve.probe.get("draft") or {}
    has_model = methods.METHODS.get(profile.method) is not None and methods.METHODS[profile.method].context == "draft"
    if has_model and d.get("source") == "measured" and (not key or _same_stem(key, str(d.get("model", "")))):
        return lc.Fit({"token": float(d["ms_per_token"])},
                      f"the probe's bare draft step of {d.get('model')} (not in-loop: a hybrid draft costs several times "
                      f"that in the loop)")
    if d.get("source") == "given":
        return lc.Fit({"token": float(d["ms_per_token"])}, "the draft cost given to the probe (--draft-ms)")
    if methods.METHODS.get(profile.method) and methods.METHODS[profile.method].context is None:
        return lc.Fit({}, "n-gram lookup: no model, counted as 0")
    raise SpecsweepError(f"no draft cost for {who} on {data.card}: no trials of it there or on another probed "
                         f"card, and the probe timed no draft (run a config of it, or probe with --draft MODEL)")


def _same_stem(key: str, model_file: str) -> bool:
    return bool(key) and model_file.lower().startswith(key.lower())


# --- pricing ---

def price(units: loopsim.Units, table: np.ndarray, costs: Costs) -> dict[str, float]:
    """ms per generation, by term."""
    v = costs.verify
    k = np.arange(len(units.verify))
    top = len(units.switch) - 1
    return {
        "verify": units.t_sum(table) + v["token"] * float(np.dot(units.verify, k))
        + v["pass"] * float(units.verify.sum()),
        "draft": costs.draft["pass"] * units.passes + costs.draft["call"] * units.calls
        + costs.draft["token"] * units.drafted,
        "rollback": costs.rollback["save"] * units.saves + costs.rollback["restore"] * units.restores
        + costs.rollback["pass"] * units.passes + units.t_sum(table, "replay")
        + v["token"] * float(np.dot(units.replay, k)) + v["pass"] * float(units.replay.sum()),
        "switch": v["switch_small"] * units.switches_into(1, lc.KERNEL_SWITCH_K)
        + v["switch_large"] * units.switches_into(lc.KERNEL_SWITCH_K + 1, top),
        "host": costs.host["pass"] * units.passes + costs.host["token"] * units.drafted,
    }


@dataclass
class _Setup:
    profile: Profile
    units: lc.UnitsCache
    n_predict: int
    loop: str
    base: loopsim.Units  # plain decoding's counts: the same for every resample and bisection step


def _evaluate(su: _Setup, curve: lc.Curve, costs: Costs, u: loopsim.Units) -> tuple[float, float, dict]:
    table = curve.table(len(u.verify) - 1)
    terms = price(u, table, costs)
    spec_ms = sum(terms.values())
    tps = u.tokens / spec_ms * 1e3
    b_ms = su.base.passes * (curve.t1 + costs.base_host)  # ms per generation of plain decoding
    return tps, su.base.tokens / b_ms * 1e3, terms


def break_even(su: _Setup, curve: lc.Curve, costs: Costs, tol: float = 1e-3) -> tuple[float | None, str]:
    """The per-token acceptance at which the predicted speed-up is 1."""
    def speedup(a: float) -> float:
        prof = su.profile.with_cond([a] * su.profile.n_max)
        u = loopsim.expected_units(prof, su.n_predict, costs.checkpoint, su.loop)
        tps, base, _ = _evaluate(su, curve, costs, u)
        return tps / base

    if speedup(1.0) <= 1.0:
        return None, "never: loses even when every draft is accepted"
    if speedup(0.0) >= 1.0:
        return 0.0, "pays even when nothing is accepted"
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if speedup(mid) < 1.0 else (lo, mid)
    return 0.5 * (lo + hi), ""


def predict_one(data: CardData, profile: Profile, n_predict: int = N_PREDICT, rollback: str | None = None,
                loop: str = "server", base_loop: str | None = None, exclude=None, n_boot: int = BOOTSTRAP,
                seed: int = SEED, with_break_even: bool = True) -> Prediction:
    """Predict one config on one card. `exclude(trial)`: records not to fit costs from (the
    validation leaves the config's own arm out)."""
    if profile.n_max < 1 or len(profile.cond) != profile.n_max:
        raise SpecsweepError(f"{profile.label}: the profile has {len(profile.cond)} positions for a draft length of "
                             f"{profile.n_max}")
    method = methods.METHODS.get(profile.method)
    rollback = rollback or (method.rollback if method else "checkpoint")
    pools = data.pools(exclude)
    # a config's expected counts depend on its own records only, and `exclude` leaves whole configs
    # out: the card's cache (built once) serves every prediction
    su = _Setup(profile, data.units(), n_predict, loop,
                loopsim.expected_units(None, n_predict, False, base_loop or loop))
    costs = fit_costs(data, profile, rollback, pools, data.curve, su.units)
    u = loopsim.expected_units(profile, n_predict, costs.checkpoint, loop)
    tps, base_tps, terms = _on_loop_clock(*_evaluate(su, data.curve, costs, u), costs)
    rng = np.random.default_rng(seed)
    boots_tps, boots_sp = [], []
    for _ in range(n_boot):
        curve = data.curve.resampled(rng)
        c = fit_costs(data, profile, rollback, pools, curve, su.units, rng)
        t, bt, _ = _on_loop_clock(*_evaluate(su, curve, c, u), c)
        boots_tps.append(t)
        boots_sp.append(t / bt)
    q = [50 * (1 - LEVEL), 50 * (1 + LEVEL)]
    tps_ci = tuple(float(x) for x in np.percentile(boots_tps, q)) if n_boot >= 20 else None
    sp_ci = tuple(float(x) for x in np.percentile(boots_sp, q)) if n_boot >= 20 else None
    be, be_note = break_even(su, data.curve, costs) if with_break_even else (None, "not computed")
    per_tok = {k: terms[k] / u.tokens for k in TERMS}
    return Prediction(
        card=data.card, target=data.curve.file, shape=str(data.shape), config=profile.label or profile.method,
        method=profile.method, n_max=profile.n_max, profile_source=profile.source, acceptance=profile.acceptance,
        synthetic=profile.synthetic, rollback=rollback if data.curve.hybrid else "seq_rm", n_predict=n_predict,
        tps=tps, tps_interval=tps_ci, baseline_tps=base_tps, speedup=tps / base_tps, speedup_interval=sp_ci,
        break_even=be, break_even_note=be_note, ms_per_token=per_tok, dominant=max(per_tok, key=per_tok.get),
        sources={"verify": costs.verify.source, "draft": costs.draft.source, "rollback": costs.rollback.source,
                 "switch": _switch_source(costs), "host": costs.host.source,
                 "baseline": _baseline_source(costs)},
        units={"passes": u.passes, "calls": u.calls, "drafted": u.drafted, "saves": u.saves,
               "restores": u.restores, "switches": u.switches, "tokens": u.tokens})


def _on_loop_clock(tps: float, base_tps: float, terms: dict, costs: Costs) -> tuple[float, float, dict]:
    """Speeds on the loop's clock where this card measured its own plain decoding: the loop's step
    is not the probe's T(1) (its own host work, another session's clocks), so plain decoding is
    what the loop measured and the config its predicted speed-up of that; else the probe's clock."""
    if not costs.loop_base_tps:
        return tps, base_tps, terms
    return costs.loop_base_tps * tps / base_tps, costs.loop_base_tps, terms


def _baseline_source(costs: Costs) -> str:
    clock = ("the loop's own plain decoding measured in them" if costs.loop_base_tps else
             "passes x (the probe's T(1) + that host term)")
    return f"host term from {costs.base_source}; tok/s: {clock}"


def _switch_source(costs: Costs) -> str:
    v = costs.verify
    return (f"{v['switch_small']:.2f} ms per change into a batch of <= {lc.KERNEL_SWITCH_K} tokens, "
            f"{v['switch_large']:.2f} ms into a larger one (probe: {costs.switch:.2f} ms)")


HOLDOUT_TIERS = ("other arms", "same arm")


def predict_held_out(data: CardData, profile: Profile, config_trials: list[dict], n_boot: int = BOOTSTRAP,
                     seed: int = SEED, n_predict: int | None = None,
                     with_break_even: bool = True) -> tuple[Prediction, str]:
    """A recorded config predicted without its own records: costs from the card's other arms (an
    arm: method, drafter, draft length), else from the other configs of its own arm; the tier used
    comes back beside the prediction."""
    how = settings_of(config_trials)
    cid = str(config_trials[0].get("cell_id"))
    arm = arm_of(config_trials[0])
    own = [t for t in data.trials if str(t.get("cell_id")) != cid and arm_of(t) == arm]
    error = None
    for tier in HOLDOUT_TIERS:
        exclude = (lambda t: arm_of(t) == arm) if tier == "other arms" else (lambda t: str(t.get("cell_id")) == cid)
        try:
            got = predict_one(data, profile, n_predict or how["n_predict"], how["rollback"], how["loop"],
                              base_loop_of(data.trials, how["loop"]), exclude, n_boot, seed, with_break_even)
        except SpecsweepError as e:
            error = e
            continue
        if tier == "other arms" and own and got.sources["draft"].startswith("the probe's"):
            continue  # its own arm measured the drafter in the loop: better than a bare step
        return got, tier
    raise error if error else SpecsweepError(f"{profile.label}: no costs to predict it from")


# --- measured beside predicted ---

def measured_rows(trials: list[dict]) -> dict[str, dict]:
    """cell id -> the paired measurement of each config in these trials."""
    from specsweep.analysis import paired

    rows, _ = paired.paired_rows(trials, n_boot=200)
    return {r.cell_id: {"change": r.change, "interval": r.t_interval, "tps": r.tps_mean, "acceptance": r.acceptance,
                     "baseline_tps": r.baseline_tps, "n_blocks": r.n_blocks}
            for r in rows if r.change is not None}


def profiles_for(sources, shape: lc.Shape, measured: bool = False) -> list[tuple[Profile, list[dict]]]:
    """Every config recorded (on any card) with this target shape, its profile pooled over cards,
    keyed by its name; with the trials it came from."""
    by_name: dict[str, list[dict]] = defaultdict(list)
    for s in sources:
        for name, trials in rec.speculative_by(s.trials, "cell").items():
            mine = [t for t in trials if lc.trial_shape(t) == shape and rec.one_stream_in_process(t)]
            if mine:
                by_name[name] += mine
    out = []
    for name, trials in by_name.items():
        p = profiles.from_trials(trials, measured)
        if p is not None:
            out.append((p, trials))
    return out


def base_loop_of(card_trials: list[dict], default: str) -> str:
    """The loop the card's baseline ran in (what a measured speed-up is against); `default` (the
    config's own loop) where the card has no baseline records."""
    return next((str(t.get("loop") or "simple") for t in card_trials if rec.is_baseline(t)), default)


def settings_of(trials: list[dict]) -> dict:
    """How a recorded config ran: its rollback mode, loop and generation length."""
    t = trials[0]
    s = t.get("settings") or {}
    return {"rollback": t.get("rollback") or s.get("rollback"), "loop": str(t.get("loop") or "simple"),
            "n_predict": int(s.get("n_predict") or N_PREDICT)}

