"""`specsweep analyze RESULTS... [--json FILE]`: paired changes, the cost model, the break-even
acceptance and the expert-coverage verdicts, as text (and JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from specsweep.errors import SpecsweepError


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def _ci(ci, fmt=_pct) -> str:
    return "" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _num(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Left-aligned first column, the rest right-aligned, a rule under the header."""
    rows = [head] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def paired_text(a) -> str:
    from specsweep.analysis import records as rec

    head = ("config", "design", "kept", "N blocks", "pairs", "tok/s mean (min-max)", "change", "t-interval",
            "bootstrap", "accept", "runs: spread (min..max)", "throttled")
    rows = []
    for r in a.paired:
        spread = ("" if not r.run_spread else
                  f"{r.run_spread['n_runs']}: sd {r.run_spread['stdev']:.1%} "
                  f"({_pct(r.run_spread['min'])}..{_pct(r.run_spread['max'])})")
        rows.append((r.cell + (" [synthetic acceptance]" if r.synthetic else ""),
                     "seq" if r.design == "sequential" else r.design, str(r.n_kept), str(r.n_blocks),
                     str(r.n_pairs), f"{r.tps_mean:.1f} ({r.tps_min:.1f}-{r.tps_max:.1f})", _pct(r.change) or "n/a",
                     _ci(r.t_interval), _ci(r.bootstrap_interval),
                     rec.acceptance_label(r.acceptance, r.configured_acceptance), spread,
                     f"{r.n_throttled}/{r.n_kept}" if r.n_throttled else ""))
    out = ["Paired change against the baseline of the same block and prompt (95% intervals over blocks):",
           table(head, rows) if rows else "(no speculative configs)"]
    if a.unpaired:
        shown = "; ".join(f"{u.cell} (run {u.run}, block {u.block}, {u.prompt_id}: {u.reason})"
                          for u in a.unpaired[:5])
        out.append(f"cannot be paired: {len(a.unpaired)} trial(s): {shown}{' ...' if len(a.unpaired) > 5 else ''}")
    return "\n".join(out)


def fits_text(a) -> str:
    head = ("target · family", "trials", "lengths", "x range", "intercept ms [95%]", "slope ms/draft tok [95%]",
            "R^2", "baseline ms")
    rows = []
    for f in a.fits:
        fit = f.fit
        rows.append((f"{f.target} · {f.label}", str(f.n_trials), str(f.n_levels),
                     f"{f.x_range[0]:.2f}-{f.x_range[1]:.2f}",
                     f"{fit.intercept:.2f} {_ci(fit.intercept_ci, lambda v: f'{v:.2f}')}" if fit else f.note,
                     f"{fit.slope:.3f} {_ci(fit.slope_ci, lambda v: f'{v:.3f}')}" if fit else "",
                     _num(fit.r2) if fit else "", _num(f.baseline_ms, 2)))
    return ("Cost model: ms per generated token = intercept + slope x (draft tokens per generated token), per trial:\n"
            + (table(head, rows) if rows else "(no speculative trials)"))


def break_even_text(a) -> str:
    lines = ["Break-even acceptance (speed-up = paired change + 1, a line over the speculative configs):"]
    for b in a.break_even:
        line = "" if b.fit is None else f"speed-up = {b.fit.intercept:.3f} + {b.fit.slope:.3f} a (R^2 {b.fit.r2:.2f}); "
        value = ("" if b.acceptance is None else
                 f"break-even at {b.acceptance:.1%}" + ("" if b.interval is None else
                                                        f" [{b.interval[0]:.1%}, {b.interval[1]:.1%}] bootstrap"))
        tail = "; ".join(x for x in (value, b.note) if x)
        lines.append(f"  {b.target}: {b.n_configs} configs; {line}{tail}")
    if not a.break_even:
        lines.append("  (no speculative config that drafted and was paired)")
    return "\n".join(lines)


