#!/usr/bin/env bash
# Sets up (as root), builds and runs every test: unit tests and the integration tests
# that start real servers (smtp-sink, Postfix, redis-server, rbldnsd) on loopback.
# MXGATE_PRESET=asan runs the same suite under ASan+UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${MXGATE_PRESET:-release}"

if [ "$(id -u)" -eq 0 ]; then
  scripts/setup.sh
fi
scripts/build.sh "$preset"
# Integration tests start servers on ephemeral loopback ports; two at a time is safe.
ctest --test-dir "build/$preset" --output-on-failure -j "${MXGATE_TEST_JOBS:-2}" "$@"
