#!/usr/bin/env bash
# Tether's CoAP engine vs libcoap's coap-server-notls, same fleet, same run.
#   bench/coap/run.sh BUILD_DIR [SECONDS=5] [RATE=20000] [SESSIONS="100 1000 10000"] [IDLE_SESSIONS]
# Each server gets an open-loop fleet of CON GETs on the root resource at RATE
# req/s; prints a markdown table of achieved req/s, p50/p99 latency, loss and
# the Tether/libcoap ratios. Both servers and the fleet share this machine.
# As root the fleet uses --raw (one source address per session, no fd limit), so 100k sessions
# work; otherwise one socket per session, bounded by ulimit -n.
# IDLE_SESSIONS (e.g. 100000): also measure RSS per idle session of a fresh server of each kind:
# every session sends one GET, then the server's VmRSS growth is divided by the session count.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [SECONDS] [RATE] [SESSIONS]}
secs=${2:-5}; rate=${3:-20000}; sessions=${4:-"100 1000 10000"}; idle=${5:-}
fleet=$build/bench/coap/coap_fleet
server=$build/bench/coap/coap_bench_server
command -v coap-server-notls >/dev/null || { echo "coap-server-notls missing (libcoap3-bin)"; exit 1; }
[ -x "$fleet" ] && [ -x "$server" ] || { echo "build coap_fleet and coap_bench_server first"; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mode=(); [ "$(id -u)" = 0 ] && mode=(--raw)

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
  t=$("$fleet" "${mode[@]}" 127.0.0.1 "$tport" "$n" "$rate" "$secs" 0 "")
  l=$("$fleet" "${mode[@]}" 127.0.0.1 "$lport" "$n" "$rate" "$secs" 0 "")
  tr=$(field rps "$t"); lr=$(field rps "$l"); tp=$(field p99_ms "$t"); lp=$(field p99_ms "$l")
  echo "| $n | $rate | $tr | $lr | $(awk -v a="$tr" -v b="$lr" 'BEGIN{printf "%.2f", (b>0)?a/b:0}') | $tp | $lp | $(awk -v a="$lp" -v b="$tp" 'BEGIN{printf "%.2f", (b>0)?a/b:0}') | $(field loss_pct "$t") | $(field loss_pct "$l") |"
done

[ -n "$idle" ] || exit 0
# --- RSS per idle session: fresh servers, one GET per session, RSS growth / sessions -------------
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
idle_rss() {  # PID PORT -> bytes per idle session (sessions = GETs the server answered)
  local pid=$1 port=$2 before after line answered
  before=$(rss_kb "$pid")
  coproc FLEET { "$fleet" "${mode[@]}" --idle 127.0.0.1 "$port" "$idle" 5000 $(( idle / 5000 + 10 )) 0 ""; }
  local fpid=$FLEET_PID  # bash unsets FLEET_PID once the coprocess exits
  read -r line <&"${FLEET[0]}" || true
  after=$(rss_kb "$pid")
  if [[ $line == IDLE* ]]; then
    answered=${line#IDLE answered=}
    kill "$fpid" 2>/dev/null
  else  # not every GET was answered: count the ones that were
    answered=$(field recv "$line")
  fi
  wait "$fpid" 2>/dev/null || true
  [ "${answered:-0}" -gt 0 ] || { echo "n/a"; return; }
  echo "$(( (after - before) * 1024 / answered )) ($answered sessions)"
}
"$server" 127.0.0.1 0 >"$tmp/tether2.port" 2>/dev/null & tpid=$!; pids+=($tpid)
for _ in $(seq 50); do [ -s "$tmp/tether2.port" ] && break; sleep 0.1; done
tport2=$(awk '/^PORT/{print $2}' "$tmp/tether2.port")
coap-server-notls -A 127.0.0.1 -p $(( lport + 1 )) >/dev/null 2>&1 & lpid=$!; pids+=($lpid)
sleep 0.5
tb=$(idle_rss "$tpid" "$tport2"); lb=$(idle_rss "$lpid" $(( lport + 1 )))
echo
echo "| idle sessions offered | Tether bytes/session | libcoap bytes/session |"
echo "|---|---|---|"
echo "| $idle | $tb | $lb |"
