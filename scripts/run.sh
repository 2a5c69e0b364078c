#!/usr/bin/env bash
# Sets up, builds and runs mxgate with conf/mxgate.yaml on loopback (127.0.0.1:2525).
# When nothing listens on the backend address (127.0.0.1:2526 by default), it starts a
# Postfix smtp-sink there so a message can be sent through at once. Extra arguments go
# to `mxgate run` (e.g. -o listen=127.0.0.1:2600 -o backend.address=127.0.0.1:10025).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  scripts/setup.sh
else
  echo "run.sh: not root, skipping dependency installation (run scripts/setup.sh as root once)" >&2
fi
scripts/build.sh release mxgate

config="conf/mxgate.yaml"
backend="127.0.0.1:2526"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    -o) next="${args[$((i + 1))]:-}"; [[ "$next" == backend.address=* ]] && backend="${next#backend.address=}" ;;
    -c) config="${args[$((i + 1))]:-$config}" ;;
  esac
done
host="${backend%:*}"
port="${backend##*:}"

sink_pid=""
cleanup() { [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  sink_user=()
  [ "$(id -u)" -eq 0 ] && sink_user=(-u nobody)
  echo "run.sh: nothing listens on $backend; starting smtp-sink there as the backend" >&2
  /usr/sbin/smtp-sink "${sink_user[@]}" -c -h backend.localhost "$host:$port" 100 &
  sink_pid=$!
  sleep 0.3
fi

has_config=0
for a in "${args[@]}"; do [ "$a" = "-c" ] && has_config=1; done
if [ "$has_config" -eq 0 ]; then
  args=(-c "$config" "${args[@]}")
fi
build/release/proxy/mxgate run "${args[@]}"
