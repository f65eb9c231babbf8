#!/usr/bin/env bash
# Runs every benchmark, each next to its baseline measured in the same run, and rewrites
# docs/benchmarks.md with the results, the commands that produced them, the date and the machine.
#   bench/run-all.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: run-all.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/docs/benchmarks.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Sections from "## Fault suites" on are written by the fault suites, not by this script: keep them.
[ -f "$out" ] && sed -n '/^## Fault suites/,$p' "$out" > "$tmp/kept.md" || : > "$tmp/kept.md"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

machine="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
date=$(date -u +%Y-%m-%dT%H:%MZ)

img=$root/docs/img
mkdir -p "$img"

echo "bench: CoAP engine vs coap-server-notls"
"$root/bench/coap/run.sh" "$build" 5 50000 "100 1000 10000 100000" 100000 > "$tmp/coap.md"
echo "bench: CoAP saturation"
"$root/bench/coap/run.sh" "$build" 5 250000 "100 10000 100000" > "$tmp/coap-sat.md"
echo "bench: notification latency with dead observers"
"$root/bench/coap/run-notify.sh" "$build" 200 50 100 10 > "$tmp/notify.md"
echo "bench: DTLS engine vs coap-server-openssl"
"$root/bench/coap/run-dtls.sh" "$build" 1000 10000 5 "1000 3000" > "$tmp/dtls.md"
echo "bench: store group commit vs raw LMDB"
"$build/bench/store/store_bench" --seconds 3 > "$tmp/store.txt"
echo "bench: drain of 1M queued operations to the test cloud"
"$build/bench/upstream/upstream_drain_bench" 1000000 0 100000 "$tmp/drain.dat" > "$tmp/drain.txt"
echo "bench: the same drain while live writes arrive at 500/s on another route"
"$build/bench/upstream/upstream_drain_bench" 1000000 0 100000 - 500 > "$tmp/drain-live.txt"
echo "bench: tetherd restart with 1M queued writes and 100k sessions"
"$build/bench/gateway/restart_bench" 1000000 100000 > "$tmp/restart.md" 2>/dev/null
echo "bench: detection latency and onDisconnect throughput"
"$build/bench/gateway/detection_bench" 10000 5 "$tmp/detect.dat" > "$tmp/detect.txt"
echo "bench: end to end, SDK-shaped devices: tetherd vs the engine alone and libcoap"
"$root/bench/gateway/run-e2e.sh" "$build" "$tmp/e2e" 5 > /dev/null
cp "$tmp/e2e/e2e_put_get.png" "$img/e2e_put_get.png"

