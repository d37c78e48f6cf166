#!/usr/bin/env bash
# Builds concur (build/release, the same configuration scripts/test.sh uses) and runs the
# main job: the concur command on a built-in example, five sleeps on four slots with a 5 s
# timeout and pyconcurrent's report at the end (the 7 s one is stopped: exit status 1).
# Usage: scripts/run.sh                  the built-in example
#        scripts/run.sh ARGS...          concur ARGS... instead
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
dir=build/release

scripts/setup.sh

gen=()
[[ ! -f $dir/CMakeCache.txt ]] && command -v ninja >/dev/null && gen=(-G Ninja)
mkdir -p build
log=build/release.log
if ! { cmake -S "$root" -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DCONCUR_WERROR=ON -DBUILD_TESTING=ON -DCONCUR_SANITIZE= &&
       cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" --target concur; } \
     >"$log" 2>&1; then
  tail -n 80 "$log" >&2
  echo "run.sh: build failed (full log: $log)" >&2
  exit 1
fi

if [[ $# -eq 0 ]]; then
  set -- -j 4 --timeout 5 --report sleep ::: 1 7 2 2 1
  echo "+ concur $*" >&2
fi
exec "$dir/cli/concur" "$@"
