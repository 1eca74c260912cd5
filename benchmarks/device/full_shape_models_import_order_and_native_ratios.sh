#!/usr/bin/env bash
# Full-shape synthetic models, the import-order crash, and in-process
# against native llama.cpp (baseline and one speculative cell). Run from the repo root after
# `source .device-kit/env.sh`; writes logs into $OUT.
set -uo pipefail
M=/tmp/m; mkdir -p $M
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee $OUT/gpu.txt
SECONDS=0
python3 -m specsweep synth qwen3.6-35b-a3b -o $M/a3b.gguf 2>&1 | tail -2
python3 -m specsweep synth qwen3.5-0.8b -o $M/d08.gguf 2>&1 | tail -2
echo "synth took ${SECONDS}s"

echo "== import order"
python3 -c "import numpy; print('numpy', numpy.__version__, numpy.__file__)"
for order in "numpy" "llama_cpp numpy" "numpy llama_cpp" "gguf"; do
    python3 benchmarks/device/import_order.py $M/d08.gguf $order > $OUT/order.log 2>&1; rc=$?
    echo "order [$order] -> rc=$rc $(tail -1 $OUT/order.log)"
    if [ $rc -ne 0 ]; then
        LD_DEBUG=libs python3 benchmarks/device/import_order.py $M/d08.gguf $order 2>&1 | grep -E "calling init|find library" | awk '{print $NF}' | head -150 > $OUT/libs-numpy-first.txt
        timeout 120 cuda-gdb -batch -ex run -ex bt -ex "info sharedlibrary" --args python3 benchmarks/device/import_order.py $M/d08.gguf $order > $OUT/gdb.txt 2>&1
        grep -A30 "SIGSEGV" $OUT/gdb.txt | head -40
    fi
done
LD_DEBUG=libs python3 benchmarks/device/import_order.py $M/d08.gguf llama_cpp numpy 2>&1 | grep -E "calling init" | awk '{print $NF}' | head -150 > $OUT/libs-llama-first.txt

echo "== baseline: in process vs llama-bench"
python3 benchmarks/baseline_vs_llama_bench.py $M/a3b.gguf --llama-bench /tmp/kit/llama-bench --rounds 3 --threads 8
echo "== draft 0.8B, draft-max 8: in process vs llama-speculative-simple"
python3 benchmarks/spec_vs_speculative_simple.py $M/a3b.gguf --tool /tmp/kit/llama-speculative-simple --draft $M/d08.gguf --gpu --draft-max 8 --n 256 --rounds 3
echo "== same, backend sampling"
python3 benchmarks/spec_vs_speculative_simple.py $M/a3b.gguf --tool /tmp/kit/llama-speculative-simple --draft $M/d08.gguf --gpu --draft-max 8 --n 256 --rounds 2 --backend-sampling
echo "total ${SECONDS}s"
