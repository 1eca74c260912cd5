"""Held-out sets of the prediction's validation that look like what a user meets, from the committed
records alone (no GPU): each config of a model drafter (MTP, DFlash, EAGLE-3, a draft model) is
predicted with a whole class of records kept out of every cost, and set against its paired
measurement. Every card's records of every validated matrix are loaded together, as `predict
results/` sees them.

- `longer`: draft lengths beyond the fitted ones. Every speculative record of the card with a
  draft limit at or above the config's is left out (of any drafter, so that no verify of that size
  was fitted either); a config needs a shorter length of its own drafter on the card.
- `shorter`: the same, below: records at or below its draft limit left out.
- `acceptance`: acceptance levels absent from the fit. Its own arm and every record whose configured
  synthetic acceptance lies within 0.1 of the config's are left out (synthetic configs only).
- `drafter`: a drafter absent from the card's fit. Every record of its drafter on its card is left
  out: its draft cost comes from another card (scaled by the probes' T(1)), else the probe's bare
  draft step, else it is not predicted (named).
- `calibration`: a card whose only costs are its calibration. From methods-synthetic (H200, the
  35B-A3B+MTP) the records `probe --calibrate` would have made are picked (the baseline; each drafter
  at draft lengths 2 and 4, the two configured acceptance levels nearest 30% and 80%), and every
  other config of methods-synthetic (the same session) and of cost-model-synthetic (another
  session, draft lengths up to 128) is predicted from them and the probe alone: no other card and
  no other record. Here plain decoding's predicted speed is set against each matrix's measured
  baseline too (EAGLE-3 ran at length 3 only, so it has no calibration and is not predicted).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from specsweep import methods
from specsweep.analysis import predict as pr
from specsweep.analysis import predict_validation as pv
from specsweep.analysis import profiles
from specsweep.analysis import records as rec
from specsweep.errors import SpecsweepError

SETS = {
    "longer": "draft lengths longer than any fitted: every record at or above the config's draft limit left out",
    "shorter": "draft lengths shorter than any fitted: every record at or below the config's draft limit left out",
    "acceptance": "acceptance levels absent from the fit: its arm and every record configured within 0.1 of its "
                  "acceptance left out",
    "drafter": "its drafter absent from the card: every record of its drafter there left out",
    "calibration": "a card whose only costs are its calibration: methods-synthetic's calibration-like records "
                   "(baseline; MTP, DFlash, the 0.8B draft at lengths 2 and 4, acceptance nearest 30% and 80%) alone",
}
NEAR = 0.1  # acceptance levels within this of a config's count as its level
CAL_SOURCE, CAL_TARGETS = "methods-synthetic", ("methods-synthetic", "cost-model-synthetic")
CAL_LENGTHS, CAL_LEVELS = (2, 4), (0.3, 0.8)  # probe/calibrate.py's grid


def _model_drafter(t: dict) -> bool:
    m = methods.METHODS.get(str(t.get("method")))
    return bool(m and m.context is not None)


def _family(t: dict) -> tuple[str, str]:
    return str(t.get("method")), profiles.drafter_key(t)


def exclusion(kind: str, mine: list[dict], card_trials: list[dict]):
    """What to leave out of a config's costs for one held-out set, or None when the config is not in
    the set (not a model drafter, no record of its drafter left to fit it, no synthetic level)."""
    first = mine[0]
    if not _model_drafter(first):
        return None
    n, fam, arm = profiles.n_max_of(first), _family(first), pr.arm_of(first)
    spec = [t for t in card_trials if not rec.is_baseline(t)]
    if kind in ("longer", "shorter"):
        out = (lambda t: profiles.n_max_of(t) >= n) if kind == "longer" else (lambda t: profiles.n_max_of(t) <= n)
    elif kind == "acceptance":
        level = rec.configured_acceptance(first)
        if level is None:
            return None

        def out(t, level=level):
            a = rec.configured_acceptance(t)
            return pr.arm_of(t) == arm or (a is not None and abs(a - level) < NEAR)
    elif kind == "drafter":
        return lambda t: not rec.is_baseline(t) and _family(t) == fam
    else:
        raise ValueError(kind)
    left = [t for t in spec if _family(t) == fam and not out(t)]
    if not left:
        return None
    return lambda t: not rec.is_baseline(t) and out(t)


def _cell(label: str, data: pr.CardData, mine: list[dict], prof, got: pr.Prediction, m: dict, costs: str) -> pv.Cell:
    pc = got.speedup - 1.0
    ci = None if got.speedup_interval is None else (got.speedup_interval[0] - 1, got.speedup_interval[1] - 1)
    sign = None if abs(m["change"]) <= pv.THRESHOLD else (pc > 0) == (m["change"] > 0)
    cell = pv.Cell(label, data.card, data.curve.file, str(mine[0].get("cell")), prof.method, prof.n_max, got.rollback,
                   prof.synthetic, m["acceptance"], prof.acceptance, m["change"], m["interval"], pc, ci,
                   100 * (pc - m["change"]), sign, got.dominant, costs, got.sources["draft"],
                   {k: round(v, 4) for k, v in got.ms_per_token.items()}, pv._measured_ms(mine), len(mine),
                   {"predicted_tps": got.baseline_tps, "measured_tps": m.get("baseline_tps")})
    return cell


def validate_set(kind: str, results: Path, matrices=pv.MATRICES, measured_profiles: bool = False):
    """One held-out set over the committed matrices: its cells and what was left out, with why."""
    from specsweep.records.sources import load

    by_matrix = {name: load([results / name]) for name in matrices}
    sources = [s for v in by_matrix.values() for s in v] + load([results / "probe"])
    datas = pr.card_data(sources)
    cells, skipped = [], []
    for name, mine_sources in by_matrix.items():
        trials = [t for s in mine_sources for t in s.trials]
        measured = pr.measured_rows(trials)
        for cid, mine in rec.speculative_by(trials).items():
            data = next((d for d in datas if any(t is mine[0] for t in d.trials)), None)
            prof = profiles.from_trials(mine, measured_profiles)
            if data is None or prof is None or cid not in measured:
                continue
            exclude = exclusion(kind, mine, data.trials)
            if exclude is None:
                continue
            how = pr.settings_of(mine)
            try:
                got = pr.predict_one(data, prof, how["n_predict"], how["rollback"], how["loop"],
                                     pr.base_loop_of(data.trials, how["loop"]), exclude, n_boot=0,
                                     with_break_even=False)
            except SpecsweepError as e:
                skipped.append(f"{name}: {mine[0].get('cell')}: {e.message}")
                continue
            cells.append(_cell(name, data, mine, prof, got, measured[cid], kind))
    return cells, skipped


# --- a card whose only costs are its calibration ---

def calibration_like(trials: list[dict]) -> list[dict]:
    """The records `probe --calibrate` would have made, picked from a matrix: the baseline, and per
    model drafter at each calibration length the configs configured nearest each calibration level."""
    out = [t for t in trials if rec.is_baseline(t)]
    by_cell = rec.speculative_by(trials)
    for fam in sorted({_family(v[0]) for v in by_cell.values() if _model_drafter(v[0])}):
        for n in CAL_LENGTHS:
            mine = [(cid, v) for cid, v in by_cell.items() if _family(v[0]) == fam and profiles.n_max_of(v[0]) == n
                    and rec.configured_acceptance(v[0]) is not None]
            chosen = set()
            for level in CAL_LEVELS:
                if mine:
                    cid, _ = min(mine, key=lambda x: abs(rec.configured_acceptance(x[1][0]) - level))
                    chosen.add(cid)
            for cid in chosen:
                out += by_cell[cid]
    return out


def validate_calibration(results: Path, measured_profiles: bool = False):
    """Configs of CAL_TARGETS predicted from CAL_SOURCE's calibration-like records and the probe only."""
    from specsweep.records.sources import load, trial_card

    cal = load([results / CAL_SOURCE])
    picked = [t for s in cal for t in calibration_like(s.trials)]
    cal_cells = {str(t.get("cell_id")) for t in picked if not rec.is_baseline(t)}
    for s in cal:  # as a calibration run's records (their matrix name), so predict ranks them first
        keep = {id(t) for t in picked}
        s.trials = [dict(t, matrix=rec.CALIBRATION_PREFIX + str(t.get("matrix"))) for t in s.trials if id(t) in keep]
    datas = pr.card_data(cal + load([results / "probe"]))
    cells, skipped = [], []
    for name in CAL_TARGETS:
        for src in load([results / name]):
            measured = pr.measured_rows(src.trials)
            for cid, mine in rec.speculative_by(src.trials).items():
                if (name == CAL_SOURCE and cid in cal_cells) or not _model_drafter(mine[0]):
                    continue
                card = trial_card(mine[0], src.manifests)
                data = next((d for d in datas if d.card == card and pr.lc.trial_shape(mine[0]) == d.shape), None)
                prof = profiles.from_trials(mine, measured_profiles)
                if data is None or prof is None or cid not in measured:
                    continue
                alone = pr.CardData(data.card, data.shape, data.curve, trials=data.trials, gpu=data.gpu,
                                    manifests=data.manifests)  # no other card
                how = pr.settings_of(mine)
                try:
                    got = pr.predict_one(alone, prof, how["n_predict"], how["rollback"], how["loop"],
                                         pr.base_loop_of(alone.trials, how["loop"]), n_boot=0, with_break_even=False)
                except SpecsweepError as e:
                    skipped.append(f"{name}: {mine[0].get('cell')}: {e.message}")
                    continue
                cells.append(_cell(name, alone, mine, prof, got, measured[cid], "calibration"))
    return cells, skipped


