#!/usr/bin/env bash
# The launch_* benches: how fast a command runner starts commands, waits for
# them and captures their output. Run by bench/run.sh; by hand:
#
#   bench/launch.sh BENCH SYSTEM
#     BENCH:  launch_true | launch_sleep | launch_output | launch_memory
#     SYSTEM: concur | xargs | parallel | floor | floor_grouped
#
# Prints "RESULT BENCH SYSTEM METRIC VALUE UNIT" (launch_memory of concur also
# prints the launch_memory_10k and launch_memory_100k sub-results), or
# "SKIPPED reason" (exit 0) when the system is not available. Diagnostics go
# to stderr. Exit status 1 when a run fails.
#
# Every system reads one input line per command from stdin and appends it as
# the command's last argument (the input is chosen so that this is harmless:
# `/bin/true 1`, `/bin/sleep 0.1 0` = 0.1 s, `/usr/bin/head -c 1000000
# /dev/zero`). Programs are given by absolute path so that no system pays for
# a PATH search. Output goes straight to /dev/null.
#
# Environment (run.sh sets the first two):
#   CONCUR_CLI   the concur CLI        (default: build/bench/cli/concur)
#   BENCH_BIN    where floor_spawn is  (default: build/bench/bench)
#   LAUNCH_PASSES  timed passes per figure, the median is reported (default 3)
#   LAUNCH_MEMORY_SIZES  input lines for concur's flat-memory check
#                        (default "10000 100000"; e.g. "10000 1000000")
#   LAUNCH_MEMORY_BUDGET seconds a size of that check may be expected to take
#                        before it is left out (default 75; run.sh gives a
#                        program 120 s)
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CONCUR_CLI=${CONCUR_CLI:-$ROOT/build/bench/cli/concur}
BENCH_BIN=${BENCH_BIN:-$ROOT/build/bench/bench}
PASSES=${LAUNCH_PASSES:-3}
MEMORY_SIZES=${LAUNCH_MEMORY_SIZES:-10000 100000}
MEMORY_BUDGET=${LAUNCH_MEMORY_BUDGET:-75}
TIME=/usr/bin/time   # GNU time, for peak RSS (%M)

BENCHES="launch_true launch_sleep launch_output launch_memory"
SYSTEMS="concur xargs parallel floor floor_grouped"

usage() { echo "usage: $0 BENCH SYSTEM  (BENCH: $BENCHES; SYSTEM: $SYSTEMS)" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
BENCH=$1 SYSTEM=$2
[[ " $BENCHES " == *" $BENCH "* && " $SYSTEMS " == *" $SYSTEM "* ]] || usage

skip() { echo "SKIPPED $*"; exit 0; }
fail() { echo "launch.sh: $BENCH $SYSTEM: $*" >&2; exit 1; }

# --- the systems -----------------------------------------------------------
# RUNNER: the command line that runs "CMD ARG... <line>" per input line, J at
# once, capturing output where the system does (everyone but xargs).
runner() {  # J -> RUNNER (array)
  local j=$1
  case $SYSTEM in
    concur)        RUNNER=("$CONCUR_CLI" -j "$j") ;;
    xargs)         RUNNER=(xargs -d '\n' -n 1 -P "$j") ;;  # no capture: children write to our stdout
    parallel)      RUNNER=(parallel --will-cite -j "$j") ;;  # default --group (temporary files)
    floor)         RUNNER=("$BENCH_BIN/floor_spawn" -j "$j") ;;     # pipes, copied as they arrive
    floor_grouped) RUNNER=("$BENCH_BIN/floor_spawn" -g -j "$j") ;;  # pipes, written per job
  esac
}
case $SYSTEM in
  concur)
    if [[ -e $(dirname "$CONCUR_CLI")/.concur.build-failed ]]; then
      fail "the concur CLI failed to build (see build/bench/build.log)"
    fi
    [[ -x $CONCUR_CLI ]] || skip "no concur CLI at $CONCUR_CLI" ;;
  xargs)    command -v xargs >/dev/null || skip "xargs not found" ;;
  parallel) command -v parallel >/dev/null || skip "GNU parallel not found" ;;
  floor*)
    [[ -e $BENCH_BIN/.floor_spawn.build-failed ]] && fail "floor_spawn failed to build"
    [[ -x $BENCH_BIN/floor_spawn ]] || skip "floor_spawn not built ($BENCH_BIN)" ;;
esac
if [[ $SYSTEM == floor_grouped && $BENCH != launch_output ]]; then
  skip "floor_grouped only differs from floor when there is output (launch_output)"
fi

# --- helpers -----------------------------------------------------------------
now() { echo "${EPOCHREALTIME/,/.}"; }

