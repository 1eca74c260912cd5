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
    (out / "validation.json").write_text(json.dumps(rounded(_clean(doc)), indent=1) + "\n")
    (out / "README.md").write_text(pv.markdown(_clean(doc)) + "\n" + ho.markdown(_clean(doc["held_out"]), _clean(doc["held_out_measured_draws"])))
    print((out / "README.md").read_text())


if __name__ == "__main__":
    main()
