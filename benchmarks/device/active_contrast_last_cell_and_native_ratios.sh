#!/usr/bin/env bash
# One H200: the last cell of matrices/active-contrast-synthetic.toml
# (the others resume from results/), then both overhead ratios at the 35B-A3B shape on this GPU:
# in-process baseline over llama-bench tg, and the target as its own draft (draft-max 4, the cell
# that measured 0.998 on the H100) over llama-speculative-simple. From the repo root after
# `source .device-kit/env.sh`; records and logs into $OUT.
set -uo pipefail
export SPECSWEEP_CACHE=/tmp/m
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/gpu.txt
SECONDS=0
timeout 200 python3 -m specsweep run matrices/active-contrast-synthetic.toml --target dense27 --results results 2>&1 | grep -v measuring
mkdir -p $OUT/acs && cp results/active-contrast-synthetic/*.jsonl $OUT/acs/
echo "matrix done ${SECONDS}s"
rm -f /tmp/m/synth/qwen3.6-27b*
T=/tmp/m/synth/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05.gguf
python3 -m specsweep synth qwen3.6-35b-a3b --branch-scale 0.05 -o $T 2>&1 | tail -1
timeout 120 python3 benchmarks/baseline_vs_llama_bench.py $T --llama-bench /tmp/kit/llama-bench --rounds 3 --threads 8
timeout 150 python3 benchmarks/spec_vs_speculative_simple.py $T --tool /tmp/kit/llama-speculative-simple --draft $T \
    --draft-max 4 --gpu --backend-sampling --n 256 --rounds 3
echo "total ${SECONDS}s"
