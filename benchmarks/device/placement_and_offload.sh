#!/usr/bin/env bash
# Issue 17: the quant-true 35B-A3B (+MTP) with the experts of 20 or 40 layers in host memory and
# with every layer on the GPU (matrices/placement-synthetic.toml), one H200; then probes of those
# placements and of the 24 GiB fit (what llama-fit-params picks for a 3090). From the repo
# root after `source .device-kit/env.sh`. Models go to a RAM disk; llama-fit-params comes from the
# kit. A call cut short resumes: carry $OUT's records.tar.gz back, unpacked into results/, and call
# again (a warm machine keeps the RAM disk).
#   benchmarks/device/placement_and_offload.sh BUDGET_SECONDS
# Back in $OUT: host.txt, placement.log, records.tar.gz (the matrix's records and the probes).
set -uo pipefail
budget=${1:-540}
ram=/mnt/specsweep-ram
mkdir -p $ram
mountpoint -q $ram || mount -t tmpfs -o size=60G tmpfs $ram || { echo "no RAM disk"; exit 1; }
export SPECSWEEP_CACHE=$ram SPECSWEEP_NATIVE_BIN=/tmp/kit
{ nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv
  lscpu | grep -E "Model name|^CPU\(s\)|MHz|L3"; free -g | head -2; } | tee $OUT/host.txt
SECONDS=0
for shard in 1/3 2/3 3/3; do
    left=$((budget - SECONDS - 120))  # keep time for the probes
    [ $left -gt 30 ] || break
    # SIGTERM at the budget: specsweep stops as on Ctrl-C, with its records closed
    timeout "$left" python3 -m specsweep run matrices/placement-synthetic.toml --results results \
        --shard $shard 2>&1 | grep -v measuring | tee -a $OUT/placement.log
done
# T(K)/T(1) where the experts live: the expert union's cost on the host against on the GPU
target=$ram/synth/qwen3.6-35b-a3b-full-ud-q4_k_xl-s0-b0.05-mtp.gguf
for place in "--vram-budget 24GiB" "--n-cpu-moe 20" "--n-cpu-moe 40" ""; do
    left=$((budget - SECONDS - 10))
    [ $left -gt 20 ] || break
    timeout "$left" python3 -m specsweep probe "$target" --kv q8_0 --reps 3 $place \
        --results results/placement-synthetic 2>&1 | grep -v measuring | tee -a $OUT/placement.log
done
tar czf $OUT/records.tar.gz -C results placement-synthetic
echo "total ${SECONDS}s" | tee -a $OUT/placement.log
