#!/usr/bin/env bash
# Issue 28's device demo: `specsweep tune` on the quant-true 35B-A3B+MTP stand-in (UD-Q4_K_XL mix,
# random weights, its MTP layer) with the 0.8B draft and the DFlash and EAGLE-3 drafters' stand-ins,
# against running its full candidate grid. Random weights accept no real draft, so acceptance
# profiles stand in for real text (`--accept`, llama.cpp's synthetic acceptance; tune says so on
# its output): per-token acceptance a at every position (rates a, a^2, ...), the v4 audit's 3090
# values where it has one (MTP 0.784, DFlash 0.723, the 0.8B draft 0.697) and 0.70 for EAGLE-3
# (assumed: the audit ran none). Stages, each once; a call runs until DEADLINE seconds:
#   1. tune    specsweep tune ... --time ${TUNE_TIME:-8m} -o $R/tune-a3b-mtp: the pilot, the ranking,
#              the race and the answer (answer.txt/json, the command lines); its log has its time
#   2. grid    $R/tune-a3b-mtp/grid.toml (every candidate and plain decoding, the race's blocks)
#              through `specsweep run`, resumed call after call; its seconds add up in grid-seconds
# The models go to a RAM disk, written once per warm machine (probe --synth writes the same files).
#   benchmarks/device/tune_a3b_mtp.sh DEADLINE_SECONDS [STAGE ...]
# Back in $OUT: host.txt, run.log, tune.tar.gz (the tune's folder: records, matrices, answer, and the
# grid's records beside it). Off the device: tar xzf tune.tar.gz -C results; specsweep plot
# results/tune-a3b-mtp; compare the tune's time (run.log, answer.json "seconds") with grid-seconds.
set -uo pipefail
deadline=${1:-570}
shift || true
only=" $* "
source "$(dirname "$0")/stages.sh"
T=$R/tune-a3b-mtp
pack() { [ -d $T ] && tar czf $OUT/tune.tar.gz -C $R tune-a3b-mtp; }

# the stand-ins' files (the cache's, as `specsweep probe --synth` and the device matrices write them)
paths=$(python3 - <<'EOF'
from pathlib import Path
from specsweep.matrix.models import parse_models, resolve
from specsweep.synth import stand_ins
here = Path("matrices/x.toml")
for name in ("qwen3.6-35b-a3b-mtp-ud-q4_k_xl", "qwen3.5-0.8b-q4_k_m"):
    print(stand_ins.write(stand_ins.resolve(name), "full"))
refs = parse_models({c: {"synth": c, "scale": "full", "branch_scale": 0.05}
                     for c in ("qwen3.6-35b-a3b-dflash", "qwen3.6-35b-a3b-eagle3")}, here)
for ref in refs.values():
    print(resolve(ref, here, create=True))
EOF
) || { say "could not write the stand-ins"; exit 1; }
read -r target draft dflash eagle3 <<< "$(echo $paths)"
say "models: $target $draft $dflash $eagle3"

rates() {  # rates A N: a, a^2, ..., a^N
    python3 -c "import sys; a, n = float(sys.argv[1]), int(sys.argv[2]); print(','.join(f'{a**i:.4f}' for i in range(1, n + 1)))" "$1" "$2"
}
if wants tune && [ ! -f $done/tune ]; then
    say "tune: start"
    start=$SECONDS
    python3 -m specsweep tune "$target" --draft "$draft" --drafter "$dflash" --drafter "$eagle3" \
        --accept "mtp n8=$(rates 0.784 8)" --accept "dflash n8=$(rates 0.723 8)" \
        --accept "draft n8=$(rates 0.697 8)" --accept "eagle3 n8=$(rates 0.70 8)" \
        --vram 24GiB --tokens 256 --time "${TUNE_TIME:-8m}" -o $T 2>&1 | tr '\r' '\n' | grep -v "^tuning" | tee -a $log
    rc=${PIPESTATUS[0]}
    say "tune: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] && [ -f $T/answer.json ] && touch $done/tune
    pack
fi
if wants grid && [ -f $done/tune ] && [ ! -f $done/grid ]; then  # stages.sh's stage, its seconds added up across calls
    before=$(cat $T/grid-seconds 2>/dev/null || echo 0) start=$SECONDS
    if stage grid 60 python3 -m specsweep run $T/grid.toml --results $T; then
        echo $((before + SECONDS - start)) > $T/grid-seconds
        say "grid: $(cat $T/grid-seconds) s in all"
    fi
fi
pack
finish
