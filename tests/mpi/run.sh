#!/usr/bin/env bash
# Runs test_mpi on 3 ranks under mpirun (tests/mpi/mpirun.sh), then alone (one process:
# MPI pools run locally). usage: run.sh MPIEXEC TEST_MPI PLUGIN
set -uo pipefail
mpiexec=$1 test=$2 plugin=$3
here=$(cd "$(dirname "$0")" && pwd)
status=0
echo "# mpirun -n 3"
bash "$here/mpirun.sh" "$mpiexec" "$test" "$plugin"
rc=$?
[[ $rc -eq 77 ]] && exit 77 # mpirun cannot start ranks here (mpirun.sh said why)
[[ $rc -eq 0 ]] || status=1
echo "# mpirun -n 3, MPI started by the program"
bash "$here/mpirun.sh" "$mpiexec" "$test" "$plugin" --own-mpi || status=1
echo "# mpirun -n 3, main returns with its pool open"
timeout 60 bash "$here/mpirun.sh" "$mpiexec" "$test" "$plugin" --leave-open || status=1
echo "# without mpirun"
"$test" "$plugin" || status=1
exit $status