def baseline_summary(cells: list[pv.Cell]) -> dict:
    """Predicted plain decoding against each matrix's measured baseline, per matrix (one each)."""
    out = {}
    for c in cells:
        b = c.baseline or {}
        if b.get("measured_tps") and c.matrix not in out:
            out[c.matrix] = {"predicted_tps": b["predicted_tps"], "measured_tps": b["measured_tps"],
                             "error": b["predicted_tps"] / b["measured_tps"] - 1}
    return out


def reason(c: dict) -> str:
    """Why a held-out cell is off, from its draws and its terms."""
    if c["synthetic"] and c["acceptance"] is not None and abs(c["acceptance"] - c["profile_acceptance"]) >= 0.03:
        return (f"drew {c['acceptance']:.0%} against the {c['profile_acceptance']:.0%} set (these records drew every "
                f"trial from one seed, so the difference does not average out)")
    d, m = c["predicted_ms"], c["measured_ms"]
    pred = {"draft": d["draft"], "verify": d["verify"] + d["switch"], "rollback": d["rollback"], "host": d["host"]}
    term = max(pred, key=lambda k: abs(pred[k] - m.get(k, 0.0)))
    return (f"its {term} cost: {pred[term]:.2f} predicted against {m.get(term, 0.0):.2f} ms per token measured; "
            f"draft cost from {c['draft_source'].split(' (')[0]}")


