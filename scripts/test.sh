#!/usr/bin/env bash
# Builds concur and runs its test suite (Criterion tests, examples, install test) in three
# configurations, each in its own build directory:
#   release  build/release  RelWithDebInfo, -Werror
#   asan     build/asan     CONCUR_SANITIZE=address (ASan + UBSan), -O1 -g
#   tsan     build/tsan     CONCUR_SANITIZE=thread (TSan), -O1 -g
# Usage: scripts/test.sh [release|asan|tsan]   (no argument: all three)
# Exits non-zero if any configure, build or test step fails. The last line printed is
# "N passed, N failed", summed over the ctest runs (a configure/build failure counts as 1
# failed). Configure/build output goes to build/<config>.log (its tail is shown on failure).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
root=$PWD

configs=(release asan tsan)
if [[ $# -gt 1 ]]; then
  echo "usage: $0 [release|asan|tsan]" >&2
  exit 2
elif [[ $# -eq 1 ]]; then
  case $1 in
    release | asan | tsan) configs=("$1") ;;
    *) echo "usage: $0 [release|asan|tsan]" >&2; exit 2 ;;
  esac
fi

scripts/setup.sh || { echo "test.sh: scripts/setup.sh failed" >&2; exit 1; }

jobs=$(nproc 2>/dev/null || echo 2)
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

total_pass=0
total_fail=0
status=0
summary=()

# TSan's runtime needs the address-space layout it was built for. With a large
# vm.mmap_rnd_bits (some Linux 6.x configurations; older libtsan such as gcc 12's) a TSan
# binary can die at start-up with "FATAL: ThreadSanitizer: unexpected memory mapping".
# Running the TSan tests with ASLR disabled (setarch -R, inherited by child processes)
# avoids that, and also keeps the test executables' layout identical in Criterion's
# runner and its worker processes (see the rand_r note in CMakeLists.txt). Used whenever
# setarch works here (it needs the personality syscall, which some sandboxes block).
tsan_wrap=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
  tsan_wrap=(setarch "$(uname -m)" -R)
fi

run_config() {
  local cfg=$1 dir=build/$1 log=build/$1.log
  local -a args=(-DCONCUR_WERROR=ON -DBUILD_TESTING=ON)
  local -a wrap=()
  case $cfg in
    release) args+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONCUR_SANITIZE=) ;;
    asan) args+=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" -DCONCUR_SANITIZE=address) ;;
    tsan)
      args+=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" -DCONCUR_SANITIZE=thread)
      wrap=("${tsan_wrap[@]}")
      ;;
  esac

  echo "=== $cfg: configure + build ($dir, log: $log)"
  mkdir -p build
  # Keep the generator of an existing build directory.
  local -a gen=("${generator[@]}")
  [[ -f $dir/CMakeCache.txt ]] && gen=()
  if ! { cmake -S "$root" -B "$dir" "${gen[@]}" "${args[@]}" &&
         cmake --build "$dir" -j "$jobs"; } >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "=== $cfg: BUILD FAILED (full log: $log)"
    summary+=("$cfg: build failed")
    total_fail=$((total_fail + 1))
    status=1
    return
  fi

  echo "=== $cfg: ctest${wrap[*]:+ (under ${wrap[*]})}"
  local out=build/$cfg.ctest.log rc
  # The "slow" tests (flat memory over 100,000 jobs) measure the release build; under a
  # sanitizer they would only measure the sanitizer, at many times the cost.
  local -a sel=()
  [[ $cfg != release ]] && sel=(-LE slow)
  (cd "$dir" && "${wrap[@]}" ctest --output-on-failure --no-tests=error -j2 "${sel[@]}") 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}

  local line pass=0 fail=0 n
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -n1)
  if [[ -n $line ]]; then
    fail=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")
    n=$(sed -E 's/.*failed out of ([0-9]+).*/\1/' <<<"$line")
    pass=$((n - fail))
  elif [[ $rc -ne 0 ]]; then
    fail=1 # ctest itself failed (e.g. no tests found)
  fi
  total_pass=$((total_pass + pass))
  total_fail=$((total_fail + fail))
  summary+=("$cfg: $pass passed, $fail failed")
  if [[ $rc -ne 0 ]]; then
    status=1
  fi
}

for cfg in "${configs[@]}"; do
  run_config "$cfg"
done

echo "=== summary"
printf '  %s\n' "${summary[@]}"
echo "$total_pass passed, $total_fail failed"
exit $status
