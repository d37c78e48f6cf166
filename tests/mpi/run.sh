#!/usr/bin/env bash
# Runs test_mpi on 3 ranks under mpirun, then alone (one process, pools run locally).
# usage: run.sh MPIEXEC TEST_MPI PLUGIN
set -uo pipefail
mpiexec=$1 test=$2 plugin=$3
# As root, Open MPI refuses to start without these; on a 2-CPU machine 3 ranks need
# --oversubscribe. Single-copy transfers between ranks (CMA) need ptrace rights that
# containers often withhold: plain copies instead.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# Under ASan: Open MPI's own start-up allocations are not leaks of concur (lsan.supp says
# which, and why); full stacks, so that a suppression matches only what Open MPI allocated.
if ldd "$test" 2>/dev/null | grep -q libasan; then
  export LSAN_OPTIONS="suppressions=$(dirname "$0")/lsan.supp:fast_unwind_on_malloc=0:print_suppressions=0"
fi
if ldd "$test" 2>/dev/null | grep -q libtsan; then
  export TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}suppressions=$(dirname "$0")/tsan.supp"
fi
status=0
echo "# mpirun -n 3"
"$mpiexec" -n 3 --oversubscribe "$test" "$plugin" || status=1
echo "# without mpirun"
"$test" "$plugin" || status=1
exit $status
