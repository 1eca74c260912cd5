#!/usr/bin/env bash
# Issue 29 (written, not yet run): every method in process against its native loop on the 35B-A3B
# shape with its MTP layer, one GPU, backend sampling, KV q8_0, in stages that each run once. The
# simple loop against llama-speculative-simple (greedy) and the server loop against llama-server
# with one slot (at synthetic acceptance, synth_len 2, same seed), 5 alternating rounds of 256
# tokens, counts checked (benchmarks/native_ratios.py); one stage per method, each adding its rows
# to one table. In order of what they tell:
#   ratio-mtp      MTP n2 in both loops (the server loop's MTP gap is the issue's first question)
#   plain          plain decoding beside llama-bench tg, llama-server (one slot) and llama-completion
#                  (benchmarks/baseline_vs_native.py)
#   host-cost      the loops' host cost per token on this host's CPU (benchmarks/loop_host_cost.py,
#                  tiny models; its table is in run.log)
#   ratio-eagle3 ratio-dflash ratio-dspark ratio-draft   (each drafter written first where missing)
#   ratio-ngram-cache ratio-ngram-mod ratio-ngram-simple ratio-ngram-map-k ratio-ngram-map-k4v
# A call runs until DEADLINE seconds; calling again on the warm machine picks up where it stopped
# (models, tables and markers live on the RAM disk; the target is the file
# matrices/server-concurrency-onewave.toml uses, so either script writes it once). From the repo
# root after `source .device-kit/env.sh` (its tools are in /tmp/kit):
#   bash benchmarks/device/native_ratios.sh DEADLINE_SECONDS [STAGE ...]
# Back in $OUT: host.txt, run.log, native-ratios.md (the README's table, rows of every call so
# far), baseline-vs-native.md.
set -uo pipefail
deadline=${1:-570}
shift || true
only=" $* "  # the stages named on the command line; none: every stage
retry_failures=0  # a method that fails is logged and not retried: the next stages still get their turn
source "$(dirname "$0")/stages.sh"
S=$ram/synth
mkdir -p $S
T=$S/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05-mtp.gguf
table=$R/native-ratios.md
model() {  # model CARD [SYNTH ARGS]: the synthetic file of CARD at branch scale 0.05, written where missing
    # (within the deadline: synth writes under a temporary name, so a file cut short never appears)
    local f=$S/$1-full-Q4_0-s0-b0.05$([[ " $* " == *" --mtp "* ]] && echo "-mtp").gguf t=$(left 15)
    [ -f "$f" ] || [ "$t" -le 0 ] || timeout "$t" python3 -m specsweep synth "$@" --branch-scale 0.05 -o "$f" 2>&1 \
        | tail -1 | quiet >&2  # not into the path echoed below
    echo "$f"
}
common="--target $T --tools $SPECSWEEP_NATIVE_BIN --gpu --backend-sampling --kv q8_0 --n 256 --rounds 5 --out $table"
ratio() {  # ratio METHOD MIN_SECONDS [ROLE CARD]...: METHOD in both loops, its drafter written first
    local m=$1 need=$2 extra=()
    shift 2
    if wants ratio-$m && [ ! -f $done/ratio-$m ] && [ "$(left 15)" -ge "$need" ]; then
        while [ $# -ge 2 ]; do extra+=(--$1 "$(model $2)"); shift 2; done
        local f
        for f in "${extra[@]}"; do
            [[ $f == --* || -f $f ]] || { say "ratio-$m: no $f (synth failed?); next call"; return 1; }
        done
    fi
    stage ratio-$m $need python3 benchmarks/native_ratios.py $common --methods $m "${extra[@]}"
}

if [ ! -f $T ] && [ "$(left 15)" -ge 90 ]; then
    say "target: writing $T"
    model qwen3.6-35b-a3b --mtp > /dev/null
fi
if [ -f $T ]; then
    ratio mtp 150
    stage plain 120 python3 benchmarks/baseline_vs_native.py $T --tools $SPECSWEEP_NATIVE_BIN --gpu \
        --backend-sampling --kv q8_0 --n 256 --rounds 5 --out $R/baseline-vs-native.md
fi
stage host-cost 120 python3 benchmarks/loop_host_cost.py --n 64 --reps 5 --model-dir $ram/host-cost
if [ -f $T ]; then
    ratio eagle3 150 eagle3 qwen3.6-35b-a3b-eagle3
    ratio dflash 150 dflash qwen3.6-35b-a3b-dflash
    ratio dspark 150 dspark qwen3.6-35b-a3b-dspark
    ratio draft 150 draft qwen3.5-0.8b
    ratio ngram-cache 170  # a fresh llama-server every round (its drafter state outlives a request)
    ratio ngram-mod 170
    for m in ngram-simple ngram-map-k ngram-map-k4v; do
        ratio $m 120
    done
else
    say "target missing ($T): ${deadline}s was too short to write it; next call"
fi
cp $table $OUT/native-ratios.md 2>/dev/null
cp $R/baseline-vs-native.md $OUT/ 2>/dev/null
finish
