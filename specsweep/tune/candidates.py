"""What `tune` considers: every speculative config the files allow, grouped into families.

A family is the configs whose acceptance one pilot measures: a method with everything but its
draft length fixed (its model, p_min, an n-gram method's key length). Its pilot runs the longest
length the family has; a shorter one drafts a prefix of the same drafts, so its profile is the
pilot's cut short (rank.derive). Settings that change *what* is drafted (p_min, size_n, n_match)
get a pilot each.

The grid (llama.cpp's defaults first, then the values that most often pay off):
- model drafters (draft model, MTP head, DFlash, DSpark, EAGLE-3): draft_max 1, 2, 3, 4, 6, 8
  (at most a DFlash/DSpark drafter's block allows), and from length 3 on also p_min 0.75
  (llama.cpp's default is 0; 0.75 stops a draft once the drafter is unsure);
- ngram-simple, ngram-map-k, ngram-map-k4v: key size_n 12 (llama.cpp's) and 4, drafted m-gram
  size_m 8, 16, 48;
- ngram-mod: n_match 24 (llama.cpp's) and 8, (draft_min, draft_max) (48, 64) (llama.cpp's) and
  (4, 16);
- ngram-cache: llama.cpp fixes its drafts at 8 tokens, so one config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from specsweep import methods
from specsweep.errors import SpecsweepError

MODEL_LENGTHS = (1, 2, 3, 4, 6, 8)
P_MIN = 0.75
P_MIN_FROM = 3  # a p_min stops long drafts early; at lengths 1-2 there is little to stop
NGRAM_KEYS = (12, 4)
NGRAM_LENGTHS = (8, 16, 48)
MOD_MATCH = (24, 8)
MOD_LIMITS = ((48, 64), (4, 16))
NGRAMS = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache")
MODEL_DRAFTERS = ("draft", "mtp", "dflash", "dspark", "eagle3")


@dataclass(frozen=True)
class Drafter:
    """A --drafter file: its method (from the header) and the draft limit its block allows."""
    path: Path
    method: str
    cap: int | None = None  # DFlash/DSpark: tokens one block drafts; None: no cap
    p_min_ok: bool = True  # DSpark: p_min > 0 needs its confidence head


@dataclass(frozen=True)
class Files:
    target: Path
    mtp: bool  # the target carries its MTP layer
    draft: Path | None = None
    drafters: tuple[Drafter, ...] = ()

    def models(self) -> dict[str, Path]:
        """The matrices' [models] names."""
        out = {"target": self.target}
        if self.draft is not None:
            out["draft"] = self.draft
        out.update({f"drafter{i}": d.path for i, d in enumerate(self.drafters, 1)})
        return out

    def allowed(self) -> list[str]:
        """Every method these files can run, in methods.py's order."""
        have = set(NGRAMS) | ({"draft"} if self.draft else set()) | ({"mtp"} if self.mtp else set()) \
            | {d.method for d in self.drafters}
        return [m for m in methods.SPECULATIVE if m in have]


@dataclass
class Candidate:
    name: str
    family: str  # the Family's name
    settings: dict  # the cell's matrix keys (method, lengths, model role, p_min, ...)
    n_max: int  # the draft limit its profile is cut to (rank.derive)
    n_min: int = 0  # drafts shorter than this are dropped (ngram-mod's draft_min)

    @property
    def key(self) -> str:
        return json.dumps(self.settings, sort_keys=True)

    @property
    def method(self) -> str:
        return self.settings["method"]


@dataclass
class Family:
    name: str
    method: str
    pilot: Candidate  # the config that is measured for the whole family
    members: list[Candidate] = field(default_factory=list)


def _model_family(method: str, role: dict, label: str, cap: int | None, rates: list[float] | None,
                  p_min_ok: bool, parallel: int, n_batch: int) -> list[Family]:
    lengths = [n for n in MODEL_LENGTHS if (cap is None or n <= cap) and (rates is None or n <= len(rates))
               and parallel * (n + 1) <= n_batch]
    if not lengths:
        return []
    out = []
    for p_min in ((0.0, P_MIN) if p_min_ok else (0.0,)):
        mine = [n for n in lengths if p_min == 0 or n >= P_MIN_FROM]
        if not mine:
            continue
        fam = f"{label}" + (f" p_min={p_min:g}" if p_min else "")

        def cand(n: int) -> Candidate:
            s = {"method": method, **role, "draft_max": n, "draft_min": 0, "p_min": p_min}
            if rates is not None:
                s["synth_rates"] = [round(r, 6) for r in rates[:n]]
            return Candidate(f"{label} n={n}" + (f" p_min={p_min:g}" if p_min else ""), fam, s, n)

        members = [cand(n) for n in mine]
        out.append(Family(fam, method, members[-1], members))
    return out


