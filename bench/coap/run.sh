#!/usr/bin/env bash
# Tether's CoAP engine vs libcoap's coap-server-notls, same fleet, same run.
#   bench/coap/run.sh BUILD_DIR [SECONDS=5] [RATE=20000] [SESSIONS="100 1000 10000"]
# Each server gets an open-loop fleet of CON GETs on the root resource at RATE
# req/s; prints a markdown table of achieved req/s, p50/p99 latency, loss and
# the Tether/libcoap ratios. Both servers and the fleet share this machine.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [SECONDS] [RATE] [SESSIONS]}
secs=${2:-5}; rate=${3:-20000}; sessions=${4:-"100 1000 10000"}
fleet=$build/bench/coap/coap_fleet
server=$build/bench/coap/coap_bench_server
command -v coap-server-notls >/dev/null || { echo "coap-server-notls missing (libcoap3-bin)"; exit 1; }
[ -x "$fleet" ] && [ -x "$server" ] || { echo "build coap_fleet and coap_bench_server first"; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

"$server" 127.0.0.1 0 >"$tmp/tether.port" 2>"$tmp/tether.err" & pids+=($!)
for _ in $(seq 50); do [ -s "$tmp/tether.port" ] && break; sleep 0.1; done
tport=$(awk '/^PORT/{print $2}' "$tmp/tether.port")
lport=$(( (tport % 20000) + 30000 ))
coap-server-notls -A 127.0.0.1 -p "$lport" >/dev/null 2>&1 & pids+=($!)
sleep 0.5

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
echo "| sessions | offered req/s | Tether req/s | libcoap req/s | ratio | Tether p99 ms | libcoap p99 ms | p99 ratio (libcoap/Tether) | Tether loss % | libcoap loss % |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for n in $sessions; do
  t=$("$fleet" 127.0.0.1 "$tport" "$n" "$rate" "$secs" 0 "")
  l=$("$fleet" 127.0.0.1 "$lport" "$n" "$rate" "$secs" 0 "")
  tr=$(field rps "$t"); lr=$(field rps "$l"); tp=$(field p99_ms "$t"); lp=$(field p99_ms "$l")
  echo "| $n | $rate | $tr | $lr | $(awk -v a="$tr" -v b="$lr" 'BEGIN{printf "%.2f", (b>0)?a/b:0}') | $tp | $lp | $(awk -v a="$lp" -v b="$tp" 'BEGIN{printf "%.2f", (b>0)?a/b:0}') | $(field loss_pct "$t") | $(field loss_pct "$l") |"
done
