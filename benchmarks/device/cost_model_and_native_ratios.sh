#!/usr/bin/env bash
# The cost model's draft-length sweep in the blocks design (matrices/cost-model-synthetic.toml),
# then the new methods in process against llama-speculative-simple (EAGLE-3, DSpark,
# ngram-map-k4v, ngram-simple; 5 alternating rounds each) on the 35B-A3B shape, one GPU. From the
# repo root after `source .device-kit/env.sh`; records and logs into $OUT.
#   benchmarks/device/cost_model_and_native_ratios.sh MATRIX_SECONDS
set -uo pipefail
export SPECSWEEP_CACHE=${SPECSWEEP_CACHE:-/tmp/m}
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv | tee $OUT/gpu.txt
SECONDS=0
timeout "${1:-330}" python3 -m specsweep run matrices/cost-model-synthetic.toml --results results 2>&1 \
    | grep -v measuring | tee $OUT/cost-model-synthetic.log
cp results/cost-model-synthetic/*.jsonl $OUT/ 2>/dev/null
echo "matrix ${SECONDS}s"
S=$SPECSWEEP_CACHE/synth
T=$S/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05-mtp.gguf  # the matrix's target; its MTP layer loads only when asked
for c in eagle3 dspark; do
    python3 -m specsweep synth qwen3.6-35b-a3b-$c --branch-scale 0.05 -o $S/$c.gguf 2>&1 | tail -1
done
bench="python3 benchmarks/spec_vs_speculative_simple.py $T --tool /tmp/kit/llama-speculative-simple --gpu --backend-sampling --n 256 --rounds 5"
{
timeout 70 $bench --method eagle3 --draft $S/eagle3.gguf --set draft_max=3
timeout 70 $bench --method dspark --draft $S/dspark.gguf --set draft_max=8
timeout 50 $bench --method ngram-map-k4v --set size_m=8
timeout 50 $bench --method ngram-simple
} 2>&1 | grep -v "^llama\|^load\|^print_info" | tee $OUT/native-ratios.log
echo "total ${SECONDS}s"
