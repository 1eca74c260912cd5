#!/usr/bin/env bash
# Issue 29 (written, not yet run): issue 18's cells with one-wave prefill (n_batch 2048) and
# EAGLE-3, in process and through llama-server, at 1/4/8 streams
# (matrices/server-concurrency-onewave.toml), one GPU. From the repo root after
# `source .device-kit/env.sh` (its llama-server is on PATH). The models go to a RAM disk; the
# in-process cells (shard 1/2) and the server cells (shard 2/2) run one after the other within the
# budget. A call cut short resumes: carry $OUT's records.tar.gz back, unpacked into results/, and
# call again (a warm machine keeps the RAM disk, so the models are not written twice).
#   benchmarks/device/server_concurrency_onewave.sh BUDGET_SECONDS
# Back in $OUT: host.txt, server-concurrency-onewave.log, records.tar.gz (the matrix's records, failures
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
    timeout "$left" python3 -m specsweep run matrices/server-concurrency-onewave.toml --results results \
        --shard $shard 2>&1 | grep -v measuring | tee -a $OUT/server-concurrency-onewave.log
done
tar czf $OUT/records.tar.gz -C results server-concurrency-onewave
echo "total ${SECONDS}s" | tee -a $OUT/server-concurrency-onewave.log
