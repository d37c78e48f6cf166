# Shared helpers for the concur CLI tests (bats). Each .bats file starts with `load helpers`.
#
# $CONCUR is the concur binary under test. CTest sets it to <build>/cli/concur; by hand:
#   CONCUR=build/release/cli/concur bats tests/cli
# Every test runs in its own empty directory ($BATS_TEST_TMPDIR) and gets $UNIQ, a string
# of digits unique to the test, to mark the processes it starts (e.g. `sleep 100.$UNIQ`),
# so it can look for leftovers and clean them up without touching anything else.

# A hung test is a failure, not a hung run (CTest's TIMEOUT is the outer limit).
: "${BATS_TEST_TIMEOUT:=30}"

CLI_TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLI_SOURCE_DIR=$(cd "$CLI_TEST_DIR/../.." && pwd)

setup() {
  concur_setup
}

teardown() {
  concur_teardown
}

concur_setup() {
  if [[ -z "${CONCUR:-}" || ! -x "$CONCUR" ]]; then
    echo "CONCUR must name the concur binary under test (got '${CONCUR:-}')" >&2
    return 1
  fi
  UNIQ=$(printf '%d%05d' "$$" "$RANDOM")
  cd "$BATS_TEST_TMPDIR" || return 1
  # GNU parallel's defaults ($PARALLEL, $PARALLEL_HOME/config), which concur reads under the
  # name "parallel" as GNU parallel does: none from the user running the tests.
  unset PARALLEL
  # (outside the test's directory, whose listing some tests check)
  export PARALLEL_HOME=$BATS_FILE_TMPDIR/parallel-home-$BATS_TEST_NUMBER
}

# Kill (by pid) whatever this test started and left behind; unmount its tmpfs mounts.
concur_teardown() {
  local m
  for m in "${TMPFS_MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  TMPFS_MOUNTS=()
  local pids
  pids=$(pgrep -f -- "$UNIQ" 2>/dev/null) || return 0
  # shellcheck disable=SC2086
  kill -9 $pids 2>/dev/null || true
}

# mount_tmpfs DIR KB: mounts a tmpfs of KB kilobytes on DIR (created), for full-disk tests;
# the teardown unmounts it. Skips the test, saying why, where mounting is not allowed (it
# needs root, or CAP_SYS_ADMIN).
TMPFS_MOUNTS=()
mount_tmpfs() {
  mkdir -p "$1"
  mount -t tmpfs -o "size=${2}k" tmpfs "$1" 2>/dev/null ||
    skip "cannot mount a tmpfs (needs root or CAP_SYS_ADMIN) for a full-disk test"
  TMPFS_MOUNTS+=("$1")
}

# ---------------------------------------------------------------------------
# GNU parallel as the reference
# ---------------------------------------------------------------------------
need_parallel() {
  command -v parallel >/dev/null || skip "GNU parallel is not installed"
}

# same_as_parallel [--sort] [--stdin FILE] ARGS...
# Runs `concur ARGS` and `parallel --will-cite ARGS` in the current directory (stdin from
# FILE, else /dev/null) and checks that they print the same stdout (sorted with --sort,
# for runs whose order is not defined) and exit with the same status.
same_as_parallel() {
  need_parallel
  local sort=0 in=/dev/null
  while [[ $# -gt 0 ]]; do
    case $1 in
      --sort) sort=1; shift ;;
      --stdin) in=$2; shift 2 ;;
      *) break ;;
    esac
  done
  local c_out=$BATS_TEST_TMPDIR/.concur.out p_out=$BATS_TEST_TMPDIR/.parallel.out
  local c_rc=0 p_rc=0
  "$CONCUR" "$@" <"$in" >"$c_out" 2>"$c_out.err" || c_rc=$?
  parallel --will-cite "$@" <"$in" >"$p_out" 2>"$p_out.err" || p_rc=$?
  if [[ $sort -eq 1 ]]; then
    LC_ALL=C sort -o "$c_out" "$c_out"
    LC_ALL=C sort -o "$p_out" "$p_out"
  fi
  if ! cmp -s "$c_out" "$p_out" || [[ $c_rc -ne $p_rc ]]; then
    echo "concur and GNU parallel differ for: $(printf '%q ' "$@")"
    echo "--- concur (exit $c_rc) stdout:"; od -c "$c_out" | head -20
    echo "--- concur stderr:"; head -c 2000 "$c_out.err"
    echo "--- parallel (exit $p_rc) stdout:"; od -c "$p_out" | head -20
    return 1
  fi
}

