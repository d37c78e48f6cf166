#!/usr/bin/env bash
# The pipe_throughput bench: how fast `--pipe` spreads standard input over jobs. Run by
# bench/run.sh; by hand:
#
#   bench/pipe.sh pipe_throughput SYSTEM     SYSTEM: concur | parallel
#
# Each system runs `--pipe --block 1M -j 2 wc -l` with stdin redirected from a generated
# text file in $TMPDIR (lines of 36 bytes; synced, then read once so that it is in the page
# cache), checks that the counts add up to the file's lines, and prints
#   RESULT pipe_throughput SYSTEM gb_per_s VALUE GB/s     (input bytes / wall time, 1e9)
#   RESULT pipe_throughput SYSTEM peak_kib VALUE kib      (peak RSS, GNU time %M)
# or "SKIPPED reason" (exit 0). The figure is the runner's, not the disk's. Diagnostics go
# to stderr; exit status 1 when a run fails.
#
# Environment (run.sh sets the first):
#   CONCUR_CLI      the concur CLI (default: build/bench/cli/concur)
#   PIPE_MB         input size for concur, MiB (default 1024)
#   PIPE_MB_PARALLEL  input size for GNU parallel, MiB (default 128: it runs at about a
#                   tenth of the speed; the rate is comparable, the size is in a NOTE)
#   PIPE_PASSES     timed passes, the median is reported (default 3)
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CONCUR_CLI=${CONCUR_CLI:-$ROOT/build/bench/cli/concur}
PASSES=${PIPE_PASSES:-3}
TIME=/usr/bin/time

usage() { echo "usage: $0 pipe_throughput concur|parallel" >&2; exit 2; }
[[ $# -eq 2 && $1 == pipe_throughput ]] || usage
BENCH=$1 SYSTEM=$2

skip() { echo "SKIPPED $*"; exit 0; }
fail() { echo "pipe.sh: $BENCH $SYSTEM: $*" >&2; exit 1; }

case $SYSTEM in
  concur)
    [[ -e $(dirname "$CONCUR_CLI")/.concur.build-failed ]] &&
      fail "the concur CLI failed to build (see build/bench/build.log)"
    [[ -x $CONCUR_CLI ]] || skip "no concur CLI at $CONCUR_CLI"
    RUNNER=("$CONCUR_CLI") MB=${PIPE_MB:-1024} ;;
  parallel)
    command -v parallel >/dev/null || skip "GNU parallel not found"
    RUNNER=(parallel --will-cite) MB=${PIPE_MB_PARALLEL:-128} ;;
  *) usage ;;
esac
[[ -x $TIME ]] || skip "GNU time is not at $TIME (needed for the peak RSS)"

input=$(mktemp "${TMPDIR:-/tmp}/concur-pipe-bench.XXXXXX") || fail "cannot make a file in TMPDIR"
out=$(mktemp "${TMPDIR:-/tmp}/concur-pipe-bench-out.XXXXXX") || fail "cannot make a file in TMPDIR"
trap 'rm -f "$input" "$out" "$out.rss"' EXIT
bytes=$((MB * 1024 * 1024))
yes 'a line of 36 bytes with its newline' | head -c "$bytes" >"$input" # yes ends on SIGPIPE
[[ $(stat -c %s "$input") -eq $bytes ]] || fail "cannot write $MB MiB to $input"

lines=$((bytes / 36))

now() { echo "${EPOCHREALTIME/,/.}"; }

# One pass: the wall time in T, the peak RSS in K; the counts are checked.
pass() {
  local t0 t1 rc=0
  t0=$(now)
  "$TIME" -f %M -o "$out.rss" "${RUNNER[@]}" -j 2 --pipe --block 1M wc -l <"$input" >"$out" || rc=$?
  t1=$(now)
  [[ $rc -eq 0 ]] || fail "${RUNNER[*]} exited $rc"
  local got
  got=$(awk '{ s += $1 } END { print s + 0 }' "$out")
  [[ $got -eq $lines ]] || fail "counted $got lines, expected $lines"
  T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
  K=$(tail -n 1 "$out.rss")
}

# On disk, not dirty (a write-back during the passes moved them by 2x), and in the page cache.
sync "$input" || fail "cannot sync $input"
cat "$input" >/dev/null
times=() peak=0
for ((p = 0; p < PASSES; p++)); do
  pass
  times+=("$T")
  ((K > peak)) && peak=$K
done
T=$(printf '%s\n' "${times[@]}" | sort -g |
  awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
echo "$BENCH $SYSTEM: $MB MiB, passes: ${times[*]} s, peak RSS $peak KiB" >&2
[[ $SYSTEM == parallel ]] && echo "NOTE pipe_throughput parallel: $MB MiB of input (concur: ${PIPE_MB:-1024} MiB); the rate is comparable"
echo "RESULT $BENCH $SYSTEM gb_per_s $(awk -v b="$bytes" -v t="$T" 'BEGIN { printf "%.3f", b / t / 1e9 }') GB/s"
echo "RESULT $BENCH $SYSTEM peak_kib $peak kib"
