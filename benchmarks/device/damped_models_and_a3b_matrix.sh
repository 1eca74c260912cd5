#!/usr/bin/env bash
# Damped synthetic models (branch_scale 0.05); an identical draft in
# process vs llama-speculative-simple; then matrices/a3b-synthetic.toml. From the repo root after
# `source .device-kit/env.sh`; logs and records into $OUT.
set -uo pipefail
export SPECSWEEP_CACHE=/tmp/m
S=/tmp/m/synth; mkdir -p $S
SECONDS=0
A=$S/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05.gguf
python3 -m specsweep synth qwen3.6-35b-a3b --branch-scale 0.05 -o $A 2>&1 | tail -1
python3 -m specsweep synth qwen3.5-0.8b --branch-scale 0.05 -o $S/qwen3.5-0.8b-full-Q4_0-s0-b0.05.gguf 2>&1 | tail -1
echo "synth ${SECONDS}s"
echo "== draft = target (damped), draft-max 4: in process vs llama-speculative-simple"
python3 benchmarks/spec_vs_speculative_simple.py $A --tool /tmp/kit/llama-speculative-simple \
    --draft $A --gpu --draft-max 4 --n 256 --rounds 2 --backend-sampling
echo "benches done ${SECONDS}s"
timeout $((570 - SECONDS)) python3 -m specsweep run matrices/a3b-synthetic.toml --results $OUT/results
echo "matrix rc=$? total ${SECONDS}s"
