#!/usr/bin/env bash
# Issue 27's prospective run on one GPU, in stages that each run once. The predictions from the
# committed probes and records were committed before this ran
# (results/predict-validation/prospective-a3b-ud/predicted.json); this run adds the card's own
# probe and calibration, predicts again from them *before* the matrix runs, then measures:
#   1. calibrate   `specsweep probe --synth qwen3.6-35b-a3b-mtp-ud-q4_k_xl --calibrate`: the card's
#                  T(K) of the quant-true 35B-A3B+MTP stand-in, then its loop costs (plain decoding;
#                  MTP, the 0.8B draft, DFlash and EAGLE-3 at draft lengths 2 and 4, two acceptance
#                  levels each), into $M/probe and $M/calibrate-<file>-<card>-<engine>/ ($M: the
#                  matrix's results folder, so that they travel with its records)
#   2. predict     scripts/predict-prospective.py predict: the matrix's configs from the committed
#                  records and this card's probe and calibration (predict takes them first), written
#                  to $M/predicted-on-device.json (and .md) with its time; the matrix stage refuses to
#                  start until this file exists
#   3. matrix      matrices/prospective-a3b-ud.toml: 13 configs at draft lengths and acceptance levels
#                  no committed matrix has, 4 blocks, each trial its own synthetic draws
# A call runs until DEADLINE seconds, then packs what it has; calling again on the warm machine
# picks up where it stopped (records and markers live on the RAM disk).
#   benchmarks/device/prospective_a3b_ud.sh DEADLINE_SECONDS [STAGE ...]
# Back in $OUT: host.txt, run.log, prospective.tar.gz (results/prospective-a3b-ud: the matrix's
# records, and in it the probe, the calibration and the on-device predictions). Then, off the device:
#   tar xzf prospective.tar.gz -C results
#   python3 scripts/predict-prospective.py compare matrices/prospective-a3b-ud.toml \
#       results/prospective-a3b-ud results/predict-validation/prospective-a3b-ud/predicted.json \
#       results/prospective-a3b-ud/predicted-on-device.json --out results/predict-validation/prospective-a3b-ud/comparison.md
set -uo pipefail
deadline=${1:-570}
shift || true
only=" $* "  # the stages named on the command line; none: every stage
source "$(dirname "$0")/stages.sh"
M=$ram/results/prospective-a3b-ud
[ -d results/prospective-a3b-ud ] && [ ! -d $M ] && cp -r results/prospective-a3b-ud $R/
mkdir -p $M

stage calibrate 240 python3 -m specsweep probe --synth qwen3.6-35b-a3b-mtp-ud-q4_k_xl \
    --synth-draft qwen3.5-0.8b-q4_k_m --synth-drafter qwen3.6-35b-a3b-dflash --synth-drafter qwen3.6-35b-a3b-eagle3 \
    --kv q8_0 --reps 5 --calibrate --results $M
# before any measurement of the matrix: from the committed records, the committed UD probe (H200)
# and this card's probe and calibration
[ -f $done/calibrate ] && stage predict 60 python3 scripts/predict-prospective.py predict matrices/prospective-a3b-ud.toml \
    results results/placement-synthetic/probe $M/probe $M/calibrate-* --out $M/predicted-on-device.json --boot 200
if [ -f $M/predicted-on-device.json ] && [ -f $done/predict ]; then
    stage matrix 200 python3 -m specsweep run matrices/prospective-a3b-ud.toml --results $R
else
    say "matrix: waits for the on-device predictions ($M/predicted-on-device.json)"
fi
tar czf $OUT/prospective.tar.gz -C $R prospective-a3b-ud
finish
