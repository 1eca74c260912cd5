#!/usr/bin/env bash
# `specsweep probe` at full shape on the hybrid MoE (35B-A3B), the
# attention-only MoE (30B-A3B) and the dense 27B, with the 0.8B draft's measured step as the draft
# cost. From the repo root after `source .device-kit/env.sh`; records and logs into $OUT.
set -uo pipefail
S=/tmp/m; mkdir -p $S
SECONDS=0
for card in qwen3.6-35b-a3b qwen3-30b-a3b qwen3.6-27b qwen3.5-0.8b; do
    python3 -m specsweep synth $card -o $S/$card.gguf 2>&1 | tail -1
done
echo "synth ${SECONDS}s"; df -h /tmp | tail -1
P="python3 -m specsweep probe --results $OUT/results --reps 5"
$P $S/qwen3.6-35b-a3b.gguf --kv q8_0 --draft $S/qwen3.5-0.8b.gguf
$P $S/qwen3.6-35b-a3b.gguf --kv f16 --draft $S/qwen3.5-0.8b.gguf
$P $S/qwen3.6-35b-a3b.gguf --kv q8_0 --depth 2048 --draft $S/qwen3.5-0.8b.gguf
$P $S/qwen3.6-35b-a3b.gguf --kv q8_0 --outputs logits --k 1,2,4,8,16,32,64,128
$P $S/qwen3-30b-a3b.gguf --kv q8_0 --draft $S/qwen3.5-0.8b.gguf
$P $S/qwen3.6-27b.gguf --kv q8_0 --draft $S/qwen3.5-0.8b.gguf
echo "total ${SECONDS}s"
