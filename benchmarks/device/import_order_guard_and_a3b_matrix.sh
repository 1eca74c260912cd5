#!/usr/bin/env bash
# The import-order guard, in-process vs llama-speculative-simple after
# the checkpoint-buffer fix, and matrices/a3b-synthetic.toml. From the repo root after
# `source .device-kit/env.sh`; logs and records into $OUT.
set -uo pipefail
export SPECSWEEP_CACHE=/tmp/m
S=/tmp/m/synth; mkdir -p $S
SECONDS=0
python3 -m specsweep run matrices/a3b-synthetic.toml --dry-run > /dev/null
python3 -m specsweep synth qwen3.6-35b-a3b -o $S/qwen3.6-35b-a3b-full-Q4_0-s0.gguf 2>&1 | tail -1
python3 -m specsweep synth qwen3.5-0.8b -o $S/qwen3.5-0.8b-full-Q4_0-s0.gguf 2>&1 | tail -1
echo "synth ${SECONDS}s"

echo "== import order with the guard (numpy, gguf, then specsweep)"
python3 benchmarks/device/import_order.py $S/qwen3.5-0.8b-full-Q4_0-s0.gguf numpy gguf specsweep 2>&1 | tail -1
python3 benchmarks/device/import_order.py $S/qwen3.5-0.8b-full-Q4_0-s0.gguf numpy 2>&1 | tail -1; echo "unguarded rc=$?"

echo "== draft 0.8B, draft-max 8, in process (backend sampling) vs llama-speculative-simple"
python3 benchmarks/spec_vs_speculative_simple.py $S/qwen3.6-35b-a3b-full-Q4_0-s0.gguf --tool /tmp/kit/llama-speculative-simple \
    --draft $S/qwen3.5-0.8b-full-Q4_0-s0.gguf --gpu --draft-max 8 --n 256 --rounds 3 --backend-sampling
echo "== ngram-mod n=8 max 16"
python3 benchmarks/spec_vs_speculative_simple.py $S/qwen3.6-35b-a3b-full-Q4_0-s0.gguf --tool /tmp/kit/llama-speculative-simple \
    --ngram-mod 8 --gpu --draft-max 16 --n 256 --rounds 3 --backend-sampling
echo "benches done ${SECONDS}s"
timeout $((560 - SECONDS)) python3 -m specsweep run matrices/a3b-synthetic.toml --results $OUT/results
echo "matrix rc=$? total ${SECONDS}s"
