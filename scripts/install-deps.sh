#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and benchmarking Tether needs.
# Idempotent: packages already present are skipped; prints what it installs.
# npm test peers (coap, firebase-server) are installed by tests/peers/install.sh.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  libuv1-dev liblmdb-dev lmdb-utils libmbedtls-dev libyaml-cpp-dev libcurl4-openssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libcbor-dev libsystemd-dev libcpp-httplib-dev
  clang libclang-rt-14-dev clang-tidy clang-format
  libcoap3-bin systemd python3 iproute2 gnuplot-nox dpkg-dev file openssl curl adduser nghttp2-server libfaketime
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js (for the npm test peers) ships with npm on this image; Debian's separate npm package
# conflicts with that build, so only install Debian's nodejs+npm when no node is present at all.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs npm); fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