def _ngram_families(method: str, parallel: int, n_batch: int, cap: int | None) -> list[Family]:
    """`cap`: --max-draft, which clamps the grid's lengths (to one config where several meet at it)."""
    out = []
    lengths = sorted({min(m, cap or m) for m in NGRAM_LENGTHS})
    limits = list(dict.fromkeys((min(lo, cap or lo), min(hi, cap or hi)) for lo, hi in MOD_LIMITS))
    if method == "ngram-cache":  # llama.cpp drafts 8 tokens and reads no limit
        c = Candidate("ngram-cache", "ngram-cache", {"method": method}, 8)
        return [Family("ngram-cache", method, c, [c])] if parallel * 9 <= n_batch else []
    if method == "ngram-mod":
        for n_match in MOD_MATCH:
            fam = f"ngram-mod n={n_match}"
            members = [Candidate(f"ngram-mod n={n_match} min={lo} max={hi}", fam,
                                 {"method": method, "n_match": n_match, "draft_min": lo, "draft_max": hi}, hi, lo)
                       for lo, hi in limits if parallel * (hi + 1) <= n_batch]
            if members:
                lo, hi = min(m.n_min for m in members), max(m.n_max for m in members)
                pilot = Candidate(f"ngram-mod n={n_match} min={lo} max={hi}", fam,
                                  {"method": method, "n_match": n_match, "draft_min": lo, "draft_max": hi}, hi, lo)
                out.append(Family(fam, method, pilot, members))
        return out
    for size_n in NGRAM_KEYS:
        fam = f"{method} n={size_n}"
        members = [Candidate(f"{method} n={size_n} m={m}", fam, {"method": method, "size_n": size_n, "size_m": m}, m)
                   for m in lengths if parallel * (m + 1) <= n_batch]
        if members:
            out.append(Family(fam, method, members[-1], members))
    return out


def build(files: Files, wanted: list[str] | None = None, accept: dict[str, list[float]] | None = None,
          parallel: int = 1, n_batch: int = 512, max_draft: int | None = None) -> list[Family]:
    """The families (and their candidates) of every method the files allow, or of `wanted` ones
    (each must be allowed: else one line). `accept`: a method's synthetic acceptance rates per
    draft position, standing in for real text (model drafters only); its lengths stop at the rates
    given. Configs whose verify batches at `parallel` streams would not fit n_batch, or that draft
    more than `max_draft` tokens, are left out."""
    if max_draft is not None:  # model drafters' lengths stop there, n-gram lengths are clamped to it
        n_batch = min(n_batch, parallel * (max_draft + 1))
    allowed = files.allowed()
    accept = accept or {}
    for m in wanted or ():
        if m not in methods.METHODS or m == "baseline":
            raise SpecsweepError(f"--methods: unknown method {m!r} (one of {', '.join(methods.SPECULATIVE)})")
        if m not in allowed:
            raise SpecsweepError(f"--methods {m}: {_why_not(m, files)}")
    for m in accept:
        if m in NGRAMS:
            raise SpecsweepError(f"--accept {m}: an n-gram method's acceptance comes from the text itself; give "
                                 f"synthetic acceptance for model drafters only")
        if m not in allowed:
            raise SpecsweepError(f"--accept {m}: {_why_not(m, files)}")
    chosen = [m for m in allowed if wanted is None or m in wanted]
    families: list[Family] = []
    for method in chosen:
        if method in NGRAMS:
            families += _ngram_families(method, parallel, n_batch, max_draft)
        elif method == "draft":
            families += _model_family("draft", {"draft": "draft"}, "draft", None, accept.get(method), True,
                                      parallel, n_batch)
        elif method == "mtp":
            families += _model_family("mtp", {}, "mtp", None, accept.get(method), True, parallel, n_batch)
        else:
            mine = [(i, d) for i, d in enumerate(files.drafters, 1) if d.method == method]
            for i, d in mine:
                label = method + (f" {d.path.stem}" if len(mine) > 1 else "")
                families += _model_family(method, {"drafter": f"drafter{i}"}, label, d.cap, accept.get(method),
                                          d.p_min_ok, parallel, n_batch)
    if not families:
        raise SpecsweepError("no candidate config: every method's draft is longer than n_batch allows at "
                             f"{parallel} streams" if chosen else "no method to tune")
    return families


def _why_not(method: str, files: Files) -> str:
    if method == "draft":
        return "needs a draft model (--draft FILE)"
    if method == "mtp":
        return f"{files.target.name} has no MTP layer"
    return f"needs a {method} drafter (--drafter FILE)"


def inspect(target: Path, draft: Path | None, drafters: tuple[Path, ...]) -> Files:
    """The files' facts from their GGUF headers: whether the target has its MTP layer, and each
    drafter's method and draft cap. Nothing loads."""
    from specsweep.models.drafter_fit import dspark_layout
    from specsweep.models.header import field, mtp_layers, open_gguf
    from specsweep.probe.calibrate import drafter_method

    mtp = mtp_layers(open_gguf(target, target.name)) > 0
    found = []
    for path in drafters:
        method = drafter_method(path)
        cap, p_min_ok = None, True
        if method == "dflash":
            cap = int(field(open_gguf(path, path.name), "dflash.block_size", 16)) - 1
        elif method == "dspark":
            layout = dspark_layout(path)
            cap, p_min_ok = layout.n_draft_max, layout.has_conf_head
        found.append(Drafter(path, method, cap, p_min_ok))
    return Files(target, mtp, draft, tuple(found))
