#!/usr/bin/env bash
# Builds the benchmarks and runs concur and every available peer on each
# selected bench, then prints the RESULT lines and a table relative to concur.
#
# usage: bench/run.sh [NAME...]     NAME: a bench name or a glob ('tp_*');
#                                   default: the DEFAULT_SELECTION below.
# Output: RESULT / NOTE / SKIPPED / FAILED lines, then the ratio table.
# Exit status: 0 when everything that exists ran; 1 when a build or a run
# failed; 2 for a usage error. A missing peer or concur program is "skipped".
# Logs: build/bench/configure.log, build.log, run.log.
set -uo pipefail

# --- the table --------------------------------------------------------------
# One row per bench and system: "bench system program". Every program is run
# as "program bench" and prints "RESULT bench system metric value unit".
#   program = concur   -> bench/concur_<bench>.c, else bench/concur_<family>.c
#                         (family = bench name up to its first "_", e.g. tp)
#   program = x.py     -> the script bench/x.py, run with python3 as
#                         "x.py bench system" (scripts serving one system
#                         ignore the second argument)
#   program = x.sh     -> the script bench/x.sh, run with bash as
#                         "x.sh bench system" (one script serves every system)
#   program = other    -> that program, built from bench/ by CMake
# A program that prints "SKIPPED reason" and no RESULT line (exit 0) is
# reported as skipped (e.g. launch.sh when a system is not installed); its
# "NOTE ..." lines are shown too.
# To add a bench: add its rows here (and to DEFAULT_SELECTION if it should run
# by default). Order of rows = order of output.
ROWS='
tp_throughput  concur  concur
tp_throughput  tbb     peer_tbb
tp_throughput  openmp  peer_omp
tp_throughput  libuv   peer_uv
tp_throughput  python  peer_python.py

tp_map         concur  concur
tp_map         tbb     peer_tbb
tp_map         openmp  peer_omp
tp_map         python  peer_python.py

tp_map_fn      concur  concur

tp_latency     concur  concur
tp_latency     tbb     peer_tbb
tp_latency     openmp  peer_omp
tp_latency     libuv   peer_uv
tp_latency     python  peer_python.py

tp_memory      concur  concur
tp_memory      tbb     peer_tbb
tp_memory      libuv   peer_uv
tp_memory      python  peer_python.py

launch_true    concur         launch.sh
launch_true    xargs          launch.sh
launch_true    parallel       launch.sh
launch_true    floor          launch.sh

launch_sleep   concur         launch.sh
launch_sleep   xargs          launch.sh
launch_sleep   parallel       launch.sh
launch_sleep   floor          launch.sh

launch_output  concur         launch.sh
launch_output  xargs          launch.sh
launch_output  parallel       launch.sh
launch_output  floor          launch.sh
launch_output  floor_grouped  launch.sh

launch_memory  concur         launch.sh
launch_memory  xargs          launch.sh
launch_memory  parallel       launch.sh
launch_memory  floor          launch.sh

pipe_throughput  concur      pipe.sh
pipe_throughput  parallel    pipe.sh

pp_throughput    concur       concur
pp_throughput    python_pool  peer_python_pp.py
pp_throughput    python_ppe   peer_python_pp.py

pp_map           concur       concur
pp_map           python_pool  peer_python_pp.py
pp_map           python_ppe   peer_python_pp.py

pp_latency       concur       concur
pp_latency       python_pool  peer_python_pp.py
pp_latency       python_ppe   peer_python_pp.py
pp_latency       floor        floor_pipe

pp_latency_busy  concur       concur
pp_latency_busy  python_pool  peer_python_pp.py
pp_latency_busy  python_ppe   peer_python_pp.py
pp_latency_busy  floor        floor_pipe

pp_startup       concur       concur
pp_startup       python_pool  peer_python_pp.py
pp_startup       python_ppe   peer_python_pp.py
pp_startup       floor        floor_pipe