echo "bench: summary"
# One row per headline figure: figure | baseline | Tether | ratio | command | date | machine.
col() { awk -F'|' -v n="$2" -v c="$3" '$2 + 0 == n && $2 ~ /[0-9]/ { v = $c; gsub(/^ +| +$/, "", v); print v; exit }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (a > 0 && b > 0) ? "%.2f" : "n/a", a / b }'; }
num() { sed -n "s/.*$2 *: *\([0-9.]*\).*/\1/p" "$1" | head -1; }
short_machine="$(nproc) cores, $(uname -r)"
{
  echo "| figure | baseline | Tether | ratio | command | date | machine |"
  echo "|---|---|---|---|---|---|---|"
  for n in 100 1000 10000 100000; do
    t=$(col "$tmp/coap.md" "$n" 4); l=$(col "$tmp/coap.md" "$n" 5)
    echo "| CoAP req/s at $n sessions, 50k offered | libcoap $l | $t | $(ratio "$t" "$l") | \`bench/coap/run.sh\` | $date | $short_machine |"
    t=$(col "$tmp/coap.md" "$n" 7); l=$(col "$tmp/coap.md" "$n" 8)
    echo "| CoAP p99 ms at $n sessions (lower is better; ratio libcoap/Tether) | libcoap $l | $t | $(ratio "$l" "$t") | \`bench/coap/run.sh\` | $date | $short_machine |"
  done
  for n in 100 10000 100000; do
    t=$(col "$tmp/coap-sat.md" "$n" 4); l=$(col "$tmp/coap-sat.md" "$n" 5)
    echo "| CoAP req/s at $n sessions, saturated (250k offered) | libcoap $l | $t | $(ratio "$t" "$l") | \`bench/coap/run.sh\` | $date | $short_machine |"
  done
  t=$(awk -F'|' 'NF == 5 && $2 ~ /[0-9]/ {print $3}' "$tmp/coap.md" | awk '{print $1}')
  l=$(awk -F'|' 'NF == 5 && $2 ~ /[0-9]/ {print $4}' "$tmp/coap.md" | awk '{print $1}')
  echo "| RSS bytes per idle session, plain (ratio libcoap/Tether) | libcoap $l | $t | $(ratio "$l" "$t") | \`bench/coap/run.sh\` | $date | $short_machine |"
  b=$(awk -F'|' '$2 ~ /baseline/ {v = $7; gsub(/ /, "", v); print v; exit}' "$tmp/notify.md")
  t=$(awk -F'|' 'NR > 3 && $2 ~ /this build/ && $2 !~ /baseline/ {v = $7; gsub(/ /, "", v); print v; exit}' "$tmp/notify.md")
  d=$(awk -F'|' 'NR > 3 && $2 ~ /this build/ && $2 !~ /baseline/ {v = $9; gsub(/ /, "", v); print v; exit}' "$tmp/notify.md")
  echo "| notification p99 ms, 200 live observers at 100 changes/s beside 50 dead ones (ratio baseline/Tether) | no dead observers $b | $t | $(ratio "$b" "$t") | \`bench/coap/run-notify.sh\` | $date | $short_machine |"
  echo "| datagrams per dead observer in 10 s at 100 changes/s (goal ≤ 100 until its observation ends; ratio goal/Tether) | goal 100 | $d | $(ratio 100 "$d") | \`bench/coap/run-notify.sh\` | $date | $short_machine |"
  while IFS='|' read -r _ fig base teth rat _; do
    echo "|$fig| libcoap$base|$teth|$rat| \`bench/coap/run-dtls.sh\` | $date | $short_machine |"
  done < <(grep -E '^\| (DTLS|req/s|bytes)' "$tmp/dtls.md")
  b=$(num "$tmp/store.txt" "raw LMDB, 1 put per commit"); t=$(num "$tmp/store.txt" "Store, 256 outstanding")
  echo "| durable acknowledged writes/s, 256 outstanding (goal 50k) | raw LMDB, 1 put per commit: $b | $t | $(ratio "$t" "$b") | \`store_bench --seconds 3\` | $date | $short_machine |"
  t=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' "$tmp/drain.txt" | head -1)
  echo "| drain of 1M queued ops, seconds (ratio goal/Tether) | goal 60 | $t | $(ratio 60 "$t") | \`upstream_drain_bench 1000000 0 100000\` | $date | $short_machine |"
  t=$(awk -F'|' '$2 ~ /[0-9]/ {split($4, p, "/"); v = p[2]; gsub(/ /, "", v); print v; exit}' "$tmp/detect.txt")
  echo "| detection latency beyond the timeout, p99 s (ratio target/Tether) | target 1.0 | $t | $(ratio 1 "$t") | \`detection_bench 10000 5\` | $date | $short_machine |"
  b=$(awk -F'|' '{v = $3; gsub(/[^0-9.]/, "", v); print v}' "$tmp/restart.md"); t=$(awk -F'|' '{v = $4; gsub(/[^0-9.]/, "", v); print v}' "$tmp/restart.md")
  echo "| restart with 1M queued writes + 100k sessions, ms (goal 1000) | empty store $b | $t | $(ratio "$t" "$b") | \`restart_bench 1000000 100000\` | $date | $short_machine |"
  fig() { awk -v k="$1" '$1 == k { print $2; exit }' "$tmp/e2e/figures.txt"; }
  e2e="\`bench/gateway/run-e2e.sh\`"
  echo "| end to end: durable PUT capacity at 10k devices with sessions, req/s (goal ratio ≥ 0.8) | engine alone $(fig eng_put) | $(fig cap_put) | $(ratio "$(fig cap_put)" "$(fig eng_put)") | $e2e | $date | $short_machine |"
  echo "| end to end: GET capacity at 10k devices with sessions, req/s (goal ratio ≥ 0.9) | engine alone $(fig eng_get) | $(fig cap_get) | $(ratio "$(fig cap_get)" "$(fig eng_get)") | $e2e | $date | $short_machine |"
  echo "| end to end: PUT goodput at 2x capacity offered, worse of two runs (goal ratio ≥ 0.95) | capacity $(fig cap_put) | $(fig over_goodput) | $(ratio "$(fig over_goodput)" "$(fig cap_put)") | $e2e | $date | $short_machine |"
  echo "| end to end: p99 ms of answered PUTs at 2x capacity, worse of two runs (goal < 200; ratio goal/Tether) | goal 200 | $(fig over_p99_worst) | $(ratio 200 "$(fig over_p99_worst)") | $e2e | $date | $short_machine |"
  echo "| RssAnon bytes per idle device with a session, 100k devices (goal ≤ 1024; ratio goal/Tether) | goal 1024 | $(fig mem_anon) (RssFile $(fig mem_file)) | $(ratio 1024 "$(fig mem_anon)") | $e2e | $date | $short_machine |"
  echo "| RssAnon bytes per device with a session and one observation, 100k devices (goal ≤ 1536) | goal 1536 | $(fig mem_obs_anon) (RssFile $(fig mem_obs_file)) | $(ratio 1536 "$(fig mem_obs_anon)") | $e2e | $date | $short_machine |"
  echo "| notification p99 ms, 10k devices observing one path, one change (ratio engine/Tether) | engine alone $(fig fan_eng_p99) | $(fig fan_p99) | $(ratio "$(fig fan_eng_p99)" "$(fig fan_p99)") | $e2e | $date | $short_machine |"
} > "$tmp/summary.md"