KEPT = ("matrix", "card", "config", "method", "n_max", "synthetic", "acceptance", "profile_acceptance", "measured",
        "predicted", "error", "sign_ok", "baseline")
# what results/predict-validation/held-out.jsonl keeps of each cell, one per line
LINE = ("matrix", "card", "config", "n_max", "acceptance", "profile_acceptance", "measured", "predicted", "error",
        "sign_ok")


def _compact(c: dict) -> dict:
    """A held-out cell for the README and held-out.jsonl: the numbers, the draft cost's source in short, and
    why it is off (the terms behind that stay out: the file stays small)."""
    out = {k: c[k] for k in KEPT}
    out["draft_source"] = c["draft_source"].split(": ")[0]
    out["why"] = reason(c)
    return out


def held_out(results: Path, measured_profiles: bool = False) -> dict:
    out = {}
    for kind, what in SETS.items():
        if kind == "calibration":
            cells, skipped = validate_calibration(results, measured_profiles)
        else:
            cells, skipped = validate_set(kind, results, measured_profiles=measured_profiles)
        out[kind] = {"what": what, "summary": pv.summary(cells), "skipped": skipped,
                     "by_method": {m: pv.summary([c for c in cells if c.method == m])
                                   for m in sorted({c.method for c in cells})},
                     "baseline": baseline_summary(cells) if kind == "calibration" else None,
                     "cells": [_compact(asdict(c)) for c in cells]}
    return out


def markdown(doc: dict, measured_draws: dict | None = None) -> str:
    """The held-out section of results/predict-validation/README.md (`measured_draws`: each set's
    summary with the acceptance the draws kept instead of the configured one)."""
    lines = ["## Held out as a user meets it", "",
             "Written by `scripts/validate-predict.py` (specsweep/analysis/predict_heldout.py) from the same records, "
             "every card's records of the validated matrices loaded together as `predict results/` sees them. "
             "Each config of a model drafter (MTP, DFlash, EAGLE-3, a draft model) is predicted with a whole "
             "class of records left out of every cost:", ""]
    lines += [f"- **{k}**: {v}." for k, v in SETS.items()]
    lines += ["", pv.HEAD]
    for kind, s in doc.items():
        lines.append(pv._row(kind, s["summary"]))
        lines += [pv._row(f"{kind} · {m}", x) for m, x in s["by_method"].items()]
    if measured_draws:
        lines += ["", "With the measured draws instead of the configured rates (what synthetic acceptance kept):", "",
                  pv.HEAD] + [pv._row(k, x) for k, x in measured_draws.items()]
    cal = doc.get("calibration") or {}
    for name, b in (cal.get("baseline") or {}).items():
        lines += ["", f"Plain decoding with only the calibration, {name}: {b['predicted_tps']:.1f} tok/s predicted "
                      f"against {b['measured_tps']:.1f} measured ({b['error']:+.1%})."]
    wrong = [(k, c) for k, s in doc.items() for c in s["cells"]
             if c["sign_ok"] is False or abs(c["error"]) > pv.WRONG_POINTS]
    lines += ["", f"Cells off by more than {pv.WRONG_POINTS:.0f} points or with the sign wrong, by set "
                  f"(`held-out.jsonl` has every cell):", "",
              "| set | matrix | config | measured | predicted | error | why |", "|---|---|---|---|---|---|---|"]
    for kind, c in wrong:
        mark = " (sign)" if c["sign_ok"] is False else ""
        lines.append(f"| {kind} | {c['matrix']} | {c['config']} | {c['measured']:+.1%} | {c['predicted']:+.1%} | "
                     f"{c['error']:+.1f}{mark} | {c['why']} |")
    left = {k: len(s["skipped"]) for k, s in doc.items() if s["skipped"]}
    if left:
        lines += ["", "Not predicted (named in `validation.json`): " + ", ".join(f"{k} {n}" for k, n in left.items())
                  + "."]
    return "\n".join(lines) + "\n"