# ---------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------
# elapsed_between T0 T1 LO HI: LO <= T1-T0 < HI (seconds, from $EPOCHREALTIME)
elapsed_between() {
  local t0=$1 t1=$2 lo=$3 hi=$4
  if ! awk -v d="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" -v lo="$lo" -v hi="$hi" \
       'BEGIN{exit !(d >= lo && d < hi)}'; then
    echo "elapsed $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}') s, expected [$lo, $hi)"
    return 1
  fi
}

# wait_until SECONDS COMMAND...: poll COMMAND (every 20 ms) until it succeeds; fail after
# SECONDS. This waits for a condition; it never fixes a race by sleeping.
wait_until() {
  local limit=$1; shift
  local deadline
  deadline=$(awk -v t="$EPOCHREALTIME" -v s="$limit" 'BEGIN{printf "%.3f", t+s}')
  until "$@"; do
    if awk -v t="$EPOCHREALTIME" -v d="$deadline" 'BEGIN{exit !(t > d)}'; then
      echo "timed out after ${limit}s waiting for: $*"
      return 1
    fi
    sleep 0.02
  done
}

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------
no_process_matching() { ! pgrep -f -- "$1" >/dev/null; }

# assert_no_process PATTERN: no process whose command line contains PATTERN remains. A
# killed process may take a moment to leave the process table, hence the short wait.
assert_no_process() {
  if ! wait_until 2 no_process_matching "$1" >/dev/null; then
    echo "processes left over:"
    pgrep -a -f -- "$1"
    return 1
  fi
}

# zombie_children PID...: print the pids of zombie (Z state) children of the given pids.
zombie_children() {
  local f line rest state ppid p
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue # no fork per process: fast under load
    rest=${line##*) }          # after "pid (comm) "
    state=${rest%% *}
    rest=${rest#* }
    ppid=${rest%% *}
    [[ $state == Z ]] || continue
    for p in "$@"; do
      [[ $ppid == "$p" ]] && { f=${f#/proc/}; echo "${f%/stat}"; }
    done
  done
  return 0
}

# start_bg OUT ERR ARGS...: start `concur ARGS` in the background (stdout to OUT, stderr to
# ERR) with SIGINT at its default disposition, as in a terminal (a non-interactive shell
# starts background jobs with SIGINT ignored). Sets BG_PID.
start_bg() {
  local out=$1 err=$2; shift 2
  if env --default-signal=INT true 2>/dev/null; then
    env --default-signal=INT "$CONCUR" "$@" >"$out" 2>"$err" </dev/null &
  else
    python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])' "$CONCUR" "$@" >"$out" 2>"$err" </dev/null &
  fi
  BG_PID=$!
}

# line_count FILE: number of lines (0 when FILE does not exist)
line_count() { if [[ -e $1 ]]; then wc -l <"$1"; else echo 0; fi; }
at_least_lines() { [[ $(line_count "$2") -ge $1 ]]; }

# max_overlap FILE: jobs append "S" when they start and "E" when they end; prints the
# largest number of jobs that ran at the same time.
max_overlap() {
  awk '$1 == "S" { c++; if (c > m) m = c } $1 == "E" { c-- } END { print m + 0 }' "$1"
}

# The options concur documents (short options with a long alias are listed by the short one).
CONCUR_OPTIONS=(
  -a -0 --null -d --colsep --trim --header --link --xapply -n -s --max-chars -X -q --plus -I --replace -r --no-run-if-empty --pipe --spreadstdin --block --recend --recstart -N -L -j -P --max-procs --timeout --termseq --retries --halt --nice --delay --env --compress
  --line-buffer -u -k --tag --tagstring --results --json --joblog --resume --resume-failed
  --bar --eta --progress --dry-run --report --tmpdir -t -v --help --version
)
