#!/usr/bin/env bash
# The 10B-active contrast, on one H200. For the targets named
# (a10b, or a3b dense27), in one call: write the synthetic models into a RAM disk (the
# 122B-A10B's 64.1 GiB do not fit the 64 GiB disk of a one-GPU machine), probe each target at KV
# q8_0 (with the 0.8B draft's step as the draft cost), run its cells of
# matrices/active-contrast-synthetic.toml in the time left (finished cells resume), then probe it
# at KV f16. From the repo root after `source .device-kit/env.sh`; records and logs into $OUT.
#   benchmarks/device/active_contrast_probes_and_matrix.sh BUDGET_SECONDS TARGET...   (PROBE_DRAFT=1: the 0.8B's own curve too)
set -uo pipefail
budget=$1; shift
left() { local s=$((budget - SECONDS - $1)); echo $((s < 10 ? 10 : s)); }  # seconds, keeping $1 in reserve
ram=/mnt/specsweep-ram
mkdir -p $ram
mountpoint -q $ram || mount -t tmpfs -o size=110G tmpfs $ram || { echo "no RAM disk"; exit 1; }
export SPECSWEEP_CACHE=$ram
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/gpu.txt
SECONDS=0
declare -A card=([a10b]=qwen3.5-122b-a10b [a3b]=qwen3.6-35b-a3b [dense27]=qwen3.6-27b [d08]=qwen3.5-0.8b)
file() { echo "$ram/synth/${card[$1]}-full-Q4_0-s0-b0.05.gguf"; }  # the matrix's own cache names
mkdir -p $ram/synth
for m in d08 "$@"; do
    [ -f "$(file $m)" ] || python3 -m specsweep synth "${card[$m]}" --branch-scale 0.05 -o "$(file $m)" 2>&1 | tail -1
done
echo "synth done ${SECONDS}s"; df -h $ram | tail -1
probe="python3 -m specsweep probe --results $OUT/results --reps 5"
for t in "$@"; do $probe "$(file $t)" --kv q8_0 --draft "$(file d08)"; done
echo "q8_0 probes done ${SECONDS}s"
select=(); for t in "$@"; do select+=(--target "$t"); done
timeout "$(left $((45 * $#)))" python3 -m specsweep run matrices/active-contrast-synthetic.toml \
    "${select[@]}" --results results 2>&1 | grep -v measuring
mkdir -p $OUT/acs && cp results/active-contrast-synthetic/*.jsonl $OUT/acs/
echo "matrix stopped or done ${SECONDS}s"
for t in "$@"; do timeout "$(left 0)" $probe "$(file $t)" --kv f16; done
[ "${PROBE_DRAFT:-0}" = 1 ] && timeout "$(left 0)" $probe "$(file d08)" --kv q8_0
echo "total ${SECONDS}s"
