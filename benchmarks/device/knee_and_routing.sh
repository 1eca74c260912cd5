#!/usr/bin/env bash
# Issue 26 on one GPU: the expert union traced beside the verify's time, in stages that each run
# once. A call runs until DEADLINE seconds; calling again on the warm machine picks up where it
# stopped (records and markers live on the RAM disk; on a fresh machine the records carried in
# results/knee-synthetic are copied there first). Records are packed after every stage.
#   probe-d-rs0, -rs0.5, -rs1   T(K) of the 35B-A3B stand-in at router_skew 0 / 0.5 / 1, K up to 256,
#                               batches of K *distinct* tokens (a draft with no repeat), every batch
#                               traced: the knee test (does T(K) bend where the traced union passes
#                               95%?) and its trained-like counterparts
#   probe-rs0, -rs0.5, -rs1     the same with the probe's text (repeating tokens, as real drafts do)
#   knee-rs0, knee-rs0.5        matrices/knee-synthetic.toml (opt-in: name them): MTP drafts of 32-128
#                               tokens at synthetic p = 0.85, 1000-token trials, every verify traced;
#                               time per generated token and per pass against the traced union.
#                               (Its first design, ngram-cache drafts, failed on an H100 on 2026-12-07:
#                               see the matrix's header.)
#   benchmarks/device/knee_and_routing.sh DEADLINE_SECONDS [STAGE ...]
# Back in $OUT: host.txt, run.log, knee.tar.gz (results/knee-synthetic, the probes' records in probe/).
set -uo pipefail
deadline=${1:-570}
shift || true
only=" $* "  # the stages named on the command line; none: every probe stage
[ "$only" = "  " ] && only=" probe-d-rs0 probe-rs0 probe-d-rs0.5 probe-rs0.5 probe-d-rs1 probe-rs1 "
source "$(dirname "$0")/stages.sh"
S=$ram/synth
mkdir -p $S
[ -d results/knee-synthetic ] && [ ! -d $R/knee-synthetic ] && cp -r results/knee-synthetic $R/
pack() { [ -d $R/knee-synthetic ] && tar czf $OUT/knee.tar.gz -C $R knee-synthetic; }
file_of() { echo $S/qwen3.6-35b-a3b-full-Q4_0-s0-b0.05$([ "$1" = 0 ] || echo "-rs$1")-mtp.gguf; }
stand_in() {  # the stand-in at router skew $1, with its MTP layer (the matrix's drafter; the target's
              # graph leaves that layer out), where the matrix's cache keeps it: one file for both
    local f; f=$(file_of "$1")
    [ -f "$f" ] || python3 -m specsweep synth qwen3.6-35b-a3b --branch-scale 0.05 --router-skew "$1" --mtp -o "$f" \
        2>&1 | tail -1 | quiet >&2  # not into the path echoed below
    echo "$f"
}
ks=1,2,3,4,6,8,9,10,12,16,24,32,48,64,80,96,112,128,160,192,256
probe="python3 -m specsweep probe --kv q8_0 --reps 5 --trace-experts --k $ks --results $R/knee-synthetic"
knee="python3 -m specsweep run matrices/knee-synthetic.toml --results $R --target"
for rs in 0 0.5 1; do
    for kind in d text; do
        name=probe-$([ $kind = d ] && echo d-)rs$rs
        wants $name && [ ! -f $done/$name ] && [ "$(left)" -ge 150 ] || continue
        stage $name 60 $probe --batch-tokens $([ $kind = d ] && echo distinct || echo text) "$(stand_in $rs)"
    done
    [ $rs = 0 ] && wants knee-rs0 && [ ! -f $done/knee-rs0 ] && stand_in 0 >/dev/null && stage knee-rs0 240 $knee a3b
    [ $rs = 0.5 ] && wants knee-rs0.5 && [ ! -f $done/knee-rs0.5 ] && stand_in 0.5 >/dev/null \
        && stage knee-rs0.5 240 $knee a3b_rs
    # room on the RAM disk for the next stand-in once this one's stages are done
    all=1; for n in probe-d-rs$rs probe-rs$rs; do wants $n && [ ! -f $done/$n ] && all=0; done
    for n in knee-rs$rs; do wants $n && [ ! -f $done/$n ] && all=0; done
    [ $all = 1 ] && rm -f "$(file_of $rs)"
done
pack
finish
