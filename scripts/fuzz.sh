#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for a while from its
# seed corpus. Usage: scripts/fuzz.sh [seconds per target, default 10] [target ...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  for source in fuzz/*_fuzz.cpp; do targets+=("$(basename "$source" .cpp)"); done
fi
# Only the fuzz targets (and the libraries they link), not the daemon and the rest.
scripts/build.sh fuzz "${targets[@]}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  corpus=("$work/$target")
  mkdir -p "$work/$target"
  [ -d "fuzz/corpus/$target" ] && corpus+=("fuzz/corpus/$target")
  echo "=== $target: ${seconds}s"
  # libFuzzer exits non-zero on a crash. (Its status is kept apart from the grep's: a
  # `| grep ... || true` once swallowed a crash here.)
  status=0
  # A crashing input is kept under build/fuzz/artifacts/, not dropped in the source tree.
  mkdir -p build/fuzz/artifacts
  "build/fuzz/fuzz/$target" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix=build/fuzz/artifacts/"$target"- "${corpus[@]}" \
    > "$work/$target.log" 2>&1 || status=$?
  grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" \
    "$work/$target.log" || true
  if [ "$status" -ne 0 ]; then
    echo "=== $target FAILED (exit $status):"
    tail -n 60 "$work/$target.log"
    exit 1
  fi
done
echo "fuzz smoke: ${#targets[@]} targets, no crash"
