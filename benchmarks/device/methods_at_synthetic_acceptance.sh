#!/usr/bin/env bash
# Every model-based method at llama.cpp's synthetic acceptance on the 35B-A3B shape, and the cost
# model's draft-length sweep (matrices/methods-synthetic.toml), blocks design, telemetry on, on one
# GPU. From the repo root after `source .device-kit/env.sh`; records and logs into $OUT.
#   benchmarks/device/methods_at_synthetic_acceptance.sh BUDGET_SECONDS
set -uo pipefail
budget=${1:-540}
export SPECSWEEP_CACHE=${SPECSWEEP_CACHE:-/tmp/m}
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv | tee $OUT/gpu.txt
lscpu | grep -E "Model name|^CPU\(s\)|MHz" | tee $OUT/cpu.txt
SECONDS=0
timeout "$budget" python3 -m specsweep run matrices/methods-synthetic.toml --results results 2>&1 \
    | grep -v measuring | tee $OUT/methods-synthetic.log
cp results/methods-synthetic/*.jsonl $OUT/ 2>/dev/null
echo "total ${SECONDS}s"
