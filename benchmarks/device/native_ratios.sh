#!/usr/bin/env bash
# Issue 29 (written, not yet run): every method in process against its native loop on the 35B-A3B
# shape with its MTP layer, one GPU, backend sampling, KV q8_0: the simple loop against
# llama-speculative-simple (greedy) and the server loop against llama-server with one slot (at
# synthetic acceptance, synth_len 2, same seed), 5 alternating rounds of 256 tokens, counts checked
# (benchmarks/native_ratios.py). Then plain decoding beside llama-bench tg, llama-server (one slot)
# and llama-completion (benchmarks/baseline_vs_native.py), and the loops' host cost on this host's
# CPU (benchmarks/loop_host_cost.py, tiny models). From the repo root after
# `source .device-kit/env.sh` (its tools are in /tmp/kit). One call per group, each under the
# 10-minute limit; the models go to a RAM disk that a warm machine keeps between calls:
#   benchmarks/device/native_ratios.sh hidden     # mtp eagle3 dflash dspark draft
#   benchmarks/device/native_ratios.sh ngram      # the five n-gram methods
#   benchmarks/device/native_ratios.sh plain      # baseline beside the native tools; host cost
# Back in $OUT: gpu.txt, cpu.txt, native-ratios.md (the README's table: each call adds its rows),
# native-ratios-<group>.log, baseline-vs-native.md/.log, loop-host-cost.txt. The table accumulates
# on the RAM disk, which a warm machine keeps; on a fresh one, the call starts a new table.
set -uo pipefail
group=${1:?hidden, ngram or plain}
ram=/mnt/specsweep-ram
mkdir -p $ram
mountpoint -q $ram || mount -t tmpfs -o size=60G tmpfs $ram || { echo "no RAM disk"; exit 1; }
export SPECSWEEP_CACHE=$ram
S=$ram/synth
mkdir -p $S
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv | tee $OUT/gpu.txt
lscpu | grep -E "Model name|^CPU\(s\)|MHz" | tee $OUT/cpu.txt
SECONDS=0
T=$S/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05-mtp.gguf
[ -f $T ] || python3 -m specsweep synth qwen3.6-35b-a3b --branch-scale 0.05 --mtp -o $T
table=$ram/native-ratios.md
common="--target $T --tools /tmp/kit --gpu --backend-sampling --kv q8_0 --n 256 --rounds 5 --out $table"
case $group in
hidden)
    for c in dflash eagle3 dspark; do
        [ -f $S/$c.gguf ] || python3 -m specsweep synth qwen3.6-35b-a3b-$c --branch-scale 0.05 -o $S/$c.gguf
    done
    D=$S/qwen3.5-0.8b-full-Q4_0-s0-b0.05.gguf
    [ -f $D ] || python3 -m specsweep synth qwen3.5-0.8b --branch-scale 0.05 -o $D
    timeout 560 python3 benchmarks/native_ratios.py $common --methods mtp eagle3 dflash dspark draft \
        --draft $D --dflash $S/dflash.gguf --eagle3 $S/eagle3.gguf --dspark $S/dspark.gguf 2>&1 \
        | grep -v "^llama\|^load\|^print_info" | tee $OUT/native-ratios-hidden.log ;;
ngram)
    timeout 560 python3 benchmarks/native_ratios.py $common \
        --methods ngram-cache ngram-mod ngram-simple ngram-map-k ngram-map-k4v 2>&1 \
        | grep -v "^llama\|^load\|^print_info" | tee $OUT/native-ratios-ngram.log ;;
plain)
    timeout 300 python3 benchmarks/baseline_vs_native.py $T --tools /tmp/kit --gpu --backend-sampling --kv q8_0 \
        --n 256 --rounds 5 --out $OUT/baseline-vs-native.md 2>&1 | grep -v "^llama\|^load\|^print_info" \
        | tee $OUT/baseline-vs-native.log
    timeout 200 python3 benchmarks/loop_host_cost.py --n 64 --reps 5 2>&1 | tail -7 | tee $OUT/loop-host-cost.txt ;;
esac
cp $table $OUT/native-ratios.md 2>/dev/null
echo "total ${SECONDS}s"
