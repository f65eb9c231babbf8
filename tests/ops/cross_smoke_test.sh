#!/bin/bash
# The cross-built tetherd, run under qemu-user: the few minutes CI can spare for ARM (make
# cross-smoke, part of make test). The whole suite under emulation is make cross-test.
#
# Packages BUILD_DIR with cpack and checks the .deb (Architecture, Depends, the binaries' ELF
# type). Then starts the packaged tetherd with qemu-<arch>-static -L SYSROOT on
# 127.0.0.1 in local-only mode, then with libcoap's native coap-client-notls: opens a device
# session, makes a durable write (fsync'ed before its 2.04), kills the emulated daemon with
# SIGKILL, starts it again on the same store and reads the write back through a new session.
# The cross-built tetherctl (also emulated) reports status, and SIGTERM ends the daemon with 0.
#
# Usage: cross_smoke_test.sh ARCH BUILD_DIR [SYSROOT]   (ARCH: armhf or arm64)
set -u
ARCH=${1:?usage: cross_smoke_test.sh ARCH BUILD_DIR [SYSROOT]}
BUILD=${2:?usage: cross_smoke_test.sh ARCH BUILD_DIR [SYSROOT]}
SYSROOT=${3:-${TETHER_SYSROOT:-/var/cache/tether-sysroot}/$ARCH}
case "$ARCH" in
  armhf) QEMU=qemu-arm-static; FILE_SAYS="ARM, EABI5" ;;
  arm64) QEMU=qemu-aarch64-static; FILE_SAYS="ARM aarch64" ;;
  *) echo "cross_smoke: unknown ARCH $ARCH" >&2; exit 2 ;;
esac
PASS=0 FAIL=0
ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
finish() {
  echo "cross_smoke_$ARCH: $PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
  exit $?
}

WORK=$(mktemp -d /tmp/tether-cross-smoke.XXXXXX)
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the package: cpack in BUILD_DIR, as make deb-ARCH does ------------------------------------
if ! (cd "$BUILD" && cpack -G DEB -B "$WORK/pkg" >"$WORK/cpack.log" 2>&1); then
  cat "$WORK/cpack.log"; bad "cpack -G DEB"; finish
fi
DEB=$(ls "$WORK"/pkg/tether_*_"$ARCH".deb 2>/dev/null)
check "cpack built tether_<version>_$ARCH.deb ($(basename "${DEB:-none}"))" test -n "$DEB"
[ -n "$DEB" ] || finish
INFO=$(dpkg-deb -I "$DEB")
check "Architecture: $ARCH" grep -q "^ Architecture: $ARCH$" <<<"$INFO"
for dep in adduser libc6 libuv1 liblmdb0 libmbedcrypto7 libyaml-cpp0.7 libcurl4 libspdlog1.10-fmt9; do
  check "Depends names $dep" grep -q "^ Depends:.*\b$dep\b" <<<"$INFO"
done
dpkg-deb -x "$DEB" "$WORK/root"
TETHERD=$WORK/root/usr/bin/tetherd
TETHERCTL=$WORK/root/usr/bin/tetherctl
check "packaged tetherd is $FILE_SAYS and stripped" \
  bash -c 'f=$(file -L "$0"); grep -q "$1" <<<"$f" && grep -q ", stripped" <<<"$f"' "$TETHERD" "$FILE_SAYS"
check "$QEMU is installed" bash -c 'command -v "$0" >/dev/null' "$QEMU"
[ "$FAIL" -eq 0 ] || finish

# --- the packaged daemon, emulated ------------------------------------------------------------
read -r COAP ADMIN DEVICE_PORT < <(python3 -c '
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
t = socket.socket(); t.bind(("127.0.0.1", 0))
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.bind(("127.0.0.1", 0))
print(u.getsockname()[1], t.getsockname()[1], d.getsockname()[1])')
cat >"$WORK/tether.yaml" <<EOF
gateway:
  id: cross-smoke
device:
  listen: "127.0.0.1:$COAP"
store:
  path: $WORK/store
  durability: fsync
admin:
  listen: "127.0.0.1:$ADMIN"
log:
  level: info
EOF

start() {
  # RUNTIME_DIRECTORY as systemd would give it: the admin token goes there, not to /run/tether.
  RUNTIME_DIRECTORY="$WORK" "$QEMU" -L "$SYSROOT" "$TETHERD" --config "$WORK/tether.yaml" >>"$WORK/tetherd.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 300); do  # emulated start-up: allow 30 s
    curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
BASE="coap://127.0.0.1:$COAP"
# One source port for every request, as a device has: a session token is only acted on from the
# address its session was opened from (docs/device-protocol.md), and each coap-client run would
# otherwise send from a new ephemeral port.
client() { timeout 30 coap-client-notls -B 10 -p "$DEVICE_PORT" "$@" 2>&1; }
open_session() {
  local reply
  reply=$(client -m post -A 50 "$BASE/.cs?v=2")
  sed -n 's/.*"s":"\([^"]*\)".*/\1/p' <<<"$reply"
}

started=$(date +%s.%N)
check "emulated tetherd starts and answers /readyz" start
echo "     (ready after $(python3 -c "print(round($(date +%s.%N) - $started, 2))") s under $QEMU)"
CS=$(open_session)
check "a device opens a session (short token '$CS')" [ ${#CS} = 8 ]
PUT=$(client -m put -t 50 -A 50 -e '{"temp":21.5,"n":2147483648}' "$BASE/devices/d1?.cs=$CS")
check "a durable write is acknowledged (no 4.xx/5.xx: '$PUT')" bash -c '! grep -qE "^[45]\." <<<"$0"' "$PUT"
GOT=$(client -A 50 "$BASE/devices/d1?.cs=$CS")
check "the write reads back before the crash ('$GOT')" grep -q '"temp":21.5' <<<"$GOT"

kill -9 "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=
check "emulated tetherd restarts on the same store after SIGKILL" start
CS2=$(open_session)
check "a device opens a session after the restart" [ ${#CS2} = 8 ]
GOT=$(client -A 50 "$BASE/devices/d1?.cs=$CS2")
check "the acknowledged write survived the crash ('$GOT')" \
  bash -c 'grep -q "\"temp\":21.5" <<<"$0" && grep -q "\"n\":2147483648" <<<"$0"' "$GOT"
STATUS=$("$QEMU" -L "$SYSROOT" "$TETHERCTL" --admin "127.0.0.1:$ADMIN" --token-file "$WORK/admin.token" --json queue 2>&1)
check "emulated tetherctl reads the queue (1 write queued in local-only mode)" \
  bash -c 'grep -qE "\"entries\": *1,?$" <<<"$0"' "$STATUS"

kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; rc=$?; DAEMON_PID=
check "SIGTERM stops it with exit 0" [ "$rc" = 0 ]
[ "$FAIL" -eq 0 ] || { echo "--- tetherd log"; cat "$WORK/tetherd.log"; echo "--- tetherctl"; echo "$STATUS"; }
finish
