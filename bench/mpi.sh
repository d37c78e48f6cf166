#!/usr/bin/env bash
# The mpi_* benches on 3 local ranks (rank 0 coordinates, ranks 1 and 2 serve).
# usage: mpi.sh BENCH SYSTEM     SYSTEM: concur (concur_mpi) | mpi4py (mpi4py.futures)
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
case $system in
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
