#!/usr/bin/env bash
# Tether's DTLS-PSK engine vs libcoap's coap-server-openssl, same fleet, same run.
#   bench/coap/run-dtls.sh BUILD_DIR [SESSIONS=1000] [RATE=10000] [SECONDS=5] [IDLE="1000 3000"]
# Prints a markdown table: handshakes/s (32 in flight, CCM_8), req/s and p99 of CON GETs over DTLS
# at SESSIONS sessions (open loop at RATE), and bytes per idle DTLS session: the RSS growth of a
# fresh server between the two IDLE fleet sizes divided by their difference (so fixed costs, such as
# Tether's pool of live contexts, cancel out), read once Tether's sessions have gone to sleep.
# Tether's server keeps every session live for the request phase (max_live 1024 >= SESSIONS, as an
# operator sizes it for an active fleet) and uses the default cap of 256 for the idle reading.
set -euo pipefail
build=${1:?usage: run-dtls.sh BUILD_DIR [SESSIONS] [RATE] [SECONDS] [IDLE]}
sessions=${2:-1000}; rate=${3:-10000}; secs=${4:-5}; idle=${5:-"1000 3000"}
fleet=$build/bench/coap/dtls_fleet
server=$build/bench/coap/coap_bench_server
key=bench-psk-0123456789
command -v coap-server-openssl >/dev/null || { echo "coap-server-openssl missing (libcoap3-bin)"; exit 1; }
[ -x "$fleet" ] && [ -x "$server" ] || { echo "build dtls_fleet and coap_bench_server first"; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

start_tether() {  # MAX_LIVE -> sets spid, sport
  rm -f "$tmp/t.port"
  "$server" 127.0.0.1 0 --dtls "$key" "$1" >"$tmp/t.port" 2>/dev/null & spid=$!; pids+=($spid)
  for _ in $(seq 50); do [ -s "$tmp/t.port" ] && break; sleep 0.1; done
  sport=$(awk '/^PORT/{print $2}' "$tmp/t.port")
}
start_libcoap() {  # -> sets spid, sport (libcoap listens for DTLS on -p + 1)
  local p=$(( (RANDOM % 20000) + 30000 ))
  coap-server-openssl -A 127.0.0.1 -p "$p" -k "$key" >/dev/null 2>&1 & spid=$!; pids+=($spid)
  sport=$(( p + 1 )); sleep 0.5
}
stop() { kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; }

# --- handshakes/s and req/s ------------------------------------------------------------------
start_tether 1024; t=$("$fleet" 127.0.0.1 "$sport" "$sessions" "$rate" "$secs" "$key"); stop
start_libcoap;     l=$("$fleet" 127.0.0.1 "$sport" "$sessions" "$rate" "$secs" "$key"); stop
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b>0)?a/b:0}'; }
th=$(field hs_per_s "$t"); lh=$(field hs_per_s "$l")
tr=$(field rps "$t"); lr=$(field rps "$l"); tp=$(field p99_ms "$t"); lp=$(field p99_ms "$l")

# --- bytes per idle session ------------------------------------------------------------------
idle_growth() {  # KIND N -> RSS growth in KiB of a fresh server of KIND with N idle sessions
  local before after fpid
  if [ "$1" = tether ]; then start_tether 256; else start_libcoap; fi
  before=$(rss_kb "$spid")
  rm -f "$tmp/idle.out"
  "$fleet" 127.0.0.1 "$sport" "$2" 200 1 "$key" 30 >"$tmp/idle.out" & fpid=$!
  for _ in $(seq 600); do grep -q '^IDLE' "$tmp/idle.out" 2>/dev/null && break; sleep 0.1; done
  sleep 4  # Tether's bench server sleeps sessions idle for 2 s
  after=$(rss_kb "$spid")
  kill "$fpid" 2>/dev/null || true; wait "$fpid" 2>/dev/null || true
  stop
  echo $(( after - before ))
}
set -- $idle; n1=$1; n2=$2
t1=$(idle_growth tether "$n1"); t2=$(idle_growth tether "$n2")
l1=$(idle_growth libcoap "$n1"); l2=$(idle_growth libcoap "$n2")
tb=$(( (t2 - t1) * 1024 / (n2 - n1) )); lb=$(( (l2 - l1) * 1024 / (n2 - n1) ))

echo "| figure | libcoap coap-server-openssl | Tether | ratio |"
echo "|---|---|---|---|"
echo "| DTLS handshakes/s ($sessions sessions, 32 in flight, PSK AES-128-CCM-8) | $lh | $th | $(ratio "$th" "$lh") |"
echo "| req/s over DTLS, $sessions sessions, $rate req/s offered | $lr | $tr | $(ratio "$tr" "$lr") |"
echo "| p99 latency ms (same run) | $lp | $tp | $(ratio "$lp" "$tp") (libcoap/Tether) |"
echo "| loss % (same run) | $(field loss_pct "$l") | $(field loss_pct "$t") | |"
echo "| bytes per idle DTLS session (RSS growth $n1 → $n2 sessions) | $lb | $tb | $(ratio "$lb" "$tb") (libcoap/Tether) |"