co_switch        concur       concur
co_switch        asyncio      peer_python_co.py
co_switch        gevent       peer_python_co.py
co_switch        floor        floor_fcontext

co_spawn         concur       concur
co_spawn         asyncio      peer_python_co.py
co_spawn         gevent       peer_python_co.py

co_sleep         concur       concur
co_sleep         asyncio      peer_python_co.py
co_sleep         gevent       peer_python_co.py

co_pingpong      concur       concur
co_pingpong      asyncio      peer_python_co.py
co_pingpong      gevent       peer_python_co.py
co_pingpong      floor        floor_uring

mpi_throughput   concur       mpi.sh
mpi_throughput   mpi4py       mpi.sh
mpi_map          concur       mpi.sh
mpi_map          mpi4py       mpi.sh
mpi_latency      concur       mpi.sh
mpi_latency      mpi4py       mpi.sh
mpi_cli          concur       mpi.sh
mpi_cli          local        mpi.sh
'
DEFAULT_SELECTION=('tp_*' 'pp_*' 'launch_*' 'co_*' 'mpi_*' 'pipe_*')
RUN_TIMEOUT=120   # seconds per program run; past it the run counts as failed

# Which direction is better, from the metric and unit of a RESULT line.
better_direction() {  # metric unit -> "lower" | "higher" | "?"
  case "$1 $2" in
    *per_s\ * | *\ */s) echo higher ;;
    *\ ns | *\ us | *\ ms | *\ s | *\ seconds | *\ bytes | *\ kib | *\ mib) echo lower ;;
    *) echo "?" ;;
  esac
}

# --- setup --------------------------------------------------------------------
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=$ROOT/build/bench
BIN=$BUILD/bench            # bench/CMakeLists.txt puts every program here
mkdir -p "$BUILD"
RUN_LOG=$BUILD/run.log
# For launch.sh: the concur CLI (the top level builds it from cli/) and our programs.
export CONCUR_CLI=$BUILD/cli/concur BENCH_BIN=$BIN
: >"$RUN_LOG"
status=0

