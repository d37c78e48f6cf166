#!/usr/bin/env bash
# Runs a program on 3 local ranks: mpirun.sh MPIEXEC PROGRAM [ARGS...]
# Exit status: the program's (mpirun's), or 77 when mpirun cannot start ranks here.
# As root, Open MPI refuses to start without the ALLOW_RUN_AS_ROOT pair; on a 2-CPU machine 3
# ranks need --oversubscribe. Single-copy transfers between ranks (CMA) need ptrace rights
# that containers often withhold: plain copies instead. Under a sanitizer, Open MPI's own
# reports are suppressed (lsan.supp, tsan.supp say which, and why); stdin is not forwarded.
set -uo pipefail
mpiexec=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
libs=$(ldd "$1" 2>/dev/null)
if [[ $libs == *libasan* ]]; then
  # full stacks, so that a suppression matches only what Open MPI allocated
  export LSAN_OPTIONS="suppressions=$here/lsan.supp:fast_unwind_on_malloc=0:print_suppressions=0"
fi
if [[ $libs == *libtsan* ]]; then
  export TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}suppressions=$here/tsan.supp"
fi
# A machine where mpirun cannot start ranks at all (a container without the shared memory
# or the network Open MPI needs): status 77, CTest's SKIP_RETURN_CODE, with the reason.
if ! probe=$(timeout 60 "$mpiexec" -n 2 --oversubscribe true </dev/null 2>&1); then
  echo "SKIP: $mpiexec cannot start 2 ranks on this machine:"
  printf '%s\n' "$probe" | head -n 20
  exit 77
fi
exec "$mpiexec" -n 3 --oversubscribe "$@" </dev/null
