#!/usr/bin/env bash
# Builds concur (build/release, the same configuration scripts/test.sh uses) and runs the
# main program. Until the concur CLI exists this is the pool_primes example.
# Usage: scripts/run.sh [arguments passed to the program]
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
dir=build/release
main=examples/pool_primes

scripts/setup.sh

if [[ ! -f $main.c ]]; then
  echo "run.sh: $main.c does not exist yet, so there is no main program to run" >&2
  exit 1
fi

gen=()
[[ ! -f $dir/CMakeCache.txt ]] && command -v ninja >/dev/null && gen=(-G Ninja)
mkdir -p build
log=build/release.log
if ! { cmake -S "$root" -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DCONCUR_WERROR=ON -DBUILD_TESTING=ON -DCONCUR_SANITIZE= &&
       cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" --target "$(basename "$main")"; } \
     >"$log" 2>&1; then
  tail -n 80 "$log" >&2
  echo "run.sh: build failed (full log: $log)" >&2
  exit 1
fi

if [[ ! -x $dir/$main ]]; then
  echo "run.sh: $dir/$main was not built" >&2
  exit 1
fi
exec "$dir/$main" "$@"
