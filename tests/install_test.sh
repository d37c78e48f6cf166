#!/usr/bin/env bash
# Install smoke test (CTest: install_pkgconfig).
# Usage: tests/install_test.sh <source dir> <build dir>
# Installs the build into a temporary prefix, then checks that an outside program can use
# it through pkg-config (shared libconcur.so) and through find_package(concur) (both the
# concur::concur and concur::static targets), and, in a build with MPI, libconcur_mpi the
# same two ways. Exits non-zero on any failure.
set -euo pipefail

src=${1:?usage: install_test.sh <source dir> <build dir>}
build=${2:?usage: install_test.sh <source dir> <build dir>}
src=$(cd "$src" && pwd)
build=$(cd "$build" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/concur-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { printf 'install_test: %s\n' "$*"; }
fail() { printf 'install_test: FAIL: %s\n' "$*" >&2; exit 1; }

example=$src/examples/pool_primes.c
if [[ ! -f $example ]]; then
  example=$(find "$src/examples" -maxdepth 1 -name '*.c' 2>/dev/null | LC_ALL=C sort | head -n1)
  [[ -n $example ]] || fail "no examples/*.c to build against the installed library"
fi
step "using example $example"

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }

pcdir=$(dirname "$(find "$prefix" -name concur.pc -print -quit)")
[[ -f $pcdir/concur.pc ]] || fail "concur.pc was not installed"
libdir=$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=libdir concur)
libdir=$(cd "$libdir" && pwd -P) || fail "pkg-config libdir does not exist"
[[ -e $libdir/libconcur.so && -e $libdir/libconcur.a ]] || fail "libconcur.{so,a} not in $libdir"
[[ -f $prefix/include/concur.h ]] || fail "include/concur.h was not installed"
# The shared library exports the public API only (no concur__ internals, no fcontext).
leaked=$(nm -D --defined-only "$libdir/libconcur.so" | awk '{print $3}' | grep -Ev '^concur_[a-z0-9]' || true)
[[ -z $leaked ]] || fail "libconcur.so exports names outside the API: $(echo $leaked)"

# 1. pkg-config consumer, linked against the shared library.
step "pkg-config: $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs concur)"
# shellcheck disable=SC2046 # word splitting of the pkg-config output is intended
cc -o "$tmp/pc_example" "$example" $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs concur) \
  || fail "compiling $example with pkg-config flags"
ldd_out=$(LD_LIBRARY_PATH=$libdir ldd "$tmp/pc_example") || fail "ldd pc_example failed"
[[ $ldd_out == *"$libdir/libconcur.so.0"* ]] \
  || { printf '%s\n' "$ldd_out" >&2; fail "pc_example does not load libconcur.so.0 from the install prefix"; }
LD_LIBRARY_PATH=$libdir "$tmp/pc_example" >"$tmp/pc_example.out" 2>&1 \
  || { cat "$tmp/pc_example.out" >&2; fail "pkg-config-built example exited non-zero"; }
step "pkg-config example ran OK"

# 2. CMake consumer: find_package(concur) with both exported targets.
mkdir -p "$tmp/consumer"
cp "$example" "$tmp/consumer/main.c"
cat >"$tmp/consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(concur_consumer LANGUAGES C)
find_package(concur 0.1 REQUIRED)
add_executable(shared_app main.c)
target_link_libraries(shared_app PRIVATE concur::concur)
add_executable(static_app main.c)
target_link_libraries(static_app PRIVATE concur::static)
CMAKE
step "configuring a find_package(concur) consumer"
{
  cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
  cmake --build "$tmp/consumer/build"
} >"$tmp/consumer.log" 2>&1 || { cat "$tmp/consumer.log" >&2; fail "CMake consumer did not build"; }
LD_LIBRARY_PATH=$libdir "$tmp/consumer/build/shared_app" >"$tmp/shared_app.out" 2>&1 \
  || { cat "$tmp/shared_app.out" >&2; fail "concur::concur consumer exited non-zero"; }
"$tmp/consumer/build/static_app" >"$tmp/static_app.out" 2>&1 \
  || { cat "$tmp/static_app.out" >&2; fail "concur::static consumer exited non-zero"; }
step "find_package consumers (concur::concur, concur::static) ran OK"

