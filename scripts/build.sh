#!/usr/bin/env bash
# Configures and builds one preset (release by default: what `run` and the tests use).
# Usage: scripts/build.sh [release|debug|asan|fuzz] [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
shift || true
if [ ! -f "build/$preset/build.ninja" ]; then
  cmake --preset "$preset" >/dev/null
fi
jobs="${MXGATE_JOBS:-$(nproc)}"
ninja -C "build/$preset" -j "$jobs" "$@"
