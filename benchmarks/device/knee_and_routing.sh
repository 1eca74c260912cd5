#!/usr/bin/env bash
# Issue 26 on one GPU: the expert union traced, and the knee at 95% coverage, in stages that each
# run once. A call runs until DEADLINE seconds, then packs what it has; calling again on the warm
# machine picks up where it stopped (records and markers live on the RAM disk; on a fresh machine
# the records carried in results/ are copied there first, and a run resumes from them).
#   1. knee-rs0     matrices/knee-synthetic.toml, its router_skew 0 target: ngram-cache drafts of
#                   16-128 tokens at p = 0.85, 1000-token trials, every verify traced
#   2. probe-rs0    T(K) of that stand-in with each batch's experts traced
#   3. knee-rs0.5   the matrix's router_skew 0.5 target (trained-like expert load)
#   4. probe-rs0.5  T(K) with the traced union at router_skew 0.5
#   5. probe-rs1    ... at router_skew 1 (a few favourite experts), written for this stage alone
#   benchmarks/device/knee_and_routing.sh DEADLINE_SECONDS [STAGE ...]
# Back in $OUT: host.txt, run.log, knee.tar.gz (results/knee-synthetic with the probes' records).
set -uo pipefail
deadline=${1:-570}
shift || true
only=" $* "  # the stages named on the command line; none: every stage
source "$(dirname "$0")/stages.sh"
S=$ram/synth
mkdir -p $S
[ -d results/knee-synthetic ] && [ ! -d $R/knee-synthetic ] && cp -r results/knee-synthetic $R/
stand_in() {  # the stand-in at router skew $1, where the matrix's cache keeps it
    local f=$S/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05$([ "$1" = 0 ] || echo "-rs$1").gguf
    [ -f "$f" ] || python3 -m specsweep synth qwen3.6-35b-a3b --branch-scale 0.05 --router-skew "$1" -o "$f" 2>&1 \
        | tail -1 | quiet >&2  # not into the path echoed below
    echo "$f"
}
probe="python3 -m specsweep probe --kv q8_0 --reps 5 --trace-experts --results $R/knee-synthetic"

knee="python3 -m specsweep run matrices/knee-synthetic.toml --results $R --target"
stage knee-rs0 200 $knee a3b
wants probe-rs0 && [ ! -f $done/probe-rs0 ] && [ "$(left)" -ge 90 ] && stage probe-rs0 60 $probe "$(stand_in 0)"
stage knee-rs0.5 200 $knee a3b_rs
wants probe-rs0.5 && [ ! -f $done/probe-rs0.5 ] && [ "$(left)" -ge 90 ] && stage probe-rs0.5 60 $probe "$(stand_in 0.5)"
if wants probe-rs1 && [ ! -f $done/probe-rs1 ] && [ "$(left)" -ge 150 ]; then
    [ -f $done/knee-rs0 ] && rm -f $S/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05.gguf  # room on the RAM disk
    stage probe-rs1 60 $probe "$(stand_in 1)"
fi
[ -d $R/knee-synthetic ] && tar czf $OUT/knee.tar.gz -C $R knee-synthetic
finish
