#!/usr/bin/env python3
"""Predict every committed device matrix from its own probes and acceptance and compare with what it
measured: results/predict-validation/validation.json and README.md (no GPU; a few minutes on 2 cores).
   python3 scripts/validate-predict.py [--boot 100]"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from specsweep.analysis import predict_heldout as ho
from specsweep.analysis import predict_validation as pv
from specsweep.analysis.analyze import _clean

ROOT = Path(__file__).resolve().parent.parent


def rounded(v):
    """4 decimals: the file stays small and diffs stay readable."""
    if isinstance(v, float):
        return round(v, 4)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    return v


def prospective(out: Path) -> str:
    """The prospective runs' state: predictions committed before the run, and the comparison once measured."""
    lines = ["", "## Prospective runs", "",
             "Predictions for a matrix no committed record ran, made with `scripts/predict-prospective.py predict` "
             "and committed before the matrix ran; the comparison (`... compare`) once it has:", ""]
    found = False
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        pred = folder / "predicted.json"
        if not pred.is_file():
            continue
        found = True
        doc = json.loads(pred.read_text())
        cmp = folder / "comparison.md"
        state = f"[compared]({folder.name}/comparison.md)" if cmp.is_file() else "not measured yet"
        cards = ", ".join(c["card"] for c in doc["prediction"]["cards"])
        lines.append(f"- `{doc['matrix']}`: [predicted]({folder.name}/predicted.md) {doc['made']} for {cards}; {state}.")
    return "\n".join(lines) + "\n" if found else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--boot", type=int, default=100, help="bootstrap resamples per prediction")
    args = ap.parse_args()
    results = ROOT / "results"
    doc = pv.validate(results, n_boot=args.boot)
    variant = pv.validate(results, n_boot=0, measured_profiles=True)
    doc["measured_draws"] = {"summary": variant["summary"],
                             "matrices": {k: v["summary"] for k, v in variant["matrices"].items()},
                             "cross_card": variant["cross_card"]["summary"],
                             "cross_placement": variant["cross_placement"]["summary"]}
    doc["held_out"] = ho.held_out(results)
    doc["held_out_measured_draws"] = {k: v["summary"] for k, v in ho.held_out(results, measured_profiles=True).items()}
    out = results / "predict-validation"
    out.mkdir(exist_ok=True)
    held = _clean(doc.pop("held_out"))
    # the held-out sets' cells, one per line (summaries stay in validation.json)
    cells = [{"set": k, **{f: c[f] for f in ho.LINE}} for k, v in held.items() for c in v["cells"]]
    (out / "held-out.jsonl").write_text("".join(json.dumps(rounded(c)) + "\n" for c in cells))
    doc["held_out"] = {k: {f: v[f] for f in v if f != "cells"} for k, v in held.items()}
    (out / "validation.json").write_text(json.dumps(rounded(_clean(doc)), indent=1) + "\n")
    (out / "README.md").write_text(pv.markdown(_clean(doc)) + "\n" + ho.markdown(held, _clean(doc["held_out_measured_draws"]))
                                   + prospective(out))
    print((out / "README.md").read_text())


if __name__ == "__main__":
    main()