echo "bench: plots"
# sessions, Tether req/s, libcoap req/s, Tether p99, libcoap p99 from the CoAP table.
awk -F'|' '$2 ~ /^ *[0-9]+ *$/ && NF > 10 {print $2, $4, $5, $7, $8}' "$tmp/coap.md" > "$tmp/coap.dat"
gnuplot <<GP
set terminal pngcairo size 900,420 font ",10"
set output "$img/coap_rps_p99.png"
set multiplot layout 1,2 title "CoAP CON GETs, open loop at 50k req/s offered ($date)"
set logscale x; set xlabel "sessions"; set key top right; set grid
set ylabel "answered req/s"; set yrange [0:*]
plot "$tmp/coap.dat" u 1:2 w lp lw 2 t "Tether", "" u 1:3 w lp lw 2 t "libcoap coap-server-notls"
set ylabel "p99 latency (ms)"; set logscale y; set yrange [*:*]
plot "$tmp/coap.dat" u 1:4 w lp lw 2 t "Tether", "" u 1:5 w lp lw 2 t "libcoap coap-server-notls"
unset multiplot
set output "$img/detection_latency.png"
unset logscale; set multiplot layout 1,1
set title "Detection latency beyond the session timeout, 10,000 silent devices"
set xlabel "seconds after timeout"; set ylabel "devices"; set grid; set key off
bin(x) = 0.02 * floor(x / 0.02) + 0.01
set boxwidth 0.018; set xrange [0:*]; set yrange [0:*]; set offsets 0, 0, graph 0.05, 0
plot "$tmp/detect.dat" u (bin(\$1)):(1.0) smooth frequency w boxes fs solid 0.6
unset multiplot
set output "$img/drain_progress.png"
set title "Drain of 1,000,000 queued operations to the test cloud"
set xlabel "seconds"; set ylabel "operations confirmed by the cloud"; set key off; set grid
plot "$tmp/drain.dat" u 1:2 w l lw 2
GP

