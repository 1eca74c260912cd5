"""How well `predict` does on the committed device matrices: every config of every matrix that has a
probe of its target on its card and layout, predicted from that probe and the config's acceptance,
against its paired measurement.

What a prediction may use, so that it predicts rather than restates: the probe; the config's
acceptance (the configured rates of synthetic acceptance, else its per-position counts and, for an
n-gram method, how often and how long it drafted); and the loop's costs fitted from the matrix's
*other arms* (an arm: the method, its drafter and its draft length), so that neither the config
nor another acceptance level of the same arm enters its own costs. An arm that is its drafter's
only one on the card falls back to the other configs of its arm (labelled "same arm"), then to the
probe's bare draft step; one with none of these is left out and named.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from specsweep.analysis import predict as pr
from specsweep.analysis import profiles
from specsweep.analysis import records as rec
from specsweep.errors import SpecsweepError

MATRICES = ("a3b-synthetic", "active-contrast-synthetic", "cost-model-synthetic", "dense27-synthetic",
            "methods-synthetic")
LEFT_OUT = {"a3b-synthetic-2gpu": "two GPUs: every committed probe ran on one GPU, none of its layouts was probed"}
THRESHOLD = 0.03  # the goal's sign test counts cells whose measured change is beyond +-3%


@dataclass
class Cell:
    matrix: str
    card: str
    target: str
    config: str
    method: str
    n_max: int
    rollback: str
    synthetic: bool
    acceptance: float | None  # measured accepted / drafted
    profile_acceptance: float  # what the profile predicted from expects (configured, for synthetic acceptance)
    measured: float  # paired change
    measured_interval: tuple[float, float] | None
    predicted: float  # predicted change
    predicted_interval: tuple[float, float] | None
    error: float  # predicted - measured, in speed-up points (x100)
    sign_ok: bool | None  # None: measured within +-3%
    dominant: str
    costs: str  # "other arms", "same arm", "bare draft step"
    draft_source: str
    predicted_ms: dict  # per generated token, by term
    measured_ms: dict  # per generated token: draft, verify (with shape changes), rollback, host
    n_trials: int = 0
    baseline: dict | None = None  # plain decoding: predicted and measured tok/s (held-out sets)


def validate_matrix(name: str, sources, n_boot: int, measured_profiles: bool = False) -> tuple[list[Cell], list[str]]:
    """Every config of one matrix's records that a probe covers, predicted; and what was left out."""
    trial_sources = [s for s in sources if s.trials]
    trials = [t for s in trial_sources for t in s.trials]
    measured = pr.measured_rows(trials)
    datas = {}
    for d in pr.card_data(sources):
        datas[(d.card, d.shape)] = d
    cells, skipped = [], []
    for cid, mine in rec.speculative_by(trials).items():
        cell = str(mine[0].get("cell"))
        if cid not in measured:
            skipped.append(f"{cell}: no paired baseline")
            continue
        data = next((d for d in datas.values() if any(t is x for x in d.trials for t in mine[:1])), None)
        if data is None:
            skipped.append(f"{cell}: no probe of its target on its card and layout")
            continue
        prof = profiles.from_trials(mine, measured_profiles)
        if prof is None:
            skipped.append(f"{cell}: no profile (it never drafted)")
            continue
        try:
            got, label = pr.predict_held_out(data, prof, mine, n_boot, with_break_even=False)
        except SpecsweepError as e:
            skipped.append(f"{cell}: {e}")
            continue
        m = measured[cid]
        costs = label if not got.sources["draft"].startswith("the probe's bare") else "bare draft step"
        pc = got.speedup - 1.0
        ci = None if got.speedup_interval is None else (got.speedup_interval[0] - 1, got.speedup_interval[1] - 1)
        sign = None if abs(m["change"]) <= THRESHOLD else (pc > 0) == (m["change"] > 0)
        cells.append(Cell(name, data.card, data.curve.file, cell, prof.method, prof.n_max, got.rollback,
                          prof.synthetic, m["acceptance"], prof.acceptance, m["change"], m["interval"], pc, ci,
                          100 * (pc - m["change"]), sign, got.dominant, costs, got.sources["draft"],
                          {k: round(v, 4) for k, v in got.ms_per_token.items()}, _measured_ms(mine), len(mine)))
    return cells, skipped


