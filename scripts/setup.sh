#!/usr/bin/env bash
# Installs everything mxgate needs to build, run and test on Debian bookworm (as root).
# Safe to run twice: apt-get install is idempotent and the update is skipped when fresh.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it uses apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Postfix asks which configuration to install; we only need its binaries
# (smtp-sink, smtp-source, and a private instance started by the tests).
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string localhost" | debconf-set-selections

build_deps=(
  build-essential cmake ninja-build pkg-config g++ clang libclang-rt-14-dev
  libboost1.81-all-dev libboost-json1.81-dev libssl-dev libre2-dev libhiredis-dev libc-ares-dev
  libgtest-dev libgmock-dev libbenchmark-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
  libgmime-3.0-dev libpsl-dev libidn2-dev libcli11-dev zlib1g-dev
)
test_deps=(
  redis-server rbldnsd dnsmasq-base postfix swaks libnet-ssleay-perl libio-socket-ssl-perl haproxy python3 openssl procps iproute2 netcat-openbsd
)

missing=()
for p in "${build_deps[@]}" "${test_deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  # Refresh the package lists unless they are less than a day old.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt-get update -q
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Debian packages may start system daemons (redis-server on 6379, postfix
# only when configured). mxgate's tests never use them: they start their own
# servers on loopback ephemeral ports, so nothing here is stopped or reconfigured.
exit 0
