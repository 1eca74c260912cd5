#!/usr/bin/env bash
# Issue 14's last curves and ratios, one H200, two calls:
#   a10b BUDGET   the 122B-A10B shape's MTP head and 0.8B draft at synthetic acceptance
#                 (matrices/a10b-synthetic.toml; its 65 GiB stand-in is written into a RAM disk,
#                 which a warm machine keeps); a call cut short resumes when called again
#   ratios        ngram-map-k and DSpark n8 in process against llama-speculative-simple on the
#                 35B-A3B shape (5 alternating rounds each; the two ratios the H200 run of
#                 2026-12-02 left out or cut at 4 rounds)
# From the repo root after `source .device-kit/env.sh`; records and logs into $OUT.
set -uo pipefail
what=${1:?a10b BUDGET | ratios}
ram=/mnt/specsweep-ram
mkdir -p $ram
mountpoint -q $ram || mount -t tmpfs -o size=100G tmpfs $ram || { echo "no RAM disk"; exit 1; }
export SPECSWEEP_CACHE=$ram
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv | tee $OUT/gpu.txt
SECONDS=0
if [ "$what" = a10b ]; then
    timeout "${2:-540}" python3 -m specsweep run matrices/a10b-synthetic.toml --results results 2>&1 \
        | grep -v measuring | tee -a $OUT/a10b-synthetic.log
    tar czf $OUT/records.tar.gz -C results a10b-synthetic
else
    S=$ram/synth
    mkdir -p $S
    T=$S/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05-mtp.gguf  # the methods matrices' target and cache name
    [ -f $T ] || python3 -m specsweep synth qwen3.6-35b-a3b --mtp --branch-scale 0.05 -o $T 2>&1 | tail -1
    [ -f $S/dspark.gguf ] || python3 -m specsweep synth qwen3.6-35b-a3b-dspark --branch-scale 0.05 -o $S/dspark.gguf 2>&1 | tail -1
    bench="python3 benchmarks/spec_vs_speculative_simple.py $T --tool /tmp/kit/llama-speculative-simple --gpu --backend-sampling --n 256 --rounds 5"
    {
    timeout 120 $bench --method dspark --draft $S/dspark.gguf --set draft_max=8
    timeout 70 $bench --method ngram-map-k
    } 2>&1 | grep -v "^llama\|^load\|^print_info" | tee $OUT/native-ratios.log
fi
echo "total ${SECONDS}s"