all_benches=$(awk 'NF && !seen[$1]++ {print $1}' <<<"$ROWS")
selected=()
patterns=("$@")
[[ $# -eq 0 ]] && patterns=("${DEFAULT_SELECTION[@]}")
for pat in "${patterns[@]}"; do
  hit=0
  for b in $all_benches; do
    # shellcheck disable=SC2053  # $pat is deliberately a glob
    if [[ $b == $pat ]]; then
      hit=1
      [[ " ${selected[*]-} " == *" $b "* ]] || selected+=("$b")
    fi
  done
  if [[ $hit -eq 0 ]]; then
    echo "run.sh: unknown bench '$pat' (known: ${all_benches//$'\n'/ })" >&2
    exit 2
  fi
done

# --- build --------------------------------------------------------------------
echo "building (logs in $BUILD) ..." >&2
if ! cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCONCUR_BUILD_BENCH=ON \
    -DBUILD_TESTING=OFF >"$BUILD/configure.log" 2>&1; then
  echo "run.sh: cmake configure failed; see $BUILD/configure.log" >&2
  tail -n 20 "$BUILD/configure.log" >&2
  exit 1
fi
jobs=$(nproc 2>/dev/null || echo 2)
if ! cmake --build "$BUILD" -j "$jobs" >"$BUILD/build.log" 2>&1; then
  # Find which bench programs fail to build and remove their binaries, so a
  # stale one from an earlier build is never run.
  status=1
  echo "run.sh: build failed; see $BUILD/build.log" >&2
  progs=$(awk 'NF && $3 != "concur" && $3 !~ /\.(py|sh)$/ && !seen[$3]++ {print $3}' <<<"$ROWS")
  progs+=" floor_spawn"  # run by launch.sh
  for src in "$HERE"/concur_*.c; do [[ -e $src ]] && progs+=" $(basename "$src" .c)"; done
  for p in $progs; do
    if [[ ! -d $BIN/CMakeFiles/$p.dir ]]; then  # not a target (dependency missing)
      rm -f "$BIN/$p" "$BIN/.$p.build-failed"
      continue
    fi
    if ! cmake --build "$BUILD" --target "$p" >>"$BUILD/build.log" 2>&1; then
      rm -f "$BIN/$p"
      echo "run.sh: $p did not build" >&2
      touch "$BIN/.$p.build-failed" 2>/dev/null
    else
      rm -f "$BIN/.$p.build-failed"
    fi
  done
  # The concur CLI (cli/, whatever its target is called): build that directory
  # alone; on failure drop the binary so a stale one is never measured
  # (launch.sh then reports the concur rows as FAILED).
  if [[ -d $BUILD/cli ]]; then
    if cmake --build "$BUILD/cli" >>"$BUILD/build.log" 2>&1; then
      rm -f "$BUILD/cli/.concur.build-failed"
    else
      echo "run.sh: the concur CLI did not build" >&2
      rm -f "$CONCUR_CLI"
      touch "$BUILD/cli/.concur.build-failed"
    fi
  fi
else
  rm -f "$BIN"/.*.build-failed "$BUILD/cli/.concur.build-failed" 2>/dev/null
fi

# Sets CMD (array) for a row, or SKIP (reason) and KIND (SKIPPED when the
# program does not exist, FAILED when it did not build) when it cannot run.
resolve() {  # bench program system
  local bench=$1 prog=$2 system=$3 p candidates
  CMD=() SKIP="" KIND=SKIPPED
  if [[ $prog == *.sh ]]; then
    CMD=(bash "$HERE/$prog" "$bench" "$system")
    return
  fi
  if [[ $prog == *.py ]]; then
    # The co_* peers need gevent, from the system's Python (Debian's python3-gevent).
    if [[ $prog == peer_python_co.py && -x /usr/bin/python3 ]]; then
      CMD=(/usr/bin/python3 "$HERE/$prog" "$bench" "$system")
    elif command -v python3 >/dev/null; then CMD=(python3 "$HERE/$prog" "$bench" "$system")
    else SKIP="python3 not found"; fi
    return
  fi
  candidates=("$prog")
  [[ $prog == concur ]] && candidates=("concur_$bench" "concur_${bench%%_*}")
  for p in "${candidates[@]}"; do
    if [[ -e $BIN/.$p.build-failed ]]; then
      SKIP="$p failed to build (see $BUILD/build.log)" KIND=FAILED
      return
    elif [[ -x $BIN/$p ]]; then
      CMD=("$BIN/$p" "$bench")
      return
    fi
  done
  if [[ $prog == concur ]]; then
    SKIP="no concur program (bench/concur_$bench.c or bench/concur_${bench%%_*}.c)"
  else
    SKIP="$prog not built (dependency not found)"
  fi
}

# --- run ----------------------------------------------------------------------
# Everything goes to RESULTS as "bench system metric value unit" or
# "bench system - SKIPPED|FAILED reason".
RESULTS=""
for bench in "${selected[@]}"; do
  while read -r b system prog; do
    [[ $b == "$bench" ]] || continue
    resolve "$bench" "$prog" "$system"
    if [[ -n $SKIP ]]; then
      echo "$KIND $bench $system $SKIP"
      RESULTS+="$bench $system - $KIND $SKIP"$'\n'
      continue
    fi
    echo "== $bench $system: ${CMD[*]}" >>"$RUN_LOG"
    out=$(timeout "$RUN_TIMEOUT" "${CMD[@]}" 2>>"$RUN_LOG")
    rc=$?
    printf '%s\n' "$out" >>"$RUN_LOG"
    lines=$(grep -E "^RESULT $bench(_[a-z0-9]+)* " <<<"$out")  # with sub-results (tp_latency_idle)
    notes=$(grep -E "^NOTE " <<<"$out")
    [[ -n $notes ]] && echo "$notes"
    skipped=$(grep -m1 -E "^SKIPPED " <<<"$out")
    if [[ $rc -eq 0 && -z $lines && -n $skipped ]]; then  # the program says it cannot run
      why=${skipped#SKIPPED }
      echo "SKIPPED $bench $system $why"
      RESULTS+="$bench $system - SKIPPED $why"$'\n'
      continue
    fi
    if [[ $rc -ne 0 || -z $lines ]]; then
      why="exit status $rc"
      [[ $rc -eq 124 ]] && why="timed out after ${RUN_TIMEOUT}s"
      [[ $rc -eq 0 ]] && why="no RESULT line for $bench"
      echo "FAILED $bench $system $why (see $RUN_LOG)"
      RESULTS+="$bench $system - FAILED $why"$'\n'
      status=1
      continue
    fi
    echo "$lines"
    RESULTS+=$(cut -d' ' -f2- <<<"$lines")$'\n'
  done <<<"$ROWS"
done
grep -q ' - FAILED ' <<<"$RESULTS" && status=1

# --- ratio table --------------------------------------------------------------
echo
echo "Relative to concur (ratio = system value / concur value, same metric):"
for bench in "${selected[@]}"; do
  rows=$(awk -v b="$bench" '$1 == b' <<<"$RESULTS")
  [[ -n $rows ]] || continue
  echo
  # Each metric of the bench gets its own direction line.
  while read -r metric unit; do
    echo "$bench  $metric ($unit): $(better_direction "$metric" "$unit") is better"
  done < <(awk '$3 != "-" && !seen[$3]++ {print $3, $5}' <<<"$rows")
  awk -v dirs="$(awk '$3 != "-" && !seen[$3]++ {print $3, $5}' <<<"$rows" |
                 while read -r m u; do printf '%s=%s;' "$m" "$(better_direction "$m" "$u")"; done)" '
    BEGIN {
      n = split(dirs, d, ";")
      for (i = 1; i <= n; i++) if (split(d[i], kv, "=") == 2) dir[kv[1]] = kv[2]
    }
    { line[NR] = $0 }
    $2 == "concur" && $3 != "-" { base[$3] = $4 }
    END {
      printf "  %-13s %-20s %14s %-6s %9s  %s\n", "system", "metric", "value", "unit", "ratio", "verdict"
      for (i = 1; i <= NR; i++) {
        split(line[i], f, " ")
        if (f[3] == "-") {                      # skipped / failed
          rest = line[i]; sub(/^[^ ]+ [^ ]+ - [^ ]+ /, "", rest)
          printf "  %-13s %s: %s\n", f[2], (f[4] == "SKIPPED" ? "skipped" : "FAILED"), rest
          continue
        }
        m = f[3]; v = f[4] + 0
        if (!(m in base)) { ratio = "n/a"; verdict = "no concur result" }
        else if (f[2] == "concur") { ratio = "1.00"; verdict = "" }
        else if (base[m] + 0 == 0 || v == 0) { ratio = "n/a"; verdict = "zero value" }
        else {
          r = v / base[m]; ratio = sprintf("%.2f", r)
          if (dir[m] == "?") verdict = "direction unknown"
          else {
            peer_better = (dir[m] == "lower") ? (r < 1) : (r > 1)
            x = (r >= 1) ? r : 1 / r
            if (sprintf("%.2f", x) == "1.00") verdict = "same"
            else if (peer_better) verdict = sprintf("%s better by %.2fx", f[2], x)
            else verdict = sprintf("concur better by %.2fx", x)
          }
        }
        printf "  %-13s %-20s %14s %-6s %9s  %s\n", f[2], m, f[4], f[5], ratio, verdict
      }
    }' <<<"$rows"
done
exit $status