def _measured_ms(trials: list[dict]) -> dict:
    n = sum(int(t.get("n_generated") or 0) for t in trials)
    parts = ("draft", "verify", "rollback", "host")
    return {k: round(sum(float((t.get("time_s") or {}).get(k) or 0) for t in trials) * 1e3 / n, 4) for k in parts} if n else {}


WRONG_POINTS = 10.0  # a cell is named as wrong beyond this error, or with the sign wrong


def reason(c: Cell) -> str:
    """Why a cell's prediction is off, from what differs between its predicted and measured terms."""
    d = c.predicted_ms
    m = c.measured_ms
    if c.method == "draft" and c.matrix == "a3b-synthetic" and "draft = target" in c.config:
        return ("the drafter (the 35B-A3B itself) was measured in the loop at one other draft length only (max 4 "
                "against 16): from one length, cost per call and per drafted token cannot be told apart, so its draft "
                f"cost misses ({d['draft']:.1f} against {m['draft']:.1f} ms per token)")
    if c.method == "ngram-mod":
        return ("it drafted nothing, so all it costs is the rollback mode's overhead on one-token passes: snapshots "
                f"made them {m['verify']:.2f} ms against {d['verify']:.2f} predicted; no other arm runs one-token "
                "passes in snapshot mode (theirs carry 2 tokens or more, where the overhead is smaller)")
    if c.method.startswith("ngram") and c.error < 0:
        return ("n-gram drafts come in runs (the text repeats in stretches), the model takes drafting as independent "
                f"from step to step and so expects more batch-shape changes ({d['switch']:.2f} ms per token of them) "
                f"than the loop made; measured with {c.n_trials} trials, sequential design (interval "
                f"{_fmt_ci(c.measured_interval)})")
    if c.synthetic and c.acceptance is not None and abs(c.acceptance - c.profile_acceptance) >= 0.03:
        return (f"the draws kept {c.acceptance:.0%} of the drafts against the configured {c.profile_acceptance:.0%} "
                f"(these records drew every trial of a cell from one seed, before per-trial seeds, so the difference "
                f"does not average out)")
    if c.costs == "same arm":
        return ("its arm is the drafter's only one on the card, so its costs come from the arm's other acceptance "
                f"levels only (draft {d['draft']:.2f} against {m['draft']:.2f}, rollback {d['rollback']:.2f} against "
                f"{m['rollback']:.2f} ms per token)")
    # measured verify time holds the shape changes: compare like with like
    pred = {"draft": d["draft"], "verify": d["verify"] + d["switch"], "rollback": d["rollback"], "host": d["host"]}
    term = max(pred, key=lambda k: abs(pred[k] - m.get(k, 0.0)))
    noise = (f"; measured with {c.n_trials} trials, interval {_fmt_ci(c.measured_interval)}"
             if c.method.startswith("ngram") else "")
    return (f"its {term} cost, fitted from the card's other arms, is off for this arm: {pred[term]:.2f} predicted "
            f"against {m.get(term, 0.0):.2f} ms per token measured (all terms: predicted "
            + ", ".join(f"{k} {v:.2f}" for k, v in pred.items()) + "; measured "
            + ", ".join(f"{k} {v:.2f}" for k, v in m.items()) + ")" + noise)


def _fmt_ci(ci) -> str:
    return "none" if ci is None else f"{ci[0]:+.0%} to {ci[1]:+.0%}"


def summary(cells: list[Cell]) -> dict:
    errs = [abs(c.error) for c in cells]
    signed = [c for c in cells if c.sign_ok is not None]
    return {"cells": len(cells), "median_abs_error_points": statistics.median(errs) if errs else None,
            "mean_abs_error_points": statistics.fmean(errs) if errs else None,
            "p90_abs_error_points": _quantile(errs, 0.9), "max_abs_error_points": max(errs) if errs else None,
            "median_error_points": statistics.median([c.error for c in cells]) if cells else None,
            "sign_cells": len(signed), "sign_right": sum(c.sign_ok for c in signed),
            "sign_share": (sum(c.sign_ok for c in signed) / len(signed)) if signed else None,
            "within_interval": sum(1 for c in cells if c.predicted_interval and
                                   c.predicted_interval[0] <= c.measured <= c.predicted_interval[1])}


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    i = q * (len(v) - 1)
    lo, hi = math.floor(i), math.ceil(i)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)


