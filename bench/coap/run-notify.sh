#!/usr/bin/env bash
# Notification latency of live observers, and what dead observers receive, same run.
#   bench/coap/run-notify.sh BUILD_DIR [LIVE=200] [DEAD=50] [HZ=100] [SECONDS=10] [OTHER_BUILD_DIR]
# `coap_bench_server --observe HZ` changes one observed resource HZ times a second; `notify_fleet`
# registers LIVE observers that acknowledge every CON at once and DEAD observers that never answer.
# Latency: from the state change to its arrival at a live observer, over every notification
# received. The baseline is the same engine with no dead observers, measured in the same run;
# with OTHER_BUILD_DIR (e.g. a build of the previous commit) its engine is measured too.
# Prints a markdown table.
set -euo pipefail
build=${1:?usage: run-notify.sh BUILD_DIR [LIVE] [DEAD] [HZ] [SECONDS] [OTHER_BUILD_DIR]}
live=${2:-200}; dead=${3:-50}; hz=${4:-100}; secs=${5:-10}; other=${6:-}

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

run() {  # BUILD DEAD -> one result line of notify_fleet
  local b=$1 d=$2 spid port
  [ -x "$b/bench/coap/notify_fleet" ] && [ -x "$b/bench/coap/coap_bench_server" ] ||
    { echo "build notify_fleet and coap_bench_server in $b first" >&2; exit 1; }
  rm -f "$tmp/port"
  "$b/bench/coap/coap_bench_server" 127.0.0.1 0 --observe "$hz" >"$tmp/port" 2>/dev/null & spid=$!; pids+=($spid)
  for _ in $(seq 50); do [ -s "$tmp/port" ] && break; sleep 0.1; done
  port=$(awk '/^PORT/{print $2}' "$tmp/port")
  "$b/bench/coap/notify_fleet" 127.0.0.1 "$port" "$live" "$d" "$secs"
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
}

echo "| engine | live observers | dead observers | changes/s | live p50 ms | live p99 ms | live max ms | datagrams per dead observer in ${secs} s |"
echo "|---|---|---|---|---|---|---|---|"
row() {  # LABEL BUILD DEAD
  local r
  r=$(run "$2" "$3")
  echo "| $1 | $live | $3 | $hz | $(field p50_ms "$r") | $(field p99_ms "$r") | $(field max_ms "$r") | $(field dead_datagrams_per_observer "$r") |"
}
row "this build (baseline: no dead observers)" "$build" 0
row "this build" "$build" "$dead"
if [ -n "$other" ]; then
  row "$other (no dead observers)" "$other" 0
  row "$other" "$other" "$dead"
fi
