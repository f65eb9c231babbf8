#!/usr/bin/env bash
# Memory per device, tetherd against another tetherd (a baseline build) in the same run:
#   bench/gateway/run-memory.sh BUILD_DIR DEVICES RUNS [BASELINE_TETHERD] [MODES="idle idle-observe"] [QUIET_S=1]
# PINGS=N in the environment: N pings per device instead of one (the field case: the SDK pings
# every 19-165 s, so a device has several within the exchange lifetime).
# Each point is a fresh tetherd configured as in run-e2e.sh (fresh durable store under /var/tmp,
# local only) and a fresh `sdk_fleet --raw --server-pid PID ... DEVICES MODE 1 QUIET_S` (every
# device opens its session and pings; idle-observe also observes its own path), which prints
# RssAnon / RssFile before the first device, 2 s after the last one was set up and (the "after"
# figures) QUIET_S later: past 250 s the engine's duplicate-reply cache has let the set-up go. The candidate
# (BUILD_DIR/tetherd) and the baseline alternate within each run. Prints one line per point, then
# the medians of bytes per device by binary and mode.
set -euo pipefail
build=${1:?usage: run-memory.sh BUILD_DIR DEVICES RUNS [BASELINE_TETHERD] [MODES]}
devices=${2:?usage}
runs=${3:?usage}
baseline=${4:-}
modes=${5:-"idle idle-observe"}
quiet=${6:-1}
pings=${PINGS:-1}  # pings per device (sdk_fleet --pings)
build=$(cd "$build" && pwd)
fleet=$build/bench/gateway/sdk_fleet
[ -x "$fleet" ] && [ -x "$build/tetherd" ] || { echo "build sdk_fleet and tetherd in $build first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root: the fleet gives every device its own address (raw sockets)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/tether-mem.XXXXXX)
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
source "$(dirname "$0")/bench_tetherd.sh"

point() {  # point LABEL TETHERD MODE
  local line
  start_tetherd "$2"
  line=$("$fleet" --raw --pings "$pings" --server-pid "$spid" 127.0.0.1 "$port" "$devices" "$3" 1 "$quiet" | grep _bytes_per_device | tr '\n' ' ')
  kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; spid=
  echo "tetherd=$1 $line"
}

out=$work/points
for run in $(seq "$runs"); do
  for mode in $modes; do
    point candidate "$build/tetherd" "$mode" | tee -a "$out"
    [ -n "$baseline" ] && point baseline "$baseline" "$mode" | tee -a "$out"
  done
done
echo "medians over $runs runs, $devices devices (bytes per device):"
for who in candidate ${baseline:+baseline}; do
  for mode in $modes; do
    awk -v w="$who" -v m="$mode" 'BEGIN { n = 0 }
      index($0, "tetherd=" w " ") == 1 && index($0, "mode=" m " ") {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        a[n] = f["anon_bytes_per_device"]; b[n] = f["file_bytes_per_device"]; p[n] = f["pinged"]
        c[n] = f["anon_bytes_per_device_after"]; d[n] = f["file_bytes_per_device_after"]; q = f["after_s"]; n++ }
      function med(x, k,  i, j, t) { for (i = 0; i < k; i++) for (j = i + 1; j < k; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
        return x[int((k - 1) / 2)] }
      END { if (n) printf "  %-9s %-12s RssAnon %s  RssFile %s  after %s s: RssAnon %s  RssFile %s  (pinged %s in run 1)\n",
                          w, m, med(a, n), med(b, n), q, med(c, n), med(d, n), p[0] }' "$out"
  done
done
