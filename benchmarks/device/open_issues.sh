#!/usr/bin/env bash
# Every open issue's device stages as one resumable queue, in the order they matter: a call hands
# the time left to each script in turn, so a warm machine's minutes go to the next stage not yet
# done, whichever issue holds it, instead of idling while a call waits to be made (device starts
# are the scarce part: on 2026-12-08 a session got none in 18 calls). Each script keeps its own
# stages, markers, log lines and tarball in $OUT (see its header); a stage that needs more time
# than is left waits for the next call while shorter ones behind it run.
#   issue 26  knee_and_routing.sh             probe-d-rs0 knee-rs0 probe-d-rs0.5 knee-rs0.5
#   issue 27  prospective_a3b_ud.sh           calibrate predict matrix
#   issue 29  native_ratios.sh                ratio-mtp plain host-cost ratio-<method> ...
#   issue 28  tune_a3b_mtp.sh                 tune grid
#   issue 29  server_concurrency_onewave.sh   inprocess server
#   issue 26  knee_and_routing.sh             probe-rs0.5 probe-d-rs1 probe-rs1 (the curves beside the test)
# From the repo root, carrying .device-kit:
#   source .device-kit/env.sh && bash benchmarks/device/open_issues.sh DEADLINE_SECONDS
# Back in $OUT: run.log (every call so far), host.txt, and the tarball of each script that ran.
set -uo pipefail
deadline=${1:-570}
here=$(dirname "$0")
SECONDS=0
next() {  # next SCRIPT [STAGE ...]: the script, with what is left of this call
    local left=$((deadline - SECONDS))
    [ "$left" -ge 90 ] || return 0
    bash "$here/$1" "$left" "${@:2}"
}
next knee_and_routing.sh probe-d-rs0 knee-rs0 probe-d-rs0.5 knee-rs0.5
next prospective_a3b_ud.sh
next native_ratios.sh
next tune_a3b_mtp.sh
next server_concurrency_onewave.sh
next knee_and_routing.sh probe-rs0.5 probe-d-rs1 probe-rs1
