#!/usr/bin/env bash
# The perturbed full-shape draft cells added to
# matrices/a3b-synthetic.toml (the finished cells resume from results/), and a KV f16 probe of the
# 30B-A3B. From the repo root after `source .device-kit/env.sh`; records and logs into $OUT.
set -uo pipefail
export SPECSWEEP_CACHE=/tmp/m
SECONDS=0
timeout 330 python3 -m specsweep run matrices/a3b-synthetic.toml --results results
mkdir -p $OUT/a3b && cp results/a3b-synthetic/*.jsonl $OUT/a3b/
echo "matrix done ${SECONDS}s"
python3 -m specsweep synth qwen3-30b-a3b -o /tmp/m/qwen3-30b-a3b.gguf 2>&1 | tail -1
python3 -m specsweep probe /tmp/m/qwen3-30b-a3b.gguf --kv f16 --reps 5 --results $OUT/probe-results
echo "total ${SECONDS}s"
