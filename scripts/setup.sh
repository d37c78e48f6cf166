#!/usr/bin/env bash
# Installs the Debian packages concur needs to build, test and benchmark.
# Idempotent: a package already present is skipped; nothing runs when all are there.
# Usage: scripts/setup.sh            (build + test dependencies)
#        scripts/setup.sh --bench    (also the peers the benchmarks compare against)
set -euo pipefail

pkgs=(build-essential cmake pkg-config libcriterion-dev libboost-context-dev liburing-dev libpcre2-dev python3 bats parallel doxygen openmpi-bin libopenmpi-dev)
if [[ "${1:-}" == "--bench" ]]; then
  pkgs+=(libtbb-dev libuv1-dev python3-gevent python3-mpi4py)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