CROSS_TARGET = "a3b-synthetic"  # ran on an H100 ...
CROSS_DONORS = ("methods-synthetic", "cost-model-synthetic", "active-contrast-synthetic")  # ... these on an H200


@dataclass(frozen=True)
class PlacementCase:
    """Offloaded configs predicted from their placement's probe and all-on-GPU records only."""
    matrix: str  # the offloaded configs (its all-on-GPU trials, if any, are donors)
    on_gpu: str  # the matrix whose every-layer-on-the-GPU records give the loop's costs
    probes: tuple[str, ...]  # probe folders under results/
    what: str


PLACEMENTS = (  # one H200 each
    PlacementCase("placement-synthetic", "placement-synthetic", ("placement-synthetic/probe",),
                  "the quant-true 35B-A3B+MTP with the experts of 20 or 40 layers on the host"),
    PlacementCase("a10b-fit-synthetic", "a10b-synthetic", ("a10b-fit-synthetic/probe", "a10b-synthetic/probe", "probe"),
                  "the 122B-A10B+MTP at llama.cpp's 24 and 48 GiB fits"),
)


def validate_transfer(label: str, target, donors, probes, n_boot: int = 0, measured_profiles: bool = False,
                      costs: str = "another card") -> tuple[list[Cell], list[str]]:
    """Configs of the `target` sources predicted for their card from its probe, their acceptance, and
    loop costs measured only in the `donors` sources: none of the target's own trials enters a
    cost. The community case (a card that probed but ran nothing) and the offload case (a placement
    probed, its configs run only with every layer on the GPU)."""
    datas = pr.card_data(target + donors + probes)
    target_ids = {id(t) for s in target for t in s.trials}
    cells, skipped = [], []
    for data in datas:
        own = [t for t in data.trials if id(t) in target_ids]
        if not own:
            continue
        bare = pr.CardData(data.card, data.shape, data.curve, trials=[], gpu=data.gpu,
                           others=[d for d in datas if d is not data and d.shape == data.shape and d.trials
                                   and not any(id(t) in target_ids for t in d.trials)])
        measured = pr.measured_rows(own)
        for cid, mine in rec.speculative_by(own).items():
            cell = str(mine[0].get("cell"))
            prof = profiles.from_trials(mine, measured_profiles)
            if cid not in measured or prof is None:
                skipped.append(f"{cell}: no paired baseline or no profile")
                continue
            how = pr.settings_of(mine)
            try:
                got = pr.predict_one(bare, prof, how["n_predict"], how["rollback"], how["loop"],
                                     pr.base_loop_of(own, how["loop"]),
                                     n_boot=n_boot, with_break_even=False)
            except SpecsweepError as e:
                skipped.append(f"{cell}: {e.message}")
                continue
            m = measured[cid]
            pc = got.speedup - 1.0
            ci = None if got.speedup_interval is None else (got.speedup_interval[0] - 1, got.speedup_interval[1] - 1)
            sign = None if abs(m["change"]) <= THRESHOLD else (pc > 0) == (m["change"] > 0)
            cells.append(Cell(label, data.card, data.curve.file, cell, prof.method, prof.n_max, got.rollback,
                              prof.synthetic, m["acceptance"], prof.acceptance, m["change"], m["interval"], pc, ci,
                              100 * (pc - m["change"]), sign, got.dominant, costs, got.sources["draft"],
                              {k: round(v, 4) for k, v in got.ms_per_token.items()}, _measured_ms(mine), len(mine)))
    return cells, skipped


