#!/usr/bin/env bash
# Issue 18: the same cells in process and through llama-server, at 1/4/8 streams
# (matrices/server-concurrency-synthetic.toml), one GPU. From the repo root after
# `source .device-kit/env.sh` (its llama-server is on PATH); records, server logs and the host's
# facts into $OUT. The server cells and the in-process cells are separate groups: run one shard per
# device call (SHARD=1/2, then 2/2); a call cut short resumes from its records when $OUT's copy is
# carried back as results/.
#   SHARD=1/2 benchmarks/device/server_and_concurrency.sh BUDGET_SECONDS
set -uo pipefail
budget=${1:-540}
export SPECSWEEP_CACHE=${SPECSWEEP_CACHE:-/tmp/m}
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv | tee $OUT/gpu.txt
lscpu | grep -E "Model name|^CPU\(s\)|MHz" | tee $OUT/cpu.txt
command -v llama-server | tee $OUT/llama-server.txt
SECONDS=0
timeout "$budget" python3 -m specsweep run matrices/server-concurrency-synthetic.toml --results results \
    ${SHARD:+--shard "$SHARD"} 2>&1 | grep -v measuring | tee $OUT/server-concurrency.log
mkdir -p $OUT/server-logs
cp results/server-concurrency-synthetic/*.jsonl $OUT/ 2>/dev/null
cp results/server-concurrency-synthetic/server-logs/*.log $OUT/server-logs/ 2>/dev/null
echo "total ${SECONDS}s"