# 2b. With MPI (concur-mpi.pc installed): a pkg-config consumer of libconcur_mpi runs alone
#     (one process: the MPI pool runs locally); libconcur_mpi exports the API only; a
#     find_package consumer links concur::concur_mpi.
if [[ -f $pcdir/concur-mpi.pc ]]; then
  mpi_example=$src/examples/mpi_primes.c
  step "pkg-config concur-mpi: $(PKG_CONFIG_PATH=$pcdir pkg-config --libs concur-mpi)"
  # shellcheck disable=SC2046 # word splitting of the pkg-config output is intended
  cc -o "$tmp/mpi_example" "$mpi_example" $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs concur-mpi) \
    || fail "compiling $mpi_example with concur-mpi's pkg-config flags"
  LD_LIBRARY_PATH=$libdir "$tmp/mpi_example" >"$tmp/mpi_example.out" 2>&1 \
    || { cat "$tmp/mpi_example.out" >&2; fail "the concur-mpi example exited non-zero"; }
  leaked=$(nm -D --defined-only "$libdir/libconcur_mpi.so" | awk '{print $3}' | grep -Ev '^concur_[a-z0-9]' || true)
  [[ -z $leaked ]] || fail "libconcur_mpi.so exports names outside the API: $(echo $leaked)"
  mkdir -p "$tmp/mpi_consumer"
  cp "$mpi_example" "$tmp/mpi_consumer/main.c"
  cat >"$tmp/mpi_consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(concur_mpi_consumer LANGUAGES C)
find_package(concur 0.1 REQUIRED)
add_executable(mpi_app main.c)
target_link_libraries(mpi_app PRIVATE concur::concur_mpi)
CMAKE
  {
    cmake -S "$tmp/mpi_consumer" -B "$tmp/mpi_consumer/build" -DCMAKE_PREFIX_PATH="$prefix" &&
    cmake --build "$tmp/mpi_consumer/build"
  } >"$tmp/mpi_consumer.log" 2>&1 || { cat "$tmp/mpi_consumer.log" >&2; fail "the concur::concur_mpi consumer did not build"; }
  LD_LIBRARY_PATH=$libdir "$tmp/mpi_consumer/build/mpi_app" >"$tmp/mpi_app.out" 2>&1 \
    || { cat "$tmp/mpi_app.out" >&2; fail "the concur::concur_mpi consumer exited non-zero"; }
  step "concur-mpi consumers (pkg-config, concur::concur_mpi) ran OK"
fi

# 3. A machine without Criterion (pkg-config hidden from CMake): the library and the
#    command build and install; the configure step says the tests are not built.
step "configure + build + install without Criterion"
{
  cmake -S "$src" -B "$tmp/nocr" -DCMAKE_BUILD_TYPE=Release -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON &&
  cmake --build "$tmp/nocr" -j 2 &&
  cmake --install "$tmp/nocr" --prefix "$tmp/nocr-prefix"
} >"$tmp/nocr.log" 2>&1 || { tail -n 40 "$tmp/nocr.log" >&2; fail "no-Criterion build or install failed"; }
tr -s " \n" "  " <"$tmp/nocr.log" | grep -q "was not found: the tests are not built" \
  || fail "the configure step did not say that the tests are not built"
# (CMakeFiles holds CMake's own probes, such as FindMPI's test_mpi_C.bin)
[[ -z $(find "$tmp/nocr" -path '*/CMakeFiles' -prune -o -name 'test_*' -type f -perm -u+x -print -quit) ]] \
  || fail "test executables were built without Criterion"
[[ -f $tmp/nocr-prefix/include/concur.h && -x $tmp/nocr-prefix/bin/concur ]] \
  || fail "the no-Criterion install lacks concur.h or the concur command"
step "no-Criterion build and install OK"

# 4. concur as a subproject (add_subdirectory): no tests and no examples of its own.
mkdir -p "$tmp/parent"
cat >"$tmp/parent/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.20)
project(parent LANGUAGES C)
include(CTest)
add_subdirectory("$src" concur)
CMAKE
cmake -S "$tmp/parent" -B "$tmp/parent/build" >"$tmp/parent.log" 2>&1 \
  || { tail -n 40 "$tmp/parent.log" >&2; fail "a parent project could not add concur"; }
if grep -rqs "add_test" "$tmp/parent/build/concur/CTestTestfile.cmake"; then
  fail "concur added tests to its parent project"
fi
grep -qs "pool_primes" "$tmp/parent/build/concur/Makefile" \
  && fail "concur added its examples to its parent project"
step "subproject configure OK (no tests, no examples)"
step "PASS"
