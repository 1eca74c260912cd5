"""The page's first screen: per target and card, which config wins, by how much with what certainty,
with which llama-server flags, where it breaks even, plain decoding's speed, and the config to
avoid. A merged community file gives one row per card.

Which config is "the best" (`pick`): the largest paired change among configs measured on real text,
if one of them wins; else among those run at llama.cpp's synthetic acceptance (the random-weight
stand-ins) below 100% acceptance, since a draft that is always right is a bound, not an outcome;
the verdict then says the acceptance was set, not the drafter's. Where nothing wins, the least
bad. The config to avoid: the drafter and draft length (arm) whose best config still loses, the one
that loses most.
"""

from __future__ import annotations

from dataclasses import dataclass

from specsweep import methods
from specsweep.analysis import costmodel
from specsweep.analysis.paired import PairedRow
from specsweep.analysis.records import acceptance_label
from specsweep.errors import SpecsweepError
from specsweep.models import placement
from specsweep.models.fit import Fit
from specsweep.report.scopes import Scope, arm_label
from specsweep.report.style import breakable, esc, share

PLACEMENT_INLINE = 60  # longer placement flags (-ot patterns) fold away
PERFECT = 0.995  # acceptance at which a synthetic config is a bound (every draft accepted)


@dataclass
class Answer:
    scope: Scope
    best: PairedRow | None
    line: costmodel.BreakEven | None  # the break-even line through the best config
    avoid: PairedRow | None  # the best config of the arm that loses most even at its best
    plain_tps: float | None  # plain decoding, as the best config was paired with it
    other_plain: list[float]  # the panel's other baselines (placements, backends, streams)
    flags: str  # the method's llama-server flags
    placement_flags: str  # the target's placement, where it was not llama.cpp's default


def pick(rows: list[PairedRow]) -> PairedRow | None:
    """The config the verdict names (see the module's docstring)."""
    real = [r for r in rows if not r.synthetic]
    bounded = [r for r in rows if r.synthetic and (r.acceptance is None or r.acceptance < PERFECT)]
    for pool in (real, bounded):  # the first kind in which something wins
        if pool and max(r.change for r in pool) > 0:
            return max(pool, key=lambda r: r.change)
    pool = real or bounded or rows
    return max(pool, key=lambda r: r.change) if pool else None


def to_avoid(rows: list[PairedRow]) -> PairedRow | None:
    best_of_arm: dict[str, PairedRow] = {}
    for r in rows:
        if r.arm not in best_of_arm or r.change > best_of_arm[r.arm].change:
            best_of_arm[r.arm] = r
    losers = [r for r in best_of_arm.values() if r.change < 0]
    return min(losers, key=lambda r: r.change) if losers else None


def server_flags(settings: dict, models: dict, block: dict | None = None) -> tuple[str, str]:
    """The llama-server flags a user adds to their own command line for this config: the method's
    and its draft model's, then the placement's (-ngl, -ot, --n-cpu-moe, or what a vram_budget's fit
    chose); synthetic acceptance, a measuring device, left out."""
    s = {k: v for k, v in settings.items() if k not in methods.SYNTH}
    spec = []
    for role in ("draft", "drafter"):
        m = models.get(role) or {}
        if m.get("file"):
            spec += ["-md", str(m["file"])]
    try:
        spec += methods.native_flags(methods.with_defaults(s))
    except (KeyError, TypeError):  # an unknown method or a setting older records lack
        spec += ["--spec-type", str(s.get("method"))]
    fit = (block or {}).get("fit")
    try:  # a vram_budget is shown as what the run's fit chose; without its record, as nothing
        placed = placement.placement_flags(s, Fit.from_record(fit) if fit else None)
    except SpecsweepError:
        placed = []
    return " ".join(spec), " ".join(placed)


def answer(scope: Scope) -> Answer:
    best = pick(scope.rows)
    plain = scope.panel.baselines(scope.source)  # sorted
    flags = placed = ""
    if best is not None:
        cfg = scope.configs[best.cell_id]
        flags, placed = server_flags(cfg.settings, cfg.models, scope.placements.get(best.cell_id))
    base = best.baseline_tps if best is not None else (plain[0] if plain else None)
    others = [b for b in plain if base is None or abs(b - base) > 0.05]
    return Answer(scope, best, scope.line_of(best) if best else None, to_avoid(scope.rows), base, others, flags,
                  placed)


def _interval(r: PairedRow) -> str:
    """The change's 95% t-interval and how many blocks (for sequential records: trial indices) it
    is over; nothing with one."""
    if r.t_interval is None:
        return f", {r.n_blocks} block" if r.n_blocks == 1 else ""
    unit = "blocks" if r.design == "blocks" else "pairs by trial index"
    return f" [{r.t_interval[0] * 100:+.0f}, {r.t_interval[1] * 100:+.0f}], {r.n_blocks} {unit}"


def _acceptance(r: PairedRow) -> str:
    if r.acceptance is None:
        return "nothing drafted"
    if not r.synthetic:
        return f"at {r.acceptance:.0%} acceptance"
    # the rate llama.cpp drew beside the one its settings asked for
    return f"at acceptance {acceptance_label(r.acceptance, r.configured_acceptance, '.0%')} (synthetic)"


