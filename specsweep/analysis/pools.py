"""Which of a card's records the loop's costs come from, in order of preference.

One card's records may hold several files of one target shape (a quant-true stand-in beside a
plain one: the same shape, other costs) and several states of specsweep's engine (records from
before a change of the loop). A card's records are split into pools, preferred in this order:
its calibration of the probed file (`specsweep probe --calibrate`), the probed file's other
records, another file's calibration, another file's records; within each, the running engine's
records first, then the other engines newest first (by their runs' start). Each cost term takes
the first pool that holds what it needs (`predict.fit_costs`), and predict says in one line where
that is not the first choice.

The engine of a record is its manifest's `specsweep_source` (a hash of the package's files, see
records/manifest.py); records from before it was recorded are one engine, named by version.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from specsweep.analysis import records as rec


@dataclass
class Pool:
    file: str  # the target file the trials ran
    own_file: bool  # the probed file
    calibration: bool  # a calibration run's records
    engine: str  # what measured them (`engine_label`)
    current: bool  # measured by the running engine
    trials: list[dict] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        what = ("its calibration" if self.calibration else "its records") if self.own_file else \
            f"{'calibration' if self.calibration else 'records'} of another file of its shape ({self.file})"
        return f"{what}, {'this engine' if self.current else self.engine}"


def engine_label(manifest: dict | None) -> str:
    """What measured a record: the source hash (and commit) of its engine, or the version alone for
    records from before either was recorded."""
    if not manifest:
        return "an engine without a manifest"
    source, git = manifest.get("specsweep_source"), manifest.get("specsweep_git")
    if source:
        return f"engine {source}" + (f" (git {str(git)[:12]})" if git else "")
    return f"an engine before source hashes (specsweep {manifest.get('specsweep') or '?'})"


def current_engine() -> str | None:
    """The running engine's label's source part (None when the records layer cannot say)."""
    from specsweep.records.manifest import source_hash

    try:
        return f"engine {source_hash()}"
    except OSError:
        return None


def pools(trials: list[dict], manifest_of, probed_file: str) -> list[Pool]:
    """The card's trials as pools, most preferred first; `manifest_of(trial)` its run's manifest."""
    current = current_engine()
    groups: dict[tuple, list[dict]] = defaultdict(list)
    newest: dict[str, str] = {}
    for t in trials:
        m = manifest_of(t)
        engine = engine_label(m)
        newest[engine] = max(newest.get(engine, ""), str((m or {}).get("started") or ""))
        groups[(rec.target_label(t), rec.is_calibration(t), engine)].append(t)
    out = [Pool(file, file == probed_file, cal, engine,
                current is not None and engine.startswith(current), mine)
           for (file, cal, engine), mine in groups.items()]
    # newest first within a kind: the running engine, then by the latest start of the engine's runs
    out.sort(key=lambda p: newest[p.engine], reverse=True)
    out.sort(key=lambda p: (not p.own_file, not p.calibration, not p.current))
    return out


def first(pools_: list[Pool], wanted) -> tuple[Pool | None, list[dict]]:
    """The first pool with trials that `wanted(trial)` picks, and those trials."""
    for p in pools_:
        mine = [t for t in p.trials if wanted(t)]
        if mine:
            return p, mine
    return None, []


def fallback_note(pools_: list[Pool], probed_file: str) -> str:
    """One line on where the card's loop costs come from, when that is not the probed file's
    calibration by the running engine: what is missing and what is taken instead."""
    if not pools_:
        return (f"loop costs: no records of any file on this card (specsweep probe --calibrate): taken from "
                f"another card's records, else the probe alone")
    best = pools_[0]
    if best.own_file and best.calibration and best.current:
        return ""
    missing = []
    if not any(p.own_file and p.calibration for p in pools_):
        missing.append(f"no calibration of {probed_file} on this card (specsweep probe --calibrate)")
    if not any(p.own_file for p in pools_):
        missing.append(f"no records of {probed_file} itself")
    if not any(p.current for p in pools_):
        missing.append("none by this engine")
    order = "; then ".join(p.label for p in pools_[:3]) + ("; ..." if len(pools_) > 3 else "")
    return "loop costs: " + ", ".join(missing) + (": " if missing else "") + f"taken from {order}"