def coverage_text(a) -> str:
    lines = ["Expert coverage (does time per token bend where a verify's expert union saturates?):"]
    for f in a.fits:
        if f.knee is not None:
            lines.append(f"  {f.target} · {f.label}: {f.knee.verdict}")
        if f.knee_formula is not None and f.knee_formula.status != "untested":
            lines.append(f"    on the i.i.d. formula instead: {f.knee_formula.verdict}")
        if f.knee_configured is not None and f.knee_configured.status != "untested":
            lines.append(f"    at the configured draft length, as the audit counted it: {f.knee_configured.verdict}")
        if f.pass_test is not None:
            lines.append(f"    per traced pass (time against K): {f.pass_test.verdict}")
    return "\n".join(lines)


def union_text(a) -> str:
    """Measured U(K) against the formula, per traced family."""
    parts = []
    for f in a.fits:
        if not f.union:
            continue
        head = ("K", "passes", "measured", "sd", "layers min-max", "i.i.d. at K", "i.i.d. at distinct", "expert MB",
                "pass ms")
        rows = [(str(r.k), str(r.n_passes), f"{r.coverage:.1%}", f"{r.coverage_sd:.1%}",
                 f"{r.layer_min:.0%}-{r.layer_max:.0%}", f"{r.iid:.1%}", f"{r.iid_distinct:.1%}", f"{r.expert_mb:.1f}",
                 _num(r.verify_ms, 2)) for r in f.union]
        parts.append(f"Traced expert union, {f.target} · {f.label} (share of a layer's experts a verify of K tokens "
                     f"read, averaged over layers):\n" + table(head, rows))
    return "\n\n".join(parts)


def probe_knee_text(probes: list[dict]) -> str:
    """The knee on traced probes: T(K) against the K where the batch's traced union saturates."""
    from specsweep.analysis import union
    lines = []
    for p in probes:
        if (t := union.probe_knee(p)) is not None:
            lines.append(f"  {t.file} ({t.device}, K {t.k_range[0]}-{t.k_range[1]}): {t.verdict}")
    return ("Traced probes (does T(K) bend where the batch's measured expert union reaches 95%?):\n" + "\n".join(lines)
            if lines else "")


def render_text(analyses) -> str:
    parts = []
    for a in analyses:
        head = (f"== {a.source}: {a.n_trials} trials ({a.n_kept} kept), design {'/'.join(a.designs) or '-'}"
                f"{f', {a.n_runs} runs' if a.n_runs > 1 else ''} ==")
        parts.append("\n\n".join([head] + [f"note: {n}" for n in a.notes] +
                                 [paired_text(a), fits_text(a), break_even_text(a), coverage_text(a)] +
                                 ([u] if (u := union_text(a)) else [])))
    return "\n\n\n".join(parts)


@click.command("analyze")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Also write every number as JSON to FILE.")
@click.option("--require-paired", is_flag=True,
              help="Fail (exit 2) if any speculative trial has no baseline in its own block.")
@click.option("--seed", type=int, default=None, help="Bootstrap seed (default: fixed, so reruns agree).")
def analyze(results: tuple[Path, ...], json_path: Path | None, require_paired: bool, seed: int | None) -> None:
    """Paired changes with intervals, the cost model (ms per token against draft tokens per token),
    the break-even acceptance and the MoE expert-coverage knee test, from RESULTS: results folders,
    trials or probe JSONL files, contribution files or a merged community file."""
    from specsweep.analysis import analyze as an
    from specsweep.analysis import paired
    from specsweep.records.sources import load
    from specsweep.records.store import write_atomically

    sources = load(list(results))
    knees = probe_knee_text([p for s in sources for p in s.probes])
    if not any(s.trials for s in sources) and not knees:
        raise SpecsweepError("no trial records or traced probes in " + ", ".join(str(p) for p in results))
    if require_paired:
        for s in sources:
            paired.require_paired(s.trials)
    analyses = an.analyze(sources, seed=paired.SEED if seed is None else seed)
    click.echo("\n\n".join(t for t in (render_text(analyses), knees) if t))
    if json_path is not None:
        write_atomically(json_path, json.dumps(an.to_json(analyses), indent=1) + "\n")
        click.echo(f"wrote {json_path}", err=True)
