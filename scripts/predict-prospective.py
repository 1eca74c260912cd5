#!/usr/bin/env python3
"""A prospective check of `specsweep predict`: a matrix's configs predicted before it runs, and the
comparison once it has (no GPU).

   python3 scripts/predict-prospective.py predict MATRIX RESULTS... --out FILE.json [--boot N] [--target T] [--gpus N]
   python3 scripts/predict-prospective.py compare MATRIX MEASURED_DIR PREDICTED.json... [--out FILE.md]

`predict` turns each speculative cell of MATRIX into an `--accept` profile (its configured
synthetic rates, its drafter, its draft length) and runs `specsweep predict RESULTS... --target T
--gpus 1 --n-predict N --json` on them, for every card RESULTS has a one-GPU probe of the matrix's
target shape on; FILE.json keeps the command, the engine that ran it, the matrix's hash and every
prediction. `compare` pairs the measured configs (paired change against their block's baseline)
with each predictions file's predictions for the card they ran on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specsweep import acceptance, methods  # noqa: E402
from specsweep.analysis import predict_validation as pv  # noqa: E402
from specsweep.analysis.profiles import parse_accept  # noqa: E402
from specsweep.matrix import load as matrix_load  # noqa: E402
from specsweep.matrix.cells import placement_label  # noqa: E402


def accept_spec(cell) -> str:
    """The cell's configured acceptance as predict's --accept: METHOD[:DRAFTER] nN=r1,...,rN."""
    s = cell.settings
    n = methods.get(cell.method).n_max(s)
    rates = acceptance.resolve_rates(s.get("synth_len"), s.get("synth_rates"), n)
    ref = cell.models.get("draft") or cell.models.get("drafter")
    drafter = ""
    if ref is not None:
        drafter = ref.identity.get("synth") or ref.name
    return f"{cell.method}{':' + drafter if drafter else ''} n{n}=" + ",".join(f"{r:.6g}" for r in rates)


def target_name(matrix) -> str:
    ref = next(iter({c.models["target"] for c in matrix.cells}))
    return ref.identity.get("synth") or ref.name


def predict(args) -> None:
    from click.testing import CliRunner

    from specsweep.cli import main
    from specsweep.records.manifest import engine

    matrix = matrix_load.load(args.matrix)
    cells = [c for c in matrix.cells if c.method != "baseline"]
    if any(c.settings.get("synth_len") is None and not c.settings.get("synth_rates") for c in cells):
        raise SystemExit("every speculative cell needs synthetic acceptance (its profile is what it sets)")
    n_predict = {c.settings["n_predict"] for c in cells}.pop()
    specs = [accept_spec(c) for c in cells]
    command = ["predict", *map(str, args.results), "--target", args.target or target_name(matrix), "--gpus", args.gpus,
               "--n-predict", str(n_predict), "--boot", str(args.boot), "--json", str(args.out)]
    for spec in specs:
        command += ["--accept", spec]
    out = CliRunner().invoke(main, command)
    if out.exit_code != 0:
        raise SystemExit(out.output)
    doc = json.loads(Path(args.out).read_text())
    # the cards of the matrix's placement only (every layer on the GPU: no " [cpu-moe 20]" label)
    placed = {placement_label(c.settings).strip() for c in matrix.cells}
    doc["cards"] = [c for c in doc["cards"] if (c["card"].endswith("]") and c["card"].rsplit(" [", 1)[1][:-1] in placed)
                    or (not c["card"].endswith("]") and "" in placed)]
    for card in doc["cards"]:  # which prediction is which cell: given in order, each matched by its profile
        preds, out_ = list(card["predictions"]), []
        for cell, spec in zip(cells, specs):
            p = parse_accept(spec)
            hit = next((x for x in preds if x["config"] == p.label and abs(x["acceptance"] - p.acceptance) < 1e-9), None)
            if hit is not None:
                preds.remove(hit)
                hit["cell"] = cell.name
            out_.append(hit)
        card["by_cell"] = out_
        del card["predictions"]
    text = Path(args.matrix).read_text()
    Path(args.out).write_text(json.dumps({
        "kind": "prospective-prediction", "matrix": matrix.name, "matrix_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "made": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "engine": engine(), "command": ["specsweep", *command],
        "cells": [{"cell": c.name, "accept": s} for c, s in zip(cells, specs)], "prediction": doc}, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text(summary_md(matrix.name, json.loads(Path(args.out).read_text()),
                                                            Path(args.out).name))
    print(out.output)


def summary_md(name: str, doc: dict, json_name: str) -> str:
    """The predictions as a table per card (beside the JSON)."""
    lines = [f"# {name}: predicted before the run", "",
             f"Made {doc['made']} by `{' '.join(doc['command'][:2])} ...` (the full command and every number: "
             f"`{json_name}` beside this file), engine {doc['engine']['specsweep_source']} "
             f"(git {doc['engine']['specsweep_git']}), for the matrix of sha256 {doc['matrix_sha256'][:16]}. "
             f"Change: predicted speed-up - 1 against plain decoding, with its 95% bootstrap interval (measurement "
             f"noise of the probe and the costs, not the model's error).", ""]
    for card in doc["prediction"]["cards"]:
        lines += [f"## {card['card']} (probe of {card['target']}, T(1) {card['t1_ms']:.2f} ms)", ""]
        if card.get("pools"):
            lines += ["Loop costs from, in order: " + "; ".join(f"{p['label']} ({p['trials']} trials)"
                                                          for p in card["pools"][:4]) + ".", ""]
        lines += ["| config | accept | change [95%] | plain decoding tok/s | draft cost from |", "|---|---|---|---|---|"]
        for p in card["by_cell"]:
            if p is None:
                continue
            lo, hi = p["speedup_interval"] or (p["speedup"], p["speedup"])
            lines.append(f"| {p['cell']} | {p['acceptance']:.1%} | {p['speedup'] - 1:+.1%} [{lo - 1:+.1%}, {hi - 1:+.1%}] | "
                         f"{p['baseline_tps']:.1f} | {p['sources']['draft'].split(': ')[0]} |")
        lines.append("")
    return "\n".join(lines)


def compare(args) -> None:
    from specsweep.analysis import predict as pr
    from specsweep.records.sources import load, trial_card

    matrix = matrix_load.load(args.matrix)
    (src,) = load([args.measured])
    measured = pr.measured_rows(src.trials)
    by_name = {str(t.get("cell")): str(t.get("cell_id")) for t in src.trials}
    cards = {trial_card(t, src.manifests) for t in src.trials}
    lines = [f"# {matrix.name}: predicted before the run against measured", "",
             f"Measured on {', '.join(sorted(c for c in cards if c))} ({args.measured}); paired change against the "
             f"baseline of the same block, 95% t-interval over blocks. Errors in points of speed-up.", ""]
    summary = {}
    for path in args.predicted:
        doc = json.loads(Path(path).read_text())
        for card in doc["prediction"]["cards"]:
            if card["card"] not in cards:
                continue
            rows, errs = [], []
            for p in card["by_cell"]:
                if p is None or p["cell"] not in by_name or by_name[p["cell"]] not in measured:
                    continue
                m = measured[by_name[p["cell"]]]
                err = 100 * (p["speedup"] - 1 - m["change"])
                sign = None if abs(m["change"]) <= pv.THRESHOLD else (p["speedup"] > 1) == (m["change"] > 0)
                errs.append((err, sign))
                ci = m["interval"]
                rows.append(f"| {p['cell']} | {m['change']:+.1%} [{ci[0]:+.1%}, {ci[1]:+.1%}] | {p['speedup'] - 1:+.1%} | "
                            f"{err:+.1f}{' (sign)' if sign is False else ''} | {m['acceptance']:.1%} |"
                            if ci else f"| {p['cell']} | {m['change']:+.1%} | {p['speedup'] - 1:+.1%} | {err:+.1f} | |")
            base = next((m["baseline_tps"] for m in measured.values()), None)
            pred_base = next((p["baseline_tps"] for p in card["by_cell"] if p), None)
            signed = [s for _, s in errs if s is not None]
            s = {"cells": len(errs), "median_abs_error_points": statistics.median(abs(e) for e, _ in errs) if errs else None,
                 "sign_right": f"{sum(signed)}/{len(signed)}",
                 "baseline": None if not (base and pred_base) else pred_base / base - 1}
            summary[f"{Path(path).name} · {card['card']}"] = s
            lines += [f"## {Path(path).name} ({doc['made']}), {card['card']}: median absolute error "
                      f"{s['median_abs_error_points']:.1f} points, sign right {s['sign_right']}, plain decoding "
                      + ("n/a" if s["baseline"] is None else f"{s['baseline']:+.1%} off the measured"), "",
                      "| config | measured | predicted | error | acceptance drawn |", "|---|---|---|---|---|", *rows, ""]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("predict")
    p.add_argument("matrix", type=Path)
    p.add_argument("results", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--boot", type=int, default=200)
    p.add_argument("--target", default=None, help="predict's --target (default: the matrix target's card or name)")
    p.add_argument("--gpus", default="1", help="predict's --gpus: the probes' GPU count (0: the CPU)")
    c = sub.add_parser("compare")
    c.add_argument("matrix", type=Path)
    c.add_argument("measured", type=Path)
    c.add_argument("predicted", type=Path, nargs="+")
    c.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    predict(args) if args.what == "predict" else compare(args)


if __name__ == "__main__":
    main()