def validate_cross_card(results: Path, n_boot: int = 0, measured_profiles: bool = False) -> tuple[list[Cell], list[str]]:
    """The H100's a3b-synthetic configs predicted from the H100's probe, their acceptance, and loop
    costs measured only on the H200 (scaled by the two probes' T(1))."""
    from specsweep.records.sources import load

    return validate_transfer(CROSS_TARGET, load([results / CROSS_TARGET]), load([results / d for d in CROSS_DONORS]),
                             load([results / "probe"]), n_boot, measured_profiles)


def validate_cross_placement(results: Path, n_boot: int = 0, measured_profiles: bool = False,
                             cases=PLACEMENTS) -> tuple[list[Cell], list[str]]:
    """Each case's offloaded configs predicted from their placement's probe and loop costs measured
    only with every layer on the GPU (carried over as measured: the drafters and the recurrent state
    stay on the GPU)."""
    from specsweep.records.sources import load

    cells, skipped = [], []
    for case in cases:
        every = load([results / case.matrix])
        donors = every if case.on_gpu == case.matrix else load([results / case.on_gpu])
        placed = [_keep(s, lambda t: rec.placement_of(t)) for s in every]
        on_gpu = [_keep(s, lambda t: not rec.placement_of(t)) for s in donors]
        got, left = validate_transfer(case.matrix, placed, on_gpu, load([results / p for p in case.probes]), n_boot,
                                      measured_profiles, costs="the same GPU placed otherwise")
        cells += got
        skipped += [f"{case.matrix}: {x}" for x in left]
    return cells, skipped


def _keep(source, which):
    """A copy of a loaded source with only the trials `which` picks."""
    import copy

    out = copy.copy(source)
    out.trials = [t for t in source.trials if which(t)]
    return out


def wrong(cells: list[Cell]) -> list[dict]:
    return [{"matrix": c.matrix, "target": c.target, "config": c.config, "measured": c.measured,
             "predicted": c.predicted, "error_points": c.error, "sign_ok": c.sign_ok, "reason": reason(c)}
            for c in cells if c.sign_ok is False or abs(c.error) > WRONG_POINTS]


def validate(results: Path, matrices=MATRICES, n_boot: int = 100, measured_profiles: bool = False) -> dict:
    from specsweep.records.sources import load

    probe_sources = load([results / "probe"])
    out = {"kind": "predict-validation", "matrices": {}, "left_out": dict(LEFT_OUT)}
    every = []
    for name in matrices:
        sources = load([results / name]) + probe_sources
        cells, skipped = validate_matrix(name, sources, n_boot, measured_profiles)
        every += cells
        out["matrices"][name] = {"summary": summary(cells), "skipped": skipped, "cells": [asdict(c) for c in cells]}
    out["summary"] = summary(every)
    out["wrong"] = wrong(every)
    by_costs: dict[str, list[Cell]] = {}
    for c in every:
        by_costs.setdefault(c.costs, []).append(c)
    out["by_costs"] = {k: summary(v) for k, v in by_costs.items()}
    cross, skipped = validate_cross_card(results, 0, measured_profiles)
    out["cross_card"] = {"what": f"{CROSS_TARGET} (H100) from the H100's probe and loop costs measured on the H200 "
                                 f"({', '.join(CROSS_DONORS)}) only", "summary": summary(cross), "skipped": skipped,
                         "cells": [asdict(c) for c in cross]}
    placed, skipped = validate_cross_placement(results, 0, measured_profiles)
    out["cross_placement"] = {"what": "offloaded configs on one H200 (" + "; ".join(
                                  f"{c.matrix}: {c.what}" for c in PLACEMENTS) + ") from their placement's probe "
                                  "and loop costs measured with every layer on the GPU only",
                              "summary": summary(placed), "skipped": skipped,
                              "by_matrix": {c.matrix: summary([x for x in placed if x.matrix == c.matrix])
                                            for c in PLACEMENTS},
                              "by_card": {card: summary([c for c in placed if c.card == card])
                                          for card in sorted({c.card for c in placed})},
                              "cells": [asdict(c) for c in placed]}
    return out


