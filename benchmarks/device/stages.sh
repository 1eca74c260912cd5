# Sourced by the device scripts (benchmarks/device/*.sh): what a device call needs to run named
# stages once each across calls of a warm machine, within a deadline.
#   deadline=SECONDS; only=" STAGE ... "; source benchmarks/device/stages.sh
# sets up the RAM disk ($ram, models and records there outlive a call while the machine stays warm),
# SPECSWEEP_CACHE and SPECSWEEP_NATIVE_BIN, $R (records), $done (markers), $log ($OUT/run.log, the
# whole story across calls) and $OUT/host.txt, and defines:
#   stage NAME MIN_SECONDS COMMAND...  run COMMAND once, with what time is left (SIGTERM at the limit
#                                      stops specsweep as Ctrl-C does, its records closed); marked done
#                                      on exit 0, or, with retry_failures=0, on anything but the limit
#   left [MARGIN], say TEXT, quiet (a filter: llama.cpp's load chatter out, the rest to the log),
#   wants NAME (named on the command line, or none named), finish (keep the log for the next call)
ram=/mnt/specsweep-ram
mkdir -p $ram
mountpoint -q $ram || mount -t tmpfs -o size=100G tmpfs $ram || { echo "no RAM disk"; exit 1; }
export SPECSWEEP_CACHE=$ram SPECSWEEP_NATIVE_BIN=/tmp/kit PYTHONUNBUFFERED=1
R=$ram/results done=$ram/done
mkdir -p $R $done
log=$OUT/run.log
cp $ram/run.log $log 2>/dev/null
{ nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv
  lscpu | grep -E "Model name|^CPU\(s\)|MHz|L3|NUMA node\(s\)"; free -g | head -2; } > $OUT/host.txt
SECONDS=0
retry_failures=${retry_failures:-1}
left() { echo $((deadline - SECONDS - ${1:-0})); }
say() { echo "[$SECONDS s] $*" | tee -a $log; }
quiet() { grep --line-buffered -v "measuring\|^llama\|^load\|^print_info" | tee -a $log; }
wants() { [ "$only" = "  " ] || [[ "$only" == *" $1 "* ]]; }
stage() {
    local name=$1 need=$2; shift 2
    [ -f $done/$name ] && return 0
    wants $name || return 0
    local t; t=$(left 15)
    [ "$t" -ge "$need" ] || { say "$name: ${t}s left, needs ${need}s; next call"; return 1; }
    say "$name: start (${t}s)"
    timeout "$t" "$@" 2>&1 | quiet
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ] || { [ "$retry_failures" = 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 143 ]; }; then
        touch $done/$name
    fi
    say "$name: exit $rc"
}
finish() {
    ls $done | tr '\n' ' ' | sed 's/^/done: /' | tee -a $log; echo
    say "call over"
    cp $log $ram/run.log
}