def _break_even(be: costmodel.BreakEven | None, swept: bool) -> str:
    if be is None or be.acceptance is None:
        return "break-even not estimable" + (f" ({be.note.removeprefix('not estimable: ')})" if be else "")
    if not 0 <= be.acceptance <= 1:
        return "no break-even within 0-100%"
    ci = f" [{share(be.interval[0])}, {share(be.interval[1])}]" if be.interval else ""
    where = "its acceptance sweep" if swept else "a line across this target's configs"
    extra = ", extrapolated" if "extrapolated" in be.note else ""
    return f"break-even {be.acceptance:.0%} accepted{ci} (from {where}{extra})"


def verdict_html(a: Answer) -> str:
    """The verdict: escaped HTML, the numbers bold."""
    b = a.best
    if b is None:
        n = len([c for c in a.scope.configs.values() if c.method != "baseline"])
        return ("plain decoding only: no speculative config ran here" if not n else
                f"no speculative config paired with a baseline here ({n} ran)")
    change = f"{b.change * 100:+.0f}%{_interval(b)}"
    name = f"<b>{esc(arm_label(b))} {esc(change)}</b>"
    what = f"{esc(_acceptance(b))}, config <span class='mono'>{esc(a.scope.key(b))}</span>"
    line = esc(_break_even(a.line, a.scope.swept(b)))
    ambiguous = b.t_interval is not None and b.t_interval[0] < 0 < b.t_interval[1]
    if b.change <= 0:
        head = f"no config beats plain decoding; the best: {name} {what}"
    else:
        head = f"{name} over plain decoding {what}{' (its interval spans 0)' if ambiguous else ''}"
    flags = ""
    if a.flags and b.change > 0:
        flags = f"<br><span class='flags'>llama-server flags: <code>{esc(a.flags)}</code></span>"
        if len(a.placement_flags) > PLACEMENT_INLINE:  # tensor patterns: on demand
            n = a.placement_flags.count(",") + 1
            flags += (f"<details class='flags'><summary>and its placement ({n} tensor patterns)</summary>"
                      f"<code>{esc(a.placement_flags)}</code></details>")
        elif a.placement_flags:
            flags += f"<br><span class='flags'>placement: <code>{esc(a.placement_flags)}</code></span>"
    return f"{head}; {line}{flags}"


def avoid_html(a: Answer) -> str:
    r = a.avoid
    if r is None:
        return "no drafter loses at its best" if a.best is not None else ""
    return f"<b>{esc(arm_label(r))}</b>: {esc(f'{r.change * 100:+.0f}%')} even at its best, {esc(_acceptance(r))}"


def plain_html(a: Answer) -> str:
    if a.plain_tps is None:
        return ""
    others = (f"<br><span class='note'>other baselines here: {esc(', '.join(f'{x:.1f}' for x in a.other_plain))}"
              f"</span>" if a.other_plain else "")
    return f"<b>{a.plain_tps:.1f}</b> tok/s{others}"


def block_html(answers: list[Answer], warnings: list[str]) -> str:
    """The first screen's table (id specsweep-answer) and its key."""
    rows = []
    for a in answers:
        rows.append(f"<tr><td class='l'>{breakable(a.scope.panel.title)}<br><span class='note'>"
                    f"{breakable(a.scope.source)}</span></td><td class='l verdict'>{verdict_html(a)}</td>"
                    f"<td>{plain_html(a)}</td><td class='l'>{avoid_html(a)}</td></tr>")
    synthetic = any(r is not None and r.synthetic for a in answers for r in (a.best, a.avoid))
    key = ("Changes are paired: each config against plain decoding measured in the same block, the mean over "
           "blocks; [lo, hi] is its 95% t-interval over those blocks, so what varies inside it is the block "
           "(the order of the configs and the minutes between them), not the model or the prompts. A break-even "
           "is where a straight line of speed-up against acceptance crosses 1x, its interval a bootstrap over "
           "the configs on that line.")
    if any(a.best is not None and a.best.design != "blocks" for a in answers):
        key += (" Records without blocks (the sequential design) pair a config's trial with the baseline's of the "
                "same index: the same prompt, not the same minutes, so drift between configs stays in.")
    if synthetic:
        key += (" Synthetic: llama.cpp accepted the drafts at random at a set rate (random-weight stand-ins), "
                "so the acceptance there is a setting, not the drafter's: \"drawn\" is the share its random draws "
                "accepted, \"set\" the rate asked for; the speed at the drawn acceptance is measured.")
    warn = "".join(f"<li class='warn'>{w}</li>" for w in warnings)
    return ("<section id='specsweep-answer'>\n<h2>The answer</h2>\n<div style='overflow-x:auto'>"
            "<table class='data answer'><tr><th class='l'>target · KV, card</th><th class='l'>best config</th>"
            "<th>plain decoding</th><th class='l'>to avoid</th></tr>"
            + "".join(rows) + "</table></div>\n"
            + (f"<ul class='verdicts'>{warn}</ul>\n" if warn else "")
            + f"<p class='note'>{esc(key)}</p>\n</section>\n")