def _row(name: str, s: dict) -> str:
    if not s["cells"]:
        return f"| {name} | 0 | | | | |"
    share = "" if s["sign_share"] is None else f"{s['sign_right']}/{s['sign_cells']} ({s['sign_share']:.0%})"
    return (f"| {name} | {s['cells']} | {s['median_abs_error_points']:.1f} | {s['p90_abs_error_points']:.1f} | "
            f"{s['max_abs_error_points']:.1f} | {share} |")


HEAD = ("| | cells | median abs error | 90th percentile | max | sign right (measured change beyond ±3%) |\n"
        "|---|---|---|---|---|---|")


def markdown(doc: dict) -> str:
    """The committed summary (results/predict-validation/README.md)."""
    s, v = doc["summary"], doc["measured_draws"]["summary"]
    goal_sign = s["sign_share"] is not None and s["sign_share"] >= 0.9
    goal_err = s["median_abs_error_points"] <= 5
    lines = [
        "# How well `specsweep predict` predicts the committed device matrices",
        "",
        "Written by `scripts/validate-predict.py` from the records in `results/` (no GPU). Every config of every",
        "matrix with a probe of its target on its card and layout is predicted from that probe, its acceptance",
        "(the configured rates where acceptance was synthetic) and loop costs fitted from the matrix's *other arms*",
        "(method, drafter and draft length: neither the config nor another acceptance level of its arm enters its",
        "own costs; an arm that is its drafter's only one falls back to its arm's other configs, \"same arm\"), and",
        "set against its paired measured change. Errors are in points of speed-up (predicted change minus measured",
        "change, x100). The model: docs/analysis.md, \"Predicting a card\". Every cell: `validation.json`.",
        "",
        HEAD,
        _row("**all**", s),
    ]
    lines += [_row(name, m["summary"]) for name, m in doc["matrices"].items()]
    lines += ["", "By where the loop's costs came from:", "", HEAD]
    lines += [_row(k, x) for k, x in doc["by_costs"].items()]
    c = doc["cross_card"]
    lines += ["", f"**Cross-card** (the community case, a card that probed but ran nothing): {c['what']}.", "", HEAD,
              _row(CROSS_TARGET + " on the H100", c["summary"]), ""]
    if "cross_placement" in doc:
        c = doc["cross_placement"]
        lines += [f"**Cross-placement** (the offload case, a placement that probed but ran nothing): {c['what']}.",
                  "", HEAD, _row("all offloaded", c["summary"])]
        lines += [_row(name, x) for name, x in c.get("by_matrix", {}).items()]
        lines += [_row(card, x) for card, x in c.get("by_card", {}).items()] + [""]
    lines += ["**With the measured draws** instead of the configured rates (what synthetic acceptance actually kept):",
              "", HEAD, _row("all", v), ""]
    lines += [f"Goal: sign right in >= 90% of cells with a measured change beyond ±3%: "
              f"{'met' if goal_sign else 'NOT met'} ({s['sign_share']:.1%}); median absolute error <= 5 points: "
              f"{'met' if goal_err else 'NOT met'} ({s['median_abs_error_points']:.1f}). Median signed error "
              f"{s['median_error_points']:+.1f} points. The predicted intervals (measurement noise of the probe and "
              f"the fitted costs) hold the measured change in {s['within_interval']} of {s['cells']} cells: they do "
              f"not cover the model's own error, which is what this page measures.", ""]
    lines += ["Left out: " + "; ".join(f"`{k}` ({x})" for k, x in doc["left_out"].items()) + ".", ""]
    lines += [f"## The cells it gets wrong (sign wrong, or off by more than {WRONG_POINTS:.0f} points)", "",
              "| matrix | target | config | measured | predicted | error | why |", "|---|---|---|---|---|---|---|"]
    for w in doc["wrong"]:
        mark = " (sign)" if w["sign_ok"] is False else ""
        lines.append(f"| {w['matrix']} | {w['target'].split('-full')[0]} | {w['config']} | {w['measured']:+.1%} | "
                     f"{w['predicted']:+.1%} | {w['error_points']:+.1f}{mark} | {w['reason']} |")
    return "\n".join(lines) + "\n"
