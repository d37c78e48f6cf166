#!/usr/bin/env bash
# The mpi_* benches on 3 local ranks (rank 0 coordinates, ranks 1 and 2 serve).
# usage: mpi.sh BENCH SYSTEM     SYSTEM: concur (concur_mpi) | mpi4py (mpi4py.futures)
#        mpi.sh mpi_cli SYSTEM   SYSTEM: concur (mpirun -n 2 concur --mpi -j1) | local (concur -j2)
# mpi_cli runs 5,000 x /bin/true; its rate is the jobs over the span of the joblog, from the
# first job's start to the last one's end (so mpirun's own start-up, about the same for any
# number of jobs, is left out; the wall time with it is printed as a NOTE).
# Prints the program's RESULT / NOTE lines, or "SKIPPED reason" when mpirun, the program or
# mpi4py is missing.
set -uo pipefail
bench=$1 system=$2
here=$(cd "$(dirname "$0")" && pwd)
command -v mpirun >/dev/null || { echo "SKIPPED mpirun not found (openmpi-bin)"; exit 0; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# stdin stays with the caller: mpirun would forward it to rank 0 (and run.sh reads its table there)
mpirun=(mpirun -n 3 --oversubscribe)
# mpi_cli: the jobs per second of one run, from its joblog; the median of 3 runs.
mpi_cli() {
  local cli=${CONCUR_CLI:-$here/../build/bench/cli/concur} n=5000 rates=() walls=()
  [[ -x $cli ]] || { echo "SKIPPED $cli not built"; exit 0; }
  if [[ $system == concur ]]; then
    [[ -x ${cli}-mpi ]] || { echo "SKIPPED ${cli}-mpi not built (no MPI found at build time)"; exit 0; }
    run=(mpirun -n 2 --oversubscribe "$cli" --mpi -j1)
  else
    run=("$cli" -j2)
  fi
  dir=$(mktemp -d) || exit 1   # global: the EXIT trap reads it
  trap 'rm -rf "$dir"' EXIT
  seq "$n" >"$dir/args"
  for pass in 1 2 3; do
    local t0 t1
    t0=$(date +%s.%N)
    "${run[@]}" --joblog "$dir/log" -a "$dir/args" /bin/true </dev/null >/dev/null ||
      { echo "mpi.sh: mpi_cli $system: the run failed" >&2; exit 1; }
    t1=$(date +%s.%N)
    [[ $(($(wc -l <"$dir/log") - 1)) -eq $n ]] ||
      { echo "mpi.sh: mpi_cli $system: the joblog does not list $n jobs" >&2; exit 1; }
    rates+=("$(awk -F'\t' -v n="$n" 'NR > 1 { if (!s || $3 < s) s = $3; e0 = $3 + $4; if (e0 > e) e = e0 }
                                     END { printf "%.1f", n / (e - s) }' "$dir/log")")
    walls+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')")
  done
  local med
  med=$(printf '%s\n' "${rates[@]}" | sort -g | sed -n 2p)
  echo "RESULT mpi_cli $system jobs_per_s $med jobs/s"
  echo "NOTE mpi_cli $system passes: ${rates[*]} jobs/s; wall with start-up ${walls[*]} s"
}

case $system in
  *) [[ $bench == mpi_cli ]] && { mpi_cli; exit 0; } ;;&
  concur)
    prog=${BENCH_BIN:-$here/../build/bench/bench}/concur_mpi
    [[ -x $prog ]] || { echo "SKIPPED $prog not built (no MPI found at build time)"; exit 0; }
    exec "${mpirun[@]}" "$prog" "$bench" </dev/null ;;
  mpi4py)
    # Debian's python3-mpi4py lives in the system python, not a virtualenv's.
    py=/usr/bin/python3
    "$py" -c 'import mpi4py.futures' 2>/dev/null || { echo "SKIPPED mpi4py not installed (python3-mpi4py)"; exit 0; }
    exec "${mpirun[@]}" "$py" -m mpi4py.futures "$here/peer_python_mpi.py" "$bench" </dev/null ;;
  *) echo "mpi.sh: unknown system $system" >&2; exit 2 ;;
esac
