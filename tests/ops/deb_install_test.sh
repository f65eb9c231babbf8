#!/bin/bash
# The .deb, end to end on this machine: build it with cpack, check its metadata, `dpkg -i` it,
# run the installed tetherd (--check-config on /etc/tether/tether.yaml, then a real start as the
# tether user, exec'd by setpriv so SIGTERM reaches tetherd itself), check that a local edit of
# the conffile survives a reinstall, then purge it and check nothing is left. Needs root (dpkg);
# CI runs as root on a throwaway machine.
#
# Usage: deb_install_test.sh BUILD_DIR      (ctest label: slow)
# WARNING: installs and then purges the package `tether` on the machine that runs it.
set -u
BUILD=${1:?usage: deb_install_test.sh BUILD_DIR}
PASS=0 FAIL=0
ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
finish() {
  echo "deb_install: $PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
  exit $?
}

if [ "$(id -u)" -ne 0 ]; then
  echo "deb_install: must run as root (dpkg -i); run make test as root or via sudo" >&2
  exit 1
fi
if dpkg -s tether >/dev/null 2>&1; then
  echo "deb_install: package tether is already installed here; refusing to replace it" >&2
  exit 1
fi

WORK=$(mktemp -d /tmp/tether-deb.XXXXXX)
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
  [ -n "$DAEMON_PID" ] && rm -rf /run/tether
  dpkg --purge tether >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- build --------------------------------------------------------------------------------------
if ! (cd "$BUILD" && cpack -G DEB -B "$WORK/pkg" >"$WORK/cpack.log" 2>&1); then
  cat "$WORK/cpack.log"; bad "cpack -G DEB"; finish
fi
DEB=$(ls "$WORK"/pkg/tether_*.deb)
ok "cpack built $(basename "$DEB")"

# --- metadata -----------------------------------------------------------------------------------
INFO=$(dpkg-deb -I "$DEB")
LIST=$(dpkg-deb -c "$DEB" | awk '{print $6}')
check "conffiles lists /etc/tether/tether.yaml" \
  bash -c '[ "$(dpkg-deb --ctrl-tarfile "$0" | tar -xO ./conffiles)" = "/etc/tether/tether.yaml" ]' "$DEB"
for dep in adduser libuv1 liblmdb0 libmbedcrypto7 libyaml-cpp0.7 libcurl4; do
  check "Depends names $dep" grep -q "Depends:.*\b$dep\b" <<<"$INFO"
done
for f in ./usr/bin/tetherd ./usr/bin/tetherctl ./lib/systemd/system/tether.service ./etc/tether/tether.yaml \
         ./usr/share/doc/tether/operations.md; do
  check "ships $f" grep -qx "$f" <<<"$LIST"
done
check "binaries are stripped" bash -c 'dpkg-deb -x "$0" "$1/x" && ! file "$1/x/usr/bin/tetherd" | grep -q "not stripped"' "$DEB" "$WORK"

# --- install ------------------------------------------------------------------------------------
if ! dpkg -i "$DEB" >"$WORK/dpkg-i.log" 2>&1; then
  cat "$WORK/dpkg-i.log"; bad "dpkg -i"; finish
fi
ok "dpkg -i"
check "tetherd --check-config /etc/tether/tether.yaml exits 0" /usr/bin/tetherd --check-config /etc/tether/tether.yaml
check "tetherd --version" bash -c '/usr/bin/tetherd --version | grep -q "[0-9]\.[0-9]"'
check "system user tether exists" getent passwd tether
check "/var/lib/tether is tether:tether 0700" bash -c '[ "$(stat -c %U:%G:%a /var/lib/tether)" = tether:tether:700 ]'
check "systemd-analyze verify on the installed unit" systemd-analyze verify /lib/systemd/system/tether.service
check "unit enabled for boot" test -L /etc/systemd/system/multi-user.target.wants/tether.service

