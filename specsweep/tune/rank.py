"""Rank every candidate by `predict`'s speed-up, from the pilot's records on this card.

Each candidate's acceptance profile is its family's pilot's (analysis/profiles.py: accepted per
draft position, the drafts' lengths and how often it drafts), cut to the candidate's draft limit
(`derive`): a config with a shorter limit drafts a prefix of the same drafts. Its costs are what
`predict` fits on this card: the card's calibration of the target first (`specsweep probe
--calibrate`, if there is one in the results folder), then the pilot's records, priced with the
tune's probe (analysis/pools.py decides the order). The ranking only chooses which configs race;
the answer is measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specsweep.analysis import predict as pr
from specsweep.analysis import profiles
from specsweep.analysis.profiles import Profile
from specsweep.errors import SpecsweepError
from specsweep.tune.candidates import Candidate, Family


@dataclass
class Ranked:
    candidate: Candidate
    speedup: float | None  # predicted; None: could not be predicted (`note` says why)
    acceptance: float | None = None
    note: str = ""


def derive(pilot: Profile, n: int, n_min: int = 0, label: str = "") -> Profile:
    """The pilot's profile at draft limit `n` (<= the pilot's) and minimum length `n_min`: the first
    n conditional rates; a draft that was longer is cut to n, one shorter than n_min is dropped
    (it does not draft then)."""
    if n > pilot.n_max:
        raise SpecsweepError(f"{label}: draft limit {n} beyond its pilot's {pilot.n_max}")
    lengths = list(pilot.lengths)
    rate = pilot.draft_rate
    if lengths:
        cut = lengths[: n - 1] + [sum(lengths[n - 1:])]
        kept = sum(cut[n_min - 1:]) if n_min > 1 else 1.0
        cut = [0.0 if i + 1 < n_min else p for i, p in enumerate(cut)]
        rate *= kept
        lengths = [p / kept for p in cut] if kept > 0 else [0.0] * (n - 1) + [1.0]
    return Profile(pilot.method, n, tuple(pilot.cond[:n]), tuple(lengths), rate, pilot.drafter, label,
                   f"pilot {pilot.label}", pilot.synthetic)


def sources(out: Path, results_root: Path) -> list:
    """The tune's probe and pilot records, and the card's calibrations in the results folder."""
    from specsweep.records.sources import load

    paths = [out / "probe", out / "pilot"]
    paths += sorted(p for p in Path(results_root).glob("calibrate-*") if p.is_dir())
    return load(paths)


def card(srcs: list, target: Path, kv: str, gpus: int) -> pr.CardData:
    """This card's data of the target (the probe the tune just recorded, with its placement)."""
    datas = [d for d in pr.card_data(srcs, None, target.name, kv, gpus) if d.curve.file == target.name]
    if not datas:
        raise SpecsweepError(f"no probe of {target.name} in the tune's records")
    # a placement is a card of its own: the tune's probe and pilot share one, the one with its trials
    return max(datas, key=lambda d: (len(d.trials), str(d.curve.probe.get("time") or "")))


def rank(families: list[Family], pilot_trials: dict[str, list[dict]], data: pr.CardData,
         n_predict: int) -> list[Ranked]:
    """Every candidate with its predicted speed-up, best first (unpredicted ones last);
    `pilot_trials`: each family's pilot records, by the family's name."""
    out = []
    for fam in families:
        trials = pilot_trials.get(fam.name, [])
        measured = profiles.from_trials(trials) if trials else None
        for c in fam.members:
            if measured is None:
                out.append(Ranked(c, None, note=f"its pilot {fam.pilot.name} has no records"))
                continue
            prof = derive(measured, c.n_max, c.n_min, c.name)
            if prof.draft_rate == 0 or not any(prof.cond):
                out.append(Ranked(c, None, prof.acceptance, note=f"its pilot drafted nothing accepted on these prompts"))
                continue
            rollback = trials[0].get("rollback") or (trials[0].get("settings") or {}).get("rollback")
            try:
                p = pr.predict_one(data, prof, n_predict, rollback, "server", pr.base_loop_of(data.trials, "server"),
                                   n_boot=0, with_break_even=False)
            except SpecsweepError as e:
                out.append(Ranked(c, None, prof.acceptance, note=e.message))
                continue
            out.append(Ranked(c, p.speedup, prof.acceptance))
    return sorted(out, key=lambda r: (r.speedup is None, -(r.speedup or 0.0)))
