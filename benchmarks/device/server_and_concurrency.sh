#!/usr/bin/env bash
# Issue 18: the same cells in process and through llama-server, at 1/4/8 streams
# (matrices/server-concurrency-synthetic.toml), one GPU. From the repo root after
# `source .device-kit/env.sh` (its llama-server is on PATH). The models go to a RAM disk; the
# in-process cells (shard 1/2) and the server cells (shard 2/2) run one after the other within the
# budget. A call cut short resumes: carry $OUT's records.tar.gz back, unpacked into results/, and
# call again (a warm machine keeps the RAM disk, so the models are not written twice).
#   benchmarks/device/server_and_concurrency.sh BUDGET_SECONDS
# Back in $OUT: host.txt, server-concurrency.log, records.tar.gz (the matrix's records, failures
# and server logs).
set -uo pipefail
budget=${1:-540}
ram=/mnt/specsweep-ram
mkdir -p $ram
mountpoint -q $ram || mount -t tmpfs -o size=60G tmpfs $ram || { echo "no RAM disk"; exit 1; }
export SPECSWEEP_CACHE=$ram
{ nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv
  lscpu | grep -E "Model name|^CPU\(s\)|MHz"; command -v llama-server; } | tee $OUT/host.txt
SECONDS=0
for shard in 1/2 2/2; do
    left=$((budget - SECONDS - 15))
    [ $left -gt 30 ] || break
    # SIGTERM at the budget: specsweep stops as on Ctrl-C (records closed, its llama-server stopped)
    timeout "$left" python3 -m specsweep run matrices/server-concurrency-synthetic.toml --results results \
        --shard $shard 2>&1 | grep -v measuring | tee -a $OUT/server-concurrency.log
done
tar czf $OUT/records.tar.gz -C results server-concurrency-synthetic
echo "total ${SECONDS}s" | tee -a $OUT/server-concurrency.log
