#!/usr/bin/env bash
# Issues 17 and 14 on one H200 in one lease: stages in order of what they tell, each done once.
# A call runs until DEADLINE seconds, then packs what it has; calling again on the warm machine
# picks up where it stopped (records and markers live on the RAM disk; on a fresh machine the
# records carried in results/ are copied there first, and a run resumes from them).
#   1. placement   matrices/placement-synthetic.toml: the quant-true 35B-A3B+MTP with the experts of
#                  20 or 40 layers on the host, and with every layer on the GPU (issue 17)
#   2. probes      T(K)/T(1) of those placements and of the 24 GiB fit (llama-fit-params's choice)
#   3. ratios      ngram-map-k and DSpark n8 in process against llama-speculative-simple, 5 rounds
#                  (issue 14; on the quant-true target, whose file is already on the RAM disk)
#   4. a10b        matrices/a10b-synthetic.toml: the 122B-A10B+MTP's MTP and 0.8B-draft curves (14)
#   5. a10b-fit    T(K)/T(1) of the 122B-A10B with llama.cpp's 24 and 48 GiB fits (17: a 3090, two)
#   6. a10b-fit-matrix  matrices/a10b-fit-synthetic.toml: baseline, MTP n2 and the 0.8B draft n4 at
#                  those two fits (17), with the fits probed again at 7 passes (host jitter)
#   7. a10b-mtp-layer  matrices/a10b-mtp-layer-synthetic.toml: the 48 GiB fit beside the MTP layer kept
#                  on the GPU at equal memory
# Stages 1-5 ran on one H200 on 2026-12-02 (results/device-h200-2026-12-02b), stage 6 in the next lease
# (results/device-h200-2026-12-02c); name stages to run
# only those (a fresh machine starts with the records in results/ and no markers):
#   benchmarks/device/offload_a10b_and_ratios.sh DEADLINE_SECONDS [STAGE ...]
#   e.g.  ... 570 a10b-fit-matrix a10b-fit-24-reps7 a10b-fit-48-reps7
# Back in $OUT: host.txt, run.log, placement.tar.gz, a10b.tar.gz, a10b-fit.tar.gz, a10b-mtp-layer.tar.gz,
# native-ratios.log.
set -uo pipefail
deadline=${1:-570}
shift || true
only=" $* "  # the stages named on the command line; none: every stage
retry_failures=0  # a failure is logged and not retried: the next stages still get their turn
source "$(dirname "$0")/stages.sh"
S=$ram/synth
mkdir -p $S
for m in placement-synthetic a10b-synthetic a10b-fit-synthetic a10b-mtp-layer-synthetic; do
    [ -d results/$m ] && [ ! -d $R/$m ] && cp -r results/$m $R/
done
A3B=$S/qwen3.6-35b-a3b-full-ud-q4_k_xl-s0-b0.05-mtp.gguf
A10B=$S/qwen3.5-122b-a10b-full-Q4_0-s0-b0.05-mtp.gguf
probe="python3 -m specsweep probe --kv q8_0"  # passes per K given per stage: 3 in the first lease, 7 after
bench="python3 benchmarks/spec_vs_speculative_simple.py $A3B --tool /tmp/kit/llama-speculative-simple --gpu --backend-sampling --n 256 --rounds 5"

stage placement 60 python3 -m specsweep run matrices/placement-synthetic.toml --results $R
stage probe-cpu-moe-20 40 $probe --reps 3 $A3B --n-cpu-moe 20 --results $R/placement-synthetic
stage probe-cpu-moe-40 40 $probe --reps 3 $A3B --n-cpu-moe 40 --results $R/placement-synthetic
stage probe-gpu 30 $probe --reps 3 $A3B --results $R/placement-synthetic
stage probe-fit-24 40 $probe --reps 3 $A3B --vram-budget 24GiB --results $R/placement-synthetic
stage ratio-ngram-map-k 80 $bench --method ngram-map-k
[ -f $S/dspark.gguf ] || ! wants ratio-dspark-n8 || [ "$(left)" -lt 150 ] || python3 -m specsweep synth qwen3.6-35b-a3b-dspark \
    --branch-scale 0.05 -o $S/dspark.gguf 2>&1 | tail -1 | quiet
[ -f $S/dspark.gguf ] && stage ratio-dspark-n8 130 $bench --method dspark --draft $S/dspark.gguf --set draft_max=8
grep -h "ratio\|round [0-9]" $log > $OUT/native-ratios.log 2>/dev/null
# the 122B-A10B's 65 GiB takes the RAM disk: the 35B-A3B's files go once its stages are done
if [ -f $done/placement ] && [ -f $done/probe-fit-24 ] && [ -f $done/ratio-ngram-map-k ] \
    && { [ -f $done/ratio-dspark-n8 ] || [ ! -f $S/dspark.gguf ]; } && [ "$(left)" -ge 215 ]; then
    rm -f $A3B $S/dspark.gguf $S/qwen3.6-35b-a3b-dflash-*.gguf
fi
stage a10b 200 python3 -m specsweep run matrices/a10b-synthetic.toml --results $R
for gib in 24 48; do
    [ -f $A10B ] && stage a10b-fit-$gib 60 $probe --reps 3 $A10B --vram-budget ${gib}GiB --k 1,2,3,4,5,6,8,16,32 \
        --results $R/a10b-synthetic
done
stage a10b-fit-matrix 240 python3 -m specsweep run matrices/a10b-fit-synthetic.toml --results $R
for gib in 24 48; do
    [ -f $A10B ] && stage a10b-fit-$gib-reps7 60 $probe $A10B --reps 7 --vram-budget ${gib}GiB \
        --k 1,2,3,4,5,6,8,16 --results $R/a10b-fit-synthetic
done
# 7. the MTP layer's placement under the 48 GiB fit (a follow-up: docs/findings.md)
stage a10b-mtp-layer 200 python3 -m specsweep run matrices/a10b-mtp-layer-synthetic.toml --results $R
[ -d $R/placement-synthetic ] && tar czf $OUT/placement.tar.gz -C $R placement-synthetic
[ -d $R/a10b-synthetic ] && tar czf $OUT/a10b.tar.gz -C $R a10b-synthetic
[ -d $R/a10b-fit-synthetic ] && tar czf $OUT/a10b-fit.tar.gz -C $R a10b-fit-synthetic
[ -d $R/a10b-mtp-layer-synthetic ] && tar czf $OUT/a10b-mtp-layer.tar.gz -C $R a10b-mtp-layer-synthetic
finish