{
  cat <<HDR
# Benchmarks

Generated by \`make bench\` (\`bench/run-all.sh\`) on $date; machine: $machine.
The machine is shared and noisy: compare the ratios against the baseline measured in the same run,
not absolute figures across runs.

## Summary

HDR
  cat "$tmp/summary.md"
  cat <<HDR

## CoAP engine vs libcoap (issue 4)

Command: \`bench/coap/run.sh $build 5 50000 "100 1000 10000 100000" 100000\` — an open-loop
fleet of CON GETs (\`bench/coap/coap_fleet --raw\`: every session is its own source address on
127.0.0.0/8, sent and received through raw sockets so 100k sessions need no fds) against Tether's
engine (\`coap_bench_server\`) and libcoap 4.3.1's \`coap-server-notls\`, one after the other. The
second table is RSS growth per idle session of a fresh server of each kind after every session sent
one GET (libcoap answers only part of them; its figure is per answered session).

![req/s and p99 vs sessions](img/coap_rps_p99.png)

HDR
  cat "$tmp/coap.md"
  cat <<HDR

Saturation: \`bench/coap/run.sh $build 5 250000 "100 10000 100000"\` — offered far above capacity, so "req/s"
is what each server can answer on this machine (the fleet shares the 2 cores).

HDR
  cat "$tmp/coap-sat.md"
  cat <<HDR

## Notifications: live latency beside dead observers (issues 15.5, 16.2)

Command: \`bench/coap/run-notify.sh $build 200 50 100 10\` — \`coap_bench_server --observe 100\` changes
one observed resource 100 times a second; \`bench/coap/notify_fleet\` registers 200 live observers
that acknowledge every CON at once and 50 dead ones that never answer. Latency runs from the state
change (a CLOCK_MONOTONIC timestamp in the notification) to its arrival at a live observer, over
every notification received. The baseline is the same engine without dead observers, same run.
A dead observer gets at most 19 NONs, then one CON and its retransmissions, until its observation
ends (\`docs/device-protocol.md\`, "Notification pacing").

HDR
  cat "$tmp/notify.md"
  cat <<HDR

## CoAP over DTLS vs libcoap (issue 6)

Command: \`bench/coap/run-dtls.sh $build 1000 10000 5 "1000 3000"\` — \`bench/coap/dtls_fleet\`: 1,000
mbedTLS clients (one UDP socket each, PSK, AES-128-CCM-8) handshake 32 at a time (each sends one GET
right after its handshake, as a CoAP client does), then send CON GETs open-loop at 10k req/s, against
Tether's engine (\`coap_bench_server --dtls\`, all sessions live) and libcoap 4.3.1's
\`coap-server-openssl\`, one after the other. Bytes per idle session: RSS growth of a fresh server
between 1,000 and 3,000 idle sessions divided by 2,000, read after Tether's sessions went to sleep
(serialized) — fixed costs such as Tether's pool of live contexts cancel out.

HDR
  cat "$tmp/dtls.md"
  cat <<HDR

## Durable acknowledged writes and recovery (issue 3)

Command: \`$build/bench/store/store_bench --seconds 3\` — fsync on every commit; "outstanding" is
the number of writes the loop has submitted and not yet seen acknowledged. Baselines: raw LMDB with
one put per commit, and with 256 puts per commit, in the same run.

\`\`\`
HDR
  cat "$tmp/store.txt"
  cat <<HDR
\`\`\`

## Restart with a large store (issues 3 and 8)

Command: \`$build/bench/gateway/restart_bench 1000000 100000\` — the store library builds a store with
1,000,000 queued writes over 8 routes and 100,000 sessions; then a device using one of those
sessions polls a freshly exec'd tetherd every 20 ms until it answers 2.05 (goal: ≤ 1 s). Baseline:
the same exec-to-first-answer on an empty store, measured in the same run.

| figure | baseline | Tether | ratio |
|---|---|---|---|
HDR
  cat "$tmp/restart.md"
  cat <<HDR

## Detection latency and onDisconnect throughput (issue 5)

Command: \`$build/bench/gateway/detection_bench 10000 5 samples.dat\` — a real tetherd, 10,000 device sessions
over UDP each with one onDisconnect set registered, all silent from the same instant; latency is
measured beyond the configured session timeout (target: ≤ 1 s) from /metrics scraped every 20 ms.

![detection latency histogram](img/detection_latency.png)

HDR
  grep -v '^sessions opened' "$tmp/detect.txt"
  grep '^sessions opened' "$tmp/detect.txt" | sed 's/^/\n/'
  cat <<HDR

## End to end: SDK-shaped devices through tetherd (issue 20)

Command: \`bench/gateway/run-e2e.sh $build OUT 5\` — \`bench/gateway/sdk_fleet\` simulates devices as the
Wilddog SDK is on the wire, each its own source address on 127.0.0.0/8 (raw sockets): a real
session handshake (\`POST /.cs?v=2\`, Uri-Host \`myapp.wilddogio.com\`), then CON requests with
\`.cs=S\` and SDK-shaped CBOR payloads (\`{"n": <request>, "t": 21.5}\`, indefinite-length map),
open loop, 5 s per point, retransmitting at 2 s and 6 s as the SDK does. Every point has a fresh
server: tetherd (local-only, the default durable store with fsync, on the disk), the engine alone
(\`coap_bench_server\`: answers at once, stores nothing) and libcoap 4.3.1 (\`coap-server-notls -d\`:
PUT creates the resource in memory). "Goodput" counts 2.xx answers; 5.03 (shed) and lost requests
do not count. CPU per answer is tetherd's loop thread plus its writer thread, from /proc, over the
point. The fleet shares the 2 cores with the server, and other builds ran beside it (load in the
header), so compare the ratios within the run.

![e2e goodput and p99 vs offered](img/e2e_put_get.png)

HDR
  cat "$tmp/e2e/e2e.md"
  cat <<HDR

## Backlog drain to the cloud (issue 9)

Command: \`$build/bench/upstream/upstream_drain_bench 1000000 0 100000 progress.dat\` — one million writes
queued in a real store (LMDB, fsync) drained the way tetherd drains them: CloudBridge peeks the
queue and deletes what was confirmed with store batches, the uploader sends multi-path PATCHes
with tetherd's default batch limits (2000 ops / 4 MiB) to \`tests/fakecloud/fakecloud.py\` on
127.0.0.1 (goal: ≤ 60 s). The baseline is the goal itself; the fake cloud is single-process Python.

![drain progress](img/drain_progress.png)

\`\`\`
HDR
  cat "$tmp/drain.txt"
  echo '```'
  cat <<HDR

The same drain while live device writes arrive at 500/s on a second route (they must not wait
behind the backlog): \`$build/bench/upstream/upstream_drain_bench 1000000 0 100000 - 500\`

\`\`\`
HDR
  cat "$tmp/drain-live.txt"
  echo '```'
  if [ -s "$tmp/kept.md" ]; then echo; cat "$tmp/kept.md"; fi
} > "$out"
echo "bench: wrote $out"
