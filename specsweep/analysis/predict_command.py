"""`specsweep predict RESULTS... [--accept SPEC]... [--profiles PATH]...`: decode speed and speed-up
of speculative configs on a probed card, before they (or the model) run there, as a table (and JSON)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from specsweep.errors import SpecsweepError


def _ci(ci, fmt) -> str:
    return "" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def rows_text(preds) -> str:
    from specsweep.analysis.command import table

    head = ("config", "accept", "tok/s [95%]", "change [95%]", "measured here", "break-even a", "dominant",
            "draft cost from")
    rows = []
    for p in preds:
        m = p.measured
        rows.append((p.config + (" [synthetic acceptance]" if p.synthetic else ""), f"{p.acceptance:.1%}",
                     f"{p.tps:.1f} {_ci(p.tps_interval, lambda v: f'{v:.1f}')}",
                     f"{_pct(p.change)} {_ci(p.speedup_interval, lambda v: _pct(v - 1))}",
                     "" if not m else _pct(m["change"]),
                     "never" if p.break_even is None else f"{p.break_even:.0%}",
                     f"{p.dominant} {p.ms_per_token[p.dominant] / sum(p.ms_per_token.values()):.0%}",
                     _short(p.sources["draft"])))
    return table(head, rows)


def _short(source: str) -> str:
    return source.split(" (")[0] if len(source) > 60 else source


def render_text(groups) -> str:
    from specsweep.analysis import pools

    parts = []
    for data, preds, missing in groups:
        c = data.curve
        base = preds[0].baseline_tps if preds else 1e3 / c.t1
        head = (f"== {data.card} · {c.file} ({data.shape}), KV {c.kv}: T(1) {c.t1:.2f} ms, plain decoding "
                f"{base:.1f} tok/s predicted; shape switch +{c.switch:.2f} ms; {len(data.trials)} trial records "
                f"on this card ==")
        note = pools.fallback_note(data.pools(), c.file)
        parts.append(head + ("\n" + note if note else "") + "\n"
                     + (rows_text(preds) if preds else "(nothing could be predicted)"))
        parts.extend(f"  not predicted: {m}" for m in missing)
        notes = sorted({f"{k}: {v}" for p in preds for k, v in p.sources.items()
                        if k in ("verify", "rollback", "baseline")})
        parts.append("\n".join(f"  {n}" for n in notes))
    parts.append("tok/s and change: predicted for this card (95% bootstrap over the probe's passes and the trials "
                 "behind each cost: measurement noise, not the model's error, see docs/analysis.md); break-even a: "
                 "the per-token acceptance where the change is 0 with these costs; dominant: the largest term of the "
                 "time per token (draft, verify, rollback, switch, host).")
    return "\n\n".join(parts)


def to_json(groups) -> dict:
    out = []
    for data, preds, missing in groups:
        c = data.curve
        out.append({"card": data.card, "target": c.file, "shape": str(data.shape), "kv": c.kv, "t1_ms": c.t1,
                    "switch_ms": c.switch, "n_trials": len(data.trials), "probe_time": c.probe.get("time"),
                    "pools": [{"label": p.label, "trials": len(p.trials)} for p in data.pools()],
                    "predictions": [dataclasses.asdict(p) for p in preds], "not_predicted": missing})
    return {"kind": "prediction", "cards": out}


@click.command("predict")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--accept", "accept", multiple=True, metavar="SPEC",
              help='An acceptance profile: "mtp n2=0.8,0.6" (unconditional acceptance per draft position), '
                   '"dflash n4 L=3.2" (a mean accepted length), "draft:qwen3.5-0.8b n4=...", "... drafts=0.3" '
                   "(share of steps an n-gram method drafts on). Repeatable.")
@click.option("--profiles", "profile_paths", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Records, a contribution or a merged file whose configs' acceptance to use (default: the trials "
                   "in RESULTS); they must be of the probed target's shape.")
@click.option("--card", default=None, help="Predict for the probes of this card (a part of its name).")
@click.option("--target", default=None,
              help="The probed target: a part of its file name, a models.lock name or a synth card.")
@click.option("--kv", type=click.Choice(["q8_0", "f16"]), default="q8_0", show_default=True, help="KV cache type.")
@click.option("--gpus", "n_gpus", type=int, default=None, help="GPUs the probe ran on (0: the CPU; default: any).")
@click.option("--n-predict", type=int, default=None,
              help="Tokens per generation (default: a recorded config's own, else 512).")
@click.option("--rollback", type=click.Choice(["checkpoint", "snapshot"]), default=None,
              help="Rollback of a hybrid target for --accept profiles (default: the method's).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Also write every number as JSON to FILE.")
@click.option("--boot", type=int, default=200, show_default=True, help="Bootstrap resamples for the intervals.")
def predict(results, accept, profile_paths, card, target, kv, n_gpus, n_predict, rollback, json_path, boot) -> None:
    """Predict decode tok/s and speed-up of speculative configs on a card from its probe (`specsweep
    probe`, or `probe --synth NAME` before downloading the model) and an acceptance profile per
    config, with the break-even acceptance and the cost term that dominates. RESULTS: probe records
    and, optionally, trial records of the card (the loop's own costs) and of any card (acceptance)."""
    from specsweep.analysis import predict as pr
    from specsweep.analysis import profiles
    from specsweep.records.sources import load
    from specsweep.records.store import write_atomically

    if n_predict is not None and n_predict < 2:
        raise SpecsweepError(f"--n-predict must be at least 2, got {n_predict}")
    if boot < 0:
        raise SpecsweepError(f"--boot must be non-negative, got {boot}")
    given = [profiles.parse_accept(a) for a in accept]  # bad specs fail before anything is read
    sources = load(list(results))
    datas = pr.card_data(sources, card, target, kv, n_gpus)
    shapes = {d.shape for d in datas}
    if (given or profile_paths) and len(shapes) > 1:
        raise SpecsweepError(f"the probes hold {len(shapes)} target shapes ({'; '.join(sorted(map(str, shapes)))}): "
                             f"name one with --target")
    prof_sources = load(list(profile_paths)) if profile_paths else sources
    groups = []
    for data in datas:
        recorded = [] if given else pr.profiles_for(prof_sources, data.shape)
        if profile_paths and not given and not recorded:
            seen = sorted({str(sh) for s in prof_sources for t in s.trials if (sh := pr.lc.trial_shape(t))})
            raise SpecsweepError(f"the profiles in {', '.join(map(str, profile_paths))} are of another target shape "
                                 f"({'; '.join(seen) or 'unknown'}) than the probe of {data.curve.file} ({data.shape})")
        if not given and not recorded:
            raise SpecsweepError(f"no acceptance profile for {data.curve.file} ({data.shape}): give --accept SPEC "
                                 f"or --profiles with records of this target")
        preds, missing = [], []
        measured = pr.measured_rows(data.trials) if data.trials else {}
        for prof in given:
            try:
                preds.append(pr.predict_one(data, prof, n_predict or pr.N_PREDICT, rollback, n_boot=boot))
            except SpecsweepError as e:
                missing.append(f"{prof.label}: {e.message}")
        for prof, trials in recorded:
            how = pr.settings_of(trials)
            try:
                p = pr.predict_one(data, prof, n_predict or how["n_predict"], how["rollback"], how["loop"],
                                   base_loop=pr.base_loop_of(data.trials, how["loop"]), n_boot=boot)
            except SpecsweepError as e:
                missing.append(f"{prof.label}: {e.message}")
                continue
            here = [t for t in data.trials if t.get("cell") == prof.label]
            if here and str(here[0].get("cell_id")) in measured:
                p.measured = measured[str(here[0].get("cell_id"))]
            preds.append(p)
        groups.append((data, preds, missing))
    if not any(g[1] for g in groups):
        raise SpecsweepError(next(m for g in groups for m in g[2]))
    click.echo(render_text(groups))
    if json_path is not None:
        write_atomically(json_path, json.dumps(pr_clean(to_json(groups)), indent=1) + "\n")
        click.echo(f"wrote {json_path}", err=True)


def pr_clean(obj):
    from specsweep.analysis.analyze import _clean

    return _clean(obj)