# --- the installed daemon serves, as the tether user, with the shipped config's settings --------
read -r COAP ADMIN < <(python3 -c '
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
t = socket.socket(); t.bind(("127.0.0.1", 0))
print(u.getsockname()[1], t.getsockname()[1])')
mkdir -p "$WORK/run" && chmod 755 "$WORK" "$WORK/run"
sed -e "s|listen: \"0.0.0.0:5683\"|listen: \"127.0.0.1:$COAP\"|" -e "s|listen: \"127.0.0.1:8790\"|listen: \"127.0.0.1:$ADMIN\"|" \
  /etc/tether/tether.yaml >"$WORK/run/tether.yaml"
check "test config differs only in ports" bash -c '[ "$(diff /etc/tether/tether.yaml "$0" | grep -c "^>")" = 2 ]' "$WORK/run/tether.yaml"
# As systemd would for the unit: StateDirectory= and RuntimeDirectory= (owner tether, mode 0750).
[ -e /run/tether/admin.token ] && { echo "deb_install: /run/tether/admin.token exists (a tetherd runs here?); refusing" >&2; exit 1; }
install -d -o tether -g tether -m 0750 /run/tether
STATE_DIRECTORY=/var/lib/tether RUNTIME_DIRECTORY=/run/tether \
  setpriv --reuid=tether --regid=tether --init-groups /usr/bin/tetherd --config "$WORK/run/tether.yaml" \
  >"$WORK/tetherd.log" 2>&1 &
DAEMON_PID=$!
up=0
for _ in $(seq 100); do  # as root, the way `sudo tetherctl status` runs: no token option
  if env -u TETHER_ADMIN_TOKEN_FILE /usr/bin/tetherctl --admin "127.0.0.1:$ADMIN" status >"$WORK/status.txt" 2>&1; then up=1; break; fi
  sleep 0.1
done
check "installed tetherd answers tetherctl status (as root, token found by default)" [ "$up" = 1 ]
check "it runs in local-only mode" grep -qi "local" "$WORK/status.txt"
check "its store is in /var/lib/tether, owned by tether" bash -c '[ "$(stat -c %U /var/lib/tether/data.mdb)" = tether ]'
check "the admin token is tether:tether 0640" bash -c '[ "$(stat -c %U:%G:%a /run/tether/admin.token)" = tether:tether:640 ]'
check "a member of group tether may use tetherctl" bash -c 'setpriv --reuid=nobody --regid=nogroup --groups=tether \
  env -u TETHER_ADMIN_TOKEN_FILE /usr/bin/tetherctl --admin "127.0.0.1:$0" status >/dev/null' "$ADMIN"
NOBODY=$(setpriv --reuid=nobody --regid=nogroup --clear-groups env -u TETHER_ADMIN_TOKEN_FILE /usr/bin/tetherctl --admin "127.0.0.1:$ADMIN" status 2>&1); rc=$?
check "user nobody is refused (exit 1, HTTP 401)" bash -c '[ "$0" = 1 ] && grep -q "HTTP 401" <<<"$1"' "$rc" "$NOBODY"
check "/metrics needs no token (Prometheus)" bash -c 'setpriv --reuid=nobody --regid=nogroup --clear-groups curl -sf "http://127.0.0.1:$0/metrics" | grep -q tether_sessions' "$ADMIN"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; rc=$?; DAEMON_PID=
check "SIGTERM stops it with exit 0" [ "$rc" = 0 ]
check "a clean stop removes the admin token" test ! -e /run/tether/admin.token
rm -rf /run/tether
[ "$rc" = 0 ] || cat "$WORK/tetherd.log"

# --- conffile survives a reinstall --------------------------------------------------------------
echo "# local edit by deb_install_test" >>/etc/tether/tether.yaml
dpkg -i --force-confold "$DEB" >"$WORK/dpkg-re.log" 2>&1
check "reinstall keeps the edited conffile" grep -q "local edit by deb_install_test" /etc/tether/tether.yaml
check "edited conffile is still valid" /usr/bin/tetherd --check-config /etc/tether/tether.yaml

# --- purge --------------------------------------------------------------------------------------
dpkg --purge tether >"$WORK/dpkg-purge.log" 2>&1
check "dpkg --purge" bash -c '! dpkg -s tether >/dev/null 2>&1'
check "binaries removed" bash -c '[ ! -e /usr/bin/tetherd ] && [ ! -e /usr/bin/tetherctl ]'
check "store removed on purge" test ! -e /var/lib/tether
check "conffile removed on purge" test ! -e /etc/tether/tether.yaml
check "unit disabled" test ! -e /etc/systemd/system/multi-user.target.wants/tether.service
finish
