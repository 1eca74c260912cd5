"""What the analysis reads from a trial record, with every newer field optional.

Which attempts count, and a trial's run and block, are specsweep/records/attempts.py's. Older records
have no `design`: they are paired by index ("sequential": the cells ran one after another, so a pair
shares an index, not a moment).
"""

from __future__ import annotations

from collections import defaultdict

from specsweep.models import placement
from specsweep.records.attempts import kept


def design_of(r: dict) -> str:
    d = r.get("design")
    if d:
        return str(d)
    return "blocks" if r.get("block") is not None else "sequential"


def usable(r: dict) -> bool:
    """A trial that measured something: positive speed and tokens generated."""
    try:
        return float(r.get("decode_tps") or 0) > 0 and int(r.get("n_generated") or 0) > 0
    except (TypeError, ValueError):
        return False


def is_baseline(r: dict) -> bool:
    return r.get("method") == "baseline"


def speculative_by(trials: list[dict], field: str = "cell_id") -> dict[str, list[dict]]:
    """The kept, usable speculative trials grouped by a field (`cell_id`, or `cell`: the config's
    name, which several cards share), in the order first seen."""
    out: dict[str, list[dict]] = {}
    for r in kept(trials):
        if usable(r) and not is_baseline(r):
            out.setdefault(str(r.get(field)), []).append(r)
    return out


def target_key(r: dict) -> str:
    """One target model: its sha256, else its file, else its name."""
    t = (r.get("models") or {}).get("target") or {}
    return str(t.get("sha256") or t.get("file") or t.get("name") or "unknown target")


def target_label(r: dict) -> str:
    t = (r.get("models") or {}).get("target") or {}
    return str(t.get("file") or t.get("name") or t.get("sha256") or "unknown target")


def target_labels(trials: list[dict]) -> dict[str, str]:
    """target_key -> what to call it: its file, with the sha256's first 8 digits where two different
    models share a file name (a synthetic model rewritten between sessions, say)."""
    files: dict[str, set[str]] = defaultdict(set)
    for r in trials:
        files[target_label(r)].add(target_key(r))
    out = {}
    for label, keys in files.items():
        for k in keys:
            out[k] = label if len(keys) == 1 else f"{label} (sha256 {k[:8]})"
    return out


def family(r: dict) -> str:
    """The drafter family: the method and the model that drafts (a draft model or a drafter such as
    DFlash's), if any, and what ran it where that is not one stream in process (a server's token
    and four streams' aggregate cost otherwise than one stream's). Synthetic-acceptance trials are
    not split off: the drafter's cost is the same."""
    models = r.get("models") or {}
    method = str(r.get("method") or "?")
    label = method
    for role in ("draft", "drafter"):
        m = models.get(role) or {}
        name = m.get("name") or m.get("file")
        if name:
            label = f"{method} · {name}"
            break
    return label + run_by(r)


def run_by(r: dict) -> str:
    """" [server]", " xN" and " [placement]" for a record run through llama-server, with N streams
    or with the target's weights placed otherwise than llama.cpp's default, else ""."""
    s = r.get("settings") or {}
    out = " [server]" if (r.get("backend") or s.get("backend")) == "server" else ""
    streams = int(s.get("parallel") or 1)
    placed = placement_of(r)
    return out + (f" x{streams}" if streams > 1 else "") + (f" [{placed}]" if placed else "")


def placement_of(r: dict) -> str:
    """Where a trial's or probe's target weights were, as a label ("" for every layer on the GPU(s),
    llama.cpp's default). Expert offload moves the verify cost itself, so records placed
    differently never share a cost line or a probe."""
    block, settings = r.get("placement") or {}, r.get("settings") or {}
    return placement.label({k: block.get(k, settings.get(k)) for k in placement.TARGET_KEYS})


def variant(r: dict) -> tuple[str, str]:
    """Settings that change the cost per token for the same target and drafter: KV type and
    rollback mode (checkpoint rollbacks decode accepted tokens twice on a hybrid target)."""
    s = r.get("settings") or {}
    return str(s.get("kv") or "?"), str(s.get("rollback") or r.get("rollback") or "?")


def ms_per_token(r: dict) -> float:
    return 1000.0 / float(r["decode_tps"])


def draft_per_token(r: dict) -> float:
    return float(r.get("n_drafted") or 0) / float(r["n_generated"])


def draft_max(r: dict) -> int | None:
    v = (r.get("settings") or {}).get("draft_max")
    if v is None:
        pos = r.get("drafted_by_pos") or []
        return len(pos) or None
    return int(v)


def throttled(r: dict) -> bool:
    return bool((r.get("telemetry") or {}).get("throttled"))


def synthetic(r: dict) -> bool:
    return bool(r.get("synthetic"))


def configured_acceptance(r: dict) -> float | None:
    """What a synthetic-acceptance trial's settings ask for, as accepted / drafted of full-length
    drafts: the mean of llama.cpp's resolved per-position rates (None without synthetic acceptance
    or with settings that do not resolve)."""
    from specsweep.acceptance import resolve_rates
    from specsweep.errors import SpecsweepError

    s = r.get("settings") or {}
    if s.get("synth_len") is None and not s.get("synth_rates"):
        return None
    n = len(s["synth_rates"]) if s.get("synth_rates") else int(s.get("draft_max") or 0)
    try:
        rates = resolve_rates(s.get("synth_len"), s.get("synth_rates"), n)
    except SpecsweepError:
        return None
    return sum(rates) / len(rates) if rates else None


def acceptance_label(realized: float | None, configured: float | None, fmt: str = ".1%") -> str:
    """A config's acceptance; a synthetic one's as drawn beside what its settings ask for ("55.0%
    drawn, 50.0% set"), so that `analyze`, the run's table and the page say it alike."""
    if configured is None:
        return "" if realized is None else format(realized, fmt)
    return ("" if realized is None else f"{realized:{fmt}} drawn, ") + f"{configured:{fmt}} set"


CALIBRATION_PREFIX = "calibrate-"  # the matrix name of `specsweep probe --calibrate`'s runs


def is_calibration(r: dict) -> bool:
    """A trial of a card's calibration run (`specsweep probe --calibrate`)."""
    return str(r.get("matrix") or "").startswith(CALIBRATION_PREFIX)


def one_stream_in_process(r: dict) -> bool:
    """A trial of one stream in specsweep's own loop: what `predict`'s loop model describes and
    fits (a server's trials have no time split, several streams share their passes)."""
    s = r.get("settings") or {}
    return (r.get("backend") or s.get("backend") or "inprocess") == "inprocess" and int(s.get("parallel") or 1) == 1
