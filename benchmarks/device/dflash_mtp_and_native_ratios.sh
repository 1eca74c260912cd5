#!/usr/bin/env bash
# DFlash and MTP at the Qwen3.6-35B-A3B shape. The new rows of
# matrices/a3b-synthetic.toml (finished cells resume from results/), then each method in process
# against llama-speculative-simple. From the repo root after `source .device-kit/env.sh`; records
# and logs into $OUT.
set -uo pipefail
export SPECSWEEP_CACHE=/tmp/m
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/gpu.txt
SECONDS=0
timeout 400 python3 -m specsweep run matrices/a3b-synthetic.toml --results results 2>&1 | grep -v "measuring"
mkdir -p $OUT/a3b && cp results/a3b-synthetic/*.jsonl $OUT/a3b/
echo "matrix done ${SECONDS}s"
S=/tmp/m/synth
T=$S/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05-mtp.gguf
D=$S/qwen3.6-35b-a3b-dflash-full-Q4_0-s0-b0.05.gguf
B="python3 benchmarks/spec_vs_speculative_simple.py $T --tool /tmp/kit/llama-speculative-simple --gpu --backend-sampling --n 256 --rounds 3"
for k in 1 3; do echo "== mtp draft-max $k"; timeout 90 $B --mtp --draft-max $k; done
for k in 4 16; do echo "== dflash draft-max $k"; timeout 90 $B --dflash $D --draft-max $k; done
echo "total ${SECONDS}s"
