#!/usr/bin/env bash
# Generates the API reference from the public headers with Doxygen (docs/Doxyfile).
# Usage: scripts/docs.sh [OUTPUT_DIR]   (default: build/docs; the HTML is in OUTPUT_DIR/html)
# Fails (exit 1) on any Doxygen warning, so the headers' documentation stays well-formed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/docs}
command -v doxygen >/dev/null || { echo "docs.sh: doxygen not found (scripts/setup.sh installs it)" >&2; exit 1; }
mkdir -p "$out"
log=$out/doxygen.log
if ! { cat docs/Doxyfile; echo "OUTPUT_DIRECTORY = $out"; echo "WARN_LOGFILE = $log"; } | doxygen - >/dev/null; then
  cat "$log" >&2
  echo "docs.sh: doxygen failed" >&2
  exit 1
fi
if [[ -s $log ]]; then
  cat "$log" >&2
  echo "docs.sh: doxygen warnings (above)" >&2
  exit 1
fi
echo "docs.sh: API reference in $out/html/index.html"
