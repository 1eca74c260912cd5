"""Acceptance profiles: how a drafter's drafts fare, position by position, the input of `predict`.

A profile says, for one method at one draft limit n:
- `cond[i]`: the probability that draft position i is accepted given that positions < i were
  (llama.cpp's synthetic acceptance draws exactly these, `acceptance.conditional`);
- `lengths`: how long its drafts are, P(length = l) for l = 1..n, or empty for a drafter that
  always drafts n tokens (a draft model, MTP, DFlash, EAGLE-3 with p_min 0);
- `draft_rate`: the share of steps on which it drafts anything (1 for a model drafter; an n-gram
  method drafts only where its table matches).

Acceptance is a property of the weights and the text, not of the card: a profile measured on one
card (records, a contribution) or published (the command line) predicts another card. Where a
profile comes from:
- records with synthetic acceptance: the configured rates (`synth_rates`, or `synth_len` resolved
  as llama.cpp resolves it), which is what the draws were made from;
- other records: `accepted_by_pos / drafted_by_pos` per position, the drafts' lengths from
  `drafted_by_pos` (n-gram methods) and the share of drafting steps;
- the command line: `"mtp n2=0.8,0.6"` (unconditional rates per position, as `--spec-synth-rates`
  takes them), `"mtp n3 L=2.5"` (a mean accepted length, resolved as llama.cpp does),
  optionally `drafter=NAME` (which drafter's cost to use) and `drafts=F` (the drafting share).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from specsweep import acceptance, methods
from specsweep.analysis import records as rec
from specsweep.errors import SpecsweepError
from specsweep.records.attempts import kept


@dataclass(frozen=True)
class Profile:
    method: str
    n_max: int
    cond: tuple[float, ...]  # conditional acceptance per draft position, n_max values
    lengths: tuple[float, ...] = ()  # P(draft length = l), l = 1..n_max; () = always n_max
    draft_rate: float = 1.0  # share of drafting steps that draft anything
    drafter: str = ""  # the drafter whose cost applies ("" = the method's only one)
    label: str = ""  # the config's name
    source: str = ""  # where the profile comes from
    synthetic: bool = False

    @property
    def rates(self) -> list[float]:
        """Unconditional P(position i accepted) of a full draft."""
        out, p = [], 1.0
        for c in self.cond:
            p *= c
            out.append(p)
        return out

    @property
    def acceptance(self) -> float:
        """Expected accepted over drafted tokens."""
        lengths = self.lengths or tuple([0.0] * (self.n_max - 1) + [1.0])
        rates = self.rates
        drafted = sum(p * (i + 1) for i, p in enumerate(lengths))
        accepted = sum(p * sum(rates[: i + 1]) for i, p in enumerate(lengths))
        return accepted / drafted if drafted else 0.0

    def with_cond(self, cond: list[float]) -> "Profile":
        return Profile(self.method, self.n_max, tuple(cond), self.lengths, self.draft_rate, self.drafter,
                       self.label, self.source, self.synthetic)


def cond_from_rates(rates: list[float]) -> list[float]:
    return acceptance.conditional(list(rates))


def _check_rates(rates: list[float], n_max: int, what: str) -> None:
    if len(rates) > n_max:
        raise SpecsweepError(f"{what}: {len(rates)} acceptance rates for a draft length of {n_max}: a profile "
                             f"cannot be longer than the draft")
    if len(rates) < n_max:
        raise SpecsweepError(f"{what}: {len(rates)} acceptance rates for a draft length of {n_max}: give one "
                             f"per draft position")
    for i, r in enumerate(rates):
        if not 0.0 <= r <= 1.0:
            raise SpecsweepError(f"{what}: acceptance rates must be within [0, 1], got {r}")
        if i and r > rates[i - 1] + 1e-12:
            raise SpecsweepError(f"{what}: unconditional rates cannot rise with the position ({rates[i - 1]} then {r})")


_SPEC = re.compile(r"^\s*(?P<method>[a-z0-9-]+)(?::(?P<drafter>\S+))?\s+n(?P<n>\d+)\s*(?:=\s*(?P<rates>[0-9.,\s]+?))?"
                   r"(?P<rest>(?:\s+[A-Za-z_]+=\S+)*)\s*$")


def parse_accept(text: str) -> Profile:
    """`METHOD[:DRAFTER] nN=r1,...,rN [drafts=F]` or `METHOD nN L=LEN`: one config's profile."""
    m = _SPEC.match(text or "")
    if not m:
        raise SpecsweepError(f"--accept {text!r}: expected like \"mtp n2=0.8,0.6\" or \"dflash n4 L=3.2\" "
                             f"(method, draft length, unconditional acceptance per position)")
    method, n = m["method"], int(m["n"])
    if method not in methods.SPECULATIVE:
        raise SpecsweepError(f"--accept {text!r}: unknown method {method!r} (one of {', '.join(methods.SPECULATIVE)})")
    if n < 1:
        raise SpecsweepError(f"--accept {text!r}: the draft length must be at least 1")
    extra = dict(kv.split("=", 1) for kv in (m["rest"] or "").split())
    unknown = set(extra) - {"L", "drafts", "drafter"}
    if unknown:
        raise SpecsweepError(f"--accept {text!r}: unknown setting {sorted(unknown)[0]!r} (L, drafts, drafter)")
    try:
        if m["rates"] is not None and "L" in extra:
            raise SpecsweepError(f"--accept {text!r}: give rates or L, not both")
        if m["rates"] is not None:
            rates = [float(x) for x in m["rates"].replace(" ", "").split(",") if x]
        elif "L" in extra:
            rates = acceptance.resolve_rates(float(extra["L"]), None, n)
        else:
            raise SpecsweepError(f"--accept {text!r}: give the rates (n{n}=r1,...) or L=LEN")
        rate = float(extra.get("drafts", 1.0))
    except ValueError:
        raise SpecsweepError(f"--accept {text!r}: rates, L and drafts are numbers") from None
    _check_rates(rates, n, f"--accept {text!r}")
    if not 0.0 < rate <= 1.0:
        raise SpecsweepError(f"--accept {text!r}: drafts= is a share of steps within (0, 1]")
    drafter = m["drafter"] or extra.get("drafter", "")
    return Profile(method, n, tuple(cond_from_rates(rates)), (), rate, drafter,
                   label=f"{method}{' ' + drafter if drafter else ''} n={n} (given)", source="command line")


