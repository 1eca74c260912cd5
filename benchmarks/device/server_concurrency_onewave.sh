#!/usr/bin/env bash
# Issue 29 (written, not yet run): issue 18's cells with one-wave prefill (n_batch 2048) and
# EAGLE-3, in process and through llama-server, at 1/4/8 streams
# (matrices/server-concurrency-onewave.toml), one GPU, in stages that each run once:
#   inprocess   shard 1/2: the 27 in-process cells (108 trials)
#   server      shard 2/2: the 27 cells through the kit's llama-server
# A call runs until DEADLINE seconds (SIGTERM then: specsweep stops as on Ctrl-C, its records
# closed, its llama-server stopped); calling again on the warm machine resumes from the records
# (records, models and markers live on the RAM disk; on a fresh machine the records carried in
# results/ are copied there first). From the repo root after `source .device-kit/env.sh`:
#   bash benchmarks/device/server_concurrency_onewave.sh DEADLINE_SECONDS [STAGE ...]
# Back in $OUT: host.txt, run.log, records.tar.gz (the matrix's records, failures and server logs).
set -uo pipefail
deadline=${1:-570}
shift || true
only=" $* "  # the stages named on the command line; none: every stage
source "$(dirname "$0")/stages.sh"
M=server-concurrency-onewave
[ -d results/$M ] && [ ! -d $R/$M ] && cp -r results/$M $R/
run="python3 -m specsweep run matrices/$M.toml --results $R --llama-server $SPECSWEEP_NATIVE_BIN/llama-server"
stage inprocess 120 $run --shard 1/2
stage server 120 $run --shard 2/2
[ -d $R/$M ] && tar czf $OUT/records.tar.gz -C $R $M
finish
