#!/bin/bash
# make cross-test-ARCH: runs a cross-built test suite (BUILD_DIR, configured with
# cmake/toolchains/toolchain-ARCH.cmake) under qemu-user on this machine.
#
# - ctest starts each test binary through CMAKE_CROSSCOMPILING_EMULATOR (qemu-ARCH-static -L
#   SYSROOT). Integration tests start the cross-built tetherd/tetherctl themselves: those run
#   through the binfmt_misc handler scripts/install-cross-deps.sh registers, with
#   QEMU_LD_PREFIX pointing qemu at the same sysroot. Peers (libcoap, node, python fakecloud)
#   stay native and talk to the emulated daemon over 127.0.0.0/8 as they do natively; the
#   LMDB tools are the target's (cross-bin/ on PATH).
# - The tests named in tests/cross/skips.txt are left out, each printed with its reason.
# - Emulation runs CPU-bound code several times slower, so each test gets TIMEOUT seconds, and the
#   tests that start tetherd run one at a time.
#
# Usage: run-cross-tests.sh ARCH BUILD_DIR [JOBS] [TIMEOUT]
set -euo pipefail
ARCH=${1:?usage: run-cross-tests.sh ARCH BUILD_DIR [JOBS] [TIMEOUT]}
BUILD=${2:?usage: run-cross-tests.sh ARCH BUILD_DIR [JOBS] [TIMEOUT]}
JOBS=${3:-2}
TIMEOUT=${4:-900}
HERE=$(cd "$(dirname "$0")" && pwd)
SYSROOT=$(sed -n 's/^TETHER_SYSROOT:PATH=//p' "$BUILD/CMakeCache.txt")/$ARCH
case "$ARCH" in armhf) handler=qemu-arm ;; arm64) handler=qemu-aarch64 ;; *) echo "unknown ARCH $ARCH" >&2; exit 2 ;; esac
if [ ! -e "/proc/sys/fs/binfmt_misc/$handler" ]; then
  echo "cross-test: no binfmt_misc handler $handler: integration tests could not start tetherd;" \
       "run scripts/install-cross-deps.sh $ARCH (as root)" >&2
  exit 1
fi
export QEMU_LD_PREFIX=$SYSROOT
# The store tools a test runs (mdb_copy for the backup procedure) are the target's, as on a Pi:
# LMDB's file layout depends on the word size, so the host's cannot read an armhf store.
mkdir -p "$BUILD/cross-bin"
for tool in mdb_copy mdb_stat mdb_dump mdb_load; do
  [ -x "$SYSROOT/usr/bin/$tool" ] && ln -sfn "$SYSROOT/usr/bin/$tool" "$BUILD/cross-bin/$tool"
done
export PATH="$(cd "$BUILD" && pwd)/cross-bin:$PATH"

exclude=()
while IFS=$'\t' read -r regex reason; do
  [ -z "$regex" ] || [ "${regex:0:1}" = "#" ] && continue
  exclude+=("$regex")
  echo "cross-test $ARCH: SKIP $regex: $reason"
done <"$HERE/skips.txt"
filter=$(IFS='|'; echo "${exclude[*]}")

echo "cross-test $ARCH: $(file -L "$BUILD/tetherd" | cut -d: -f2 | cut -d, -f1-2), sysroot $SYSROOT"
cd "$BUILD"
# Unit tests in parallel; then the tests that start tetherd (labels integration, faults) one at a
# time: several emulated daemons at once on 2 cores stretch the 50 ms windows some of them allow
# (clock estimates, event times, hello rates) past what they assert.
rc=0
ctest --output-on-failure -j "$JOBS" --timeout "$TIMEOUT" -LE 'soak|integration|faults' ${filter:+-E "$filter"} || rc=1
ctest --output-on-failure -j 1 --timeout "$TIMEOUT" -L 'integration|faults' -LE soak ${filter:+-E "$filter"} || rc=1
echo "cross-test $ARCH: $([ $rc = 0 ] && echo "all passed" || echo "FAILED"), ${#exclude[@]} skipped (listed above)"
exit $rc