def drafts_full(method: str, settings: dict) -> bool:
    """Whether a method's drafts always have their full length: a model drafter with no p_min."""
    m = methods.METHODS.get(method)
    return bool(m and m.context is not None and not float(settings.get("p_min") or 0.0))


def n_max_of(trial: dict) -> int:
    s = trial.get("settings") or {}
    method = methods.METHODS.get(str(trial.get("method")))
    n = None
    if method is not None and method.speculative:
        try:
            n = int(method.n_max(methods.with_defaults({**s, "method": method.name})))
        except (KeyError, TypeError, ValueError):
            n = None
    pos = len(trial.get("drafted_by_pos") or [])
    if n is None:
        return pos
    return n


def from_trials(trials: list[dict], measured: bool = False) -> Profile | None:
    """The profile of one config from its trials (None without usable trials): the configured
    rates of synthetic acceptance (or, with `measured`, what its draws gave), else per-position
    counts. How often and how long an n-gram method drafts comes from the records either way
    (synthetic acceptance decides only the drafts a drafter makes); one that never drafted has a
    drafting share of 0."""
    trials = [t for t in trials if rec.usable(t)]
    if not trials:
        return None
    first = trials[0]
    method, s = str(first.get("method")), dict(first.get("settings") or {})
    n = max(n_max_of(first), 1)
    label, synthetic = str(first.get("cell")), rec.synthetic(first)
    drafter = drafter_key(first)
    drafted, accepted = _summed(trials, "drafted_by_pos"), _summed(trials, "accepted_by_pos")
    n = max(n, len(drafted))
    drafted += [0] * (n - len(drafted))
    accepted += [0] * (n - len(accepted))
    full = drafts_full(method, s)
    if not drafted[0] and not full:
        return Profile(method, n, tuple([0.0] * n), (), 0.0, drafter, label, "drafted nothing", synthetic)
    if full:
        lengths: tuple[float, ...] = ()
        rate = 1.0
    else:
        total = drafted[0]
        lengths = tuple((drafted[i] - (drafted[i + 1] if i + 1 < n else 0)) / total for i in range(n))
        chances = sum(float(t.get("n_steps") or 0) - float(t.get("n_rollbacks") or 0) for t in trials)
        rate = min(total / chances, 1.0) if chances > 0 else 1.0
    if synthetic and not measured and (s.get("synth_len") is not None or s.get("synth_rates")):
        rates = acceptance.resolve_rates(s.get("synth_len"), s.get("synth_rates"), n)
        return Profile(method, n, tuple(cond_from_rates(rates)), lengths, rate, drafter, label,
                       "configured synthetic rates", True)
    if not drafted[0]:
        return None
    reach = [a / d if d else 0.0 for a, d in zip(accepted, drafted)]  # P(accepted at i | drafted at i)
    cond = [min(c, 1.0) for c in acceptance.conditional(reach)]
    return Profile(method, n, tuple(cond), lengths, rate, drafter, label,
                   "measured draws" if synthetic else "measured per position", synthetic)


def _summed(trials: list[dict], key: str) -> list[float]:
    out: list[float] = []
    for t in trials:
        for i, v in enumerate(t.get(key) or []):
            if i >= len(out):
                out.append(0.0)
            out[i] += float(v)
    return out


def drafter_key(trial: dict) -> str:
    """What drafts, for its cost: the method and the drafting model's shape. A synthetic model is
    named by its shape card (a copy and a perturbed copy cost the same), a real one by its file."""
    models = trial.get("models") or {}
    for role in ("draft", "drafter"):
        m = models.get(role) or {}
        ref = str(m.get("ref") or "")
        if ref.startswith("synth "):
            return ref.split()[1]
        name = m.get("file") or m.get("name")
        if name:
            return str(name)
    return ""


def by_config(trials: list[dict], measured: bool = False) -> dict[str, Profile]:
    """cell_id -> profile, for every speculative config that drafted."""
    cells: dict[str, list[dict]] = defaultdict(list)
    for t in kept(trials):
        if not rec.is_baseline(t):
            cells[str(t.get("cell_id"))].append(t)
    out = {}
    for cid, mine in cells.items():
        p = from_trials(mine, measured)
        if p is not None:
            out[cid] = p
    return out
