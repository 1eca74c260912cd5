#!/usr/bin/env bash
# The dense 27B shape's MTP head and 0.8B draft at synthetic acceptance (matrices/dense27-synthetic.toml),
# one GPU. From the repo root after `source .device-kit/env.sh`; records and logs into $OUT.
set -uo pipefail
export SPECSWEEP_CACHE=${SPECSWEEP_CACHE:-/tmp/m}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/gpu.txt
SECONDS=0
timeout "${1:-240}" python3 -m specsweep run matrices/dense27-synthetic.toml --results results 2>&1 \
    | grep -v measuring | tee $OUT/dense27-synthetic.log
cp results/dense27-synthetic/*.jsonl $OUT/ 2>/dev/null
echo "total ${SECONDS}s"