# run_jobs N LINE J CMD... : N commands "CMD... LINE", J at once; output to
# /dev/null. Fails the bench on a non-zero exit of the runner.
run_jobs() {
  local n=$1 line=$2 j=$3; shift 3
  runner "$j"
  if [[ $SYSTEM == xargs && $BENCH == launch_output ]]; then
    # xargs does not capture: its children's output goes through one pipe to
    # a reader, so that the bytes still cross a pipe as with the others.
    yes -- "$line" | head -n "$n" | "${RUNNER[@]}" "$@" | cat >/dev/null
  else
    yes -- "$line" | head -n "$n" | "${RUNNER[@]}" "$@" >/dev/null
  fi
  local st=("${PIPESTATUS[@]}")
  [[ ${st[2]} -eq 0 ]] || fail "${RUNNER[*]} $* exited ${st[2]}"
}

# timed N LINE J CMD... -> T: the median wall time (s) of PASSES runs, after
# one warm-up run of min(N, 100) commands.
timed() {
  local n=$1 line=$2 j=$3; shift 3
  local t0 t1 times=() p
  run_jobs "$(( n < 100 ? n : 100 ))" "$line" "$j" "$@"
  for (( p = 0; p < PASSES; p++ )); do
    t0=$(now)
    run_jobs "$n" "$line" "$j" "$@"
    t1=$(now)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')")
  done
  T=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  echo "$BENCH $SYSTEM: $n jobs, passes: ${times[*]} s" >&2
}

result() { echo "RESULT $*"; }

# Checks that N jobs of "head -c BYTES" deliver N*BYTES bytes to our stdout.
check_output() {
  local n=4 bytes=1000000 got
  runner 2
  got=$(yes /dev/zero | head -n "$n" | "${RUNNER[@]}" /usr/bin/head -c "$bytes" | wc -c)
  [[ $got -eq $(( n * bytes )) ]] || fail "expected $(( n * bytes )) bytes of output, got $got"
}

# peak_kib N -> K: peak RSS (KiB) of the runner running N x /bin/true at -j 2.
peak_kib() {
  local n=$1 out
  out=$(mktemp)
  runner 2
  yes 1 | head -n "$n" | "$TIME" -f %M -o "$out" "${RUNNER[@]}" /bin/true >/dev/null
  local st=("${PIPESTATUS[@]}")
  K=$(tail -n 1 "$out"); rm -f "$out"
  [[ ${st[2]} -eq 0 && $K =~ ^[0-9]+$ ]] || fail "${RUNNER[*]} under $TIME: exit ${st[2]}, '$K'"
}

# --- the benches -------------------------------------------------------------
case $BENCH in
  launch_true)
    # 5,000 x /bin/true at -j 2; GNU parallel (~10x slower) runs 1,000.
    n=5000; [[ $SYSTEM == parallel ]] && n=1000
    timed "$n" 1 2 /bin/true
    result "$BENCH $SYSTEM jobs_per_s $(awk -v n="$n" -v t="$T" 'BEGIN { printf "%.0f", n / t }') jobs/s"
    ;;
  launch_sleep)
    # 200 x "sleep 0.1" at -j 50: 4 waves, ideally 0.40 s.
    timed 200 0 50 /bin/sleep 0.1
    result "$BENCH $SYSTEM seconds $(awk -v t="$T" 'BEGIN { printf "%.3f", t }') s"
    ;;
  launch_output)
    # 500 jobs x 1 MB of output at -j 2 (GNU parallel too: ~3 s a pass).
    check_output
    timed 500 /dev/zero 2 /usr/bin/head -c 1000000
    result "$BENCH $SYSTEM seconds $(awk -v t="$T" 'BEGIN { printf "%.3f", t }') s"
    ;;
  launch_memory)
    if ! [[ -x $TIME ]] || ! "$TIME" -f %M true 2>/dev/null; then
      skip "needs GNU time at $TIME"
    fi
    # 5,000 x /bin/true at -j 2; GNU parallel runs 1,000 (5,000 take ~30 s
    # under time; its peak is the same at 1,000 and 5,000).
    n=5000; [[ $SYSTEM == parallel ]] && n=1000
    peak_kib "$n"
    result "$BENCH $SYSTEM peak_kib $K kib"
    if [[ $SYSTEM == concur ]]; then
      # Flat memory: the same at 10x and 100x as many commands (input is read
      # as slots free up, results are not kept).
      for n in $MEMORY_SIZES; do
        case $n in
          *000000) name=$(( n / 1000000 ))m ;;
          *000)    name=$(( n / 1000 ))k ;;
          *)       name=$n ;;
        esac
        if [[ -n ${last_t-} ]]; then
          est=$(awk -v t="$last_t" -v a="$last_n" -v b="$n" 'BEGIN { printf "%.0f", t * b / a }')
          if (( est > MEMORY_BUDGET )); then
            echo "launch.sh: launch_memory_$name left out: would take ~${est} s (> ${MEMORY_BUDGET} s; LAUNCH_MEMORY_BUDGET)" >&2
            echo "NOTE launch_memory_$name concur left out: ~${est} s expected"
            continue
          fi
        fi
        t0=$(now); peak_kib "$n"; t1=$(now)
        last_t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') last_n=$n
        echo "$BENCH $SYSTEM: $n jobs in $last_t s, peak $K KiB" >&2
        result "launch_memory_$name $SYSTEM peak_kib $K kib"
      done
    fi
    ;;
esac
