"""Read records into sources: one per results folder, file or contribution. What `specsweep plot`,
`analyze`, `predict`, `contribute` and `tune` are given.

A RESULTS argument may be
- a results folder, `results/<matrix>` (every `trials*.jsonl`, `manifests.jsonl`, and probe
  records of any `*.jsonl` in it, such as `results/probe`);
- a folder of such folders (`results/`): one source per subfolder that holds records;
- a JSONL file: trial, manifest and probe records (a `trials*.jsonl` picks up the
  `manifests.jsonl` beside it), or a merged community file (`specsweep merge`), which holds one
  source per contribution;
- a contribution file (`specsweep contribute`, JSON), checked against the schema first.
A file is told by its content, not its suffix: a merged file named `.json` still reads as JSONL.

A source's card is the GPU its trials ran on (the manifest's name for the first GPU of `gpus`),
or the CPU's name for CPU runs; a contribution names its own.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from specsweep.errors import SpecsweepError
from specsweep.records.attempts import kept
from specsweep.records.store import parse_jsonl, read_jsonl


@dataclass
class Source:
    name: str  # the folder's or file's name, or the contribution's file name: never a full path
    origin: str  # "results", "records", "contribution"
    trials: list[dict] = field(default_factory=list)
    manifests: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # a contribution's card, date, power limit, clocks
    label: str = ""  # what the page calls it: the card, and the name where two sources share a card

    @property
    def card(self) -> str:
        return self.meta.get("card") or card_name(self.trials, self.manifests, self.probes)


def trial_card(trial: dict, manifests: list[dict]) -> str | None:
    """The GPU a trial ran on (its manifest's name for the first of its `gpus`), or the CPU."""
    m = next((m for m in manifests if m.get("id") == trial.get("manifest")), None) or (manifests[-1] if manifests
                                                                                     else None)
    if m is None:
        return None
    gpus = (trial.get("settings") or {}).get("gpus") or []
    names = {g.get("index"): g.get("name") for g in m.get("gpus") or []}
    return names.get(gpus[0]) if gpus else m.get("cpu")


def probe_card(probe: dict) -> str | None:
    machine = probe.get("machine") or {}
    return machine.get("gpu_name") if (probe.get("settings") or {}).get("gpus") else machine.get("cpu")


def card_name(trials: list[dict], manifests: list[dict], probes: list[dict]) -> str:
    """The GPU (or CPU) most of these records were measured on."""
    seen: Counter = Counter(name for name in [trial_card(t, manifests) for t in trials] +
                            [probe_card(p) for p in probes] if name)
    if not seen and manifests:
        m = manifests[-1]
        gpus = m.get("gpus") or []
        name = gpus[0].get("name") if gpus else m.get("cpu")
        if name:
            seen[name] += 1
    return seen.most_common(1)[0][0] if seen else "unknown card"


def only_card(sources: list[Source], card: str) -> list[Source]:
    """The records measured on one card (a case-insensitive part of its name, as `--card H100`):
    trials and probes of other cards are dropped, and sources left with nothing; none left is a
    one-line error. Contributions keep their own card's name."""
    want = card.lower()
    kept = []
    for s in sources:
        if s.origin == "contribution":
            if want in s.card.lower():
                kept.append(s)
            continue
        trials = [t for t in s.trials if want in (trial_card(t, s.manifests) or "").lower()]
        probes = [p for p in s.probes if want in (probe_card(p) or "").lower()]
        if trials or probes:
            used = {t.get("manifest") for t in trials}
            manifests = [m for m in s.manifests if m.get("id") in used] or (s.manifests if trials else [])
            kept.append(Source(s.name, s.origin, trials, manifests, probes, dict(s.meta), s.label))
    if not kept:
        raise SpecsweepError(f"no trial or probe records measured on a card named like {card!r}")
    _label(kept)
    return kept


def _split(records: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    # of the attempts at one block (an interrupted block runs again whole), the last counts, as in
    # the run's summary and the analysis
    trials = kept([r for r in records if r.get("kind") == "trial"])
    manifests = [r for r in records if r.get("kind") == "manifest"]
    probes = [r for r in records if r.get("kind") == "probe"]
    return trials, manifests, probes


def _folder(path: Path) -> Source | None:
    records = []
    for p in sorted(path.glob("*.jsonl")):
        if p.name.startswith("references"):
            continue  # baseline tokens: nothing to show
        records.extend(read_jsonl(p))
    trials, manifests, probes = _split(records)
    if not (trials or probes):
        return None
    return Source(path.resolve().name, "results", trials, manifests, probes)


def from_contribution(doc: dict, name: str) -> Source:
    meta = {k: doc.get(k) for k in ("card", "created", "power_limit_w", "clocks", "notes", "schema_version",
                                    "lossless") if doc.get(k) is not None}
    return Source(name, "contribution", list(doc.get("trials") or []), list(doc.get("manifests") or []),
                  list(doc.get("probes") or []), meta)


RECORD_KINDS = ("trial", "manifest", "probe", "contribution")  # a JSON Lines file's first (or only) line


def _records_file(path: Path) -> list[Source]:
    """A file by its content, not its name: one JSON document is a contribution (checked against
    the schema first); a record per line is JSON Lines, whatever the suffix (a merged file written
    as community.json, say)."""
    from specsweep.contrib import problem  # the schema only: contrib/__init__.py imports no other layer

    try:
        data = path.read_bytes()  # read once: JSON Lines are parsed from these bytes, torn lines skipped
    except OSError as e:
        raise SpecsweepError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        doc = json.loads(data)
    except ValueError as e:  # UnicodeDecodeError included
        doc, error = None, e
    if isinstance(doc, dict) and doc.get("kind") not in RECORD_KINDS:
        reason = problem(doc)
        if reason:
            raise SpecsweepError(f"{path} is not a valid contribution: {reason}")
        return [from_contribution(doc, path.name)]
    got = _jsonl_file(path, parse_jsonl(data))
    if not got and doc is None and path.suffix == ".json":
        raise SpecsweepError(f"{path} is not JSON: {error}")
    return got


def _jsonl_file(path: Path, records: list[dict]) -> list[Source]:
    heads = [r for r in records if r.get("kind") == "contribution"]
    if heads:  # a merged community file: one source per contribution
        sources = []
        for head in heads:
            cid = head.get("contribution")
            mine = [r for r in records if r.get("contribution") == cid and r.get("kind") != "contribution"]
            trials, manifests, probes = _split(mine)
            meta = {k: v for k, v in head.items() if k not in ("kind", "contribution", "file") and v is not None}
            sources.append(Source(str(head.get("file") or cid), "contribution", trials, manifests, probes, meta))
        return sources
    trials, manifests, probes = _split(records)
    if trials and not manifests and path.name.startswith("trials"):
        manifests = read_jsonl(path.parent / "manifests.jsonl")
    if not (trials or probes):
        return []
    name = path.parent.name if path.name.startswith("trials") and path.parent.name else path.stem
    return [Source(name, "records", trials, manifests, probes)]


def load(paths: list[Path]) -> list[Source]:
    """Every source the paths hold, labelled; a path with no records is a one-line error."""
    sources: list[Source] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = _folder(path)
            if found is not None:
                got = [found]
            else:
                got = [s for sub in sorted(p for p in path.iterdir() if p.is_dir()) if (s := _folder(sub))]
        elif path.is_file():
            got = _records_file(path)
        else:
            raise SpecsweepError(f"results not found: {path}")
        if not got:
            raise SpecsweepError(f"no trial or probe records in {path}")
        sources.extend(got)
    _label(sources)
    return sources


def _label(sources: list[Source]) -> None:
    cards = Counter(s.card for s in sources)
    for s in sources:
        s.label = s.card if cards[s.card] == 1 else f"{s.card} · {s.name}"
    labels = Counter(s.label for s in sources)
    seen: Counter = Counter()
    for s in sources:  # the same folder given twice, say: keep the labels apart
        if labels[s.label] > 1:
            seen[s.label] += 1
            s.label = f"{s.label} ({seen[s.label]})"
