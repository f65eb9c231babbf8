#!/usr/bin/env bash
# End to end: tetherd as devices see it, next to the engine alone (coap_bench_server) and libcoap
# (coap-server-notls -d), with the same SDK-shaped fleet (bench/gateway/sdk_fleet), same run.
#   bench/gateway/run-e2e.sh BUILD_DIR OUT_DIR [SECONDS=5] [RATES] [SCALE="1000 10000 100000"]
# Every point gets a fresh server (tetherd: a fresh durable store, fsync, on the disk under
# /var/tmp; local-only, no cloud) and a fresh fleet: handshakes, then open-loop load.
# Writes OUT_DIR/e2e.md (markdown tables), OUT_DIR/points.txt (one fleet line per point, prefixed
# by server, devices, mode and offered rate) and OUT_DIR/*.png plots.
#   sweep     PUT and GET at 10k devices, offered RATES, each server: goodput and p99 vs offered
#   capacity  PUT and GET at 10k devices, closed loop (2,000 in flight), tetherd and the engine, twice
#   scale     PUT and GET at SCALE devices, closed loop (libcoap only up to 10k devices: its
#             session setup alone takes minutes beyond)
#   overload  tetherd PUT at 2x its measured durable capacity: goodput, shed (5.03), p99
#   observe   10k devices each observing its own path, PUT at half the durable capacity:
#             notification latency
#   fanout    10k devices observing one path, one change a second: notification latency, CPU
#   memory    100k devices idle, then with one observation each: RssAnon / RssFile per device
set -euo pipefail
build=${1:?usage: run-e2e.sh BUILD_DIR OUT_DIR [SECONDS] [RATES] [SCALE]}
out=${2:?usage: run-e2e.sh BUILD_DIR OUT_DIR [SECONDS] [RATES] [SCALE]}
secs=${3:-5}
rates=${4:-"10000 20000 30000 40000 50000 60000 80000 100000"}
scale=${5:-"1000 10000 100000"}
mkdir -p "$out"
build=$(cd "$build" && pwd)
fleet=$build/bench/gateway/sdk_fleet
engine=$build/bench/coap/coap_bench_server
tetherd=$build/tetherd
for b in "$fleet" "$engine" "$tetherd"; do [ -x "$b" ] || { echo "build $b first" >&2; exit 1; }; done
command -v coap-server-notls >/dev/null || { echo "coap-server-notls missing (libcoap3-bin)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root: the fleet gives every device its own address (raw sockets)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/tether-e2e.XXXXXX)  # on disk: fsync must reach a real file system
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
points=$out/points.txt
: > "$points"

source "$(dirname "$0")/bench_tetherd.sh"

# start SERVER: sets spid and port (and admin for tetherd).
start() {
  case $1 in
    tetherd)
      start_tetherd "$tetherd"
      ;;
    engine)
      "$engine" 127.0.0.1 0 >"$work/engine.port" 2>/dev/null & spid=$!
      for _ in $(seq 100); do [ -s "$work/engine.port" ] && break; sleep 0.05; done
      port=$(awk '/^PORT/{print $2}' "$work/engine.port"); rm -f "$work/engine.port"
      ;;
    libcoap)
      port=$(free_port)
      coap-server-notls -A 127.0.0.1 -p "$port" -d 4000000 >/dev/null 2>&1 & spid=$!
      sleep 0.5
      ;;
  esac
}
stop() { kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; spid=; }

# point SERVER DEVICES MODE RATE [SECONDS]: one fresh server, one fleet run (extra fleet flags in
# $closed: "--closed N"); appends to points.txt and prints the fleet's line.
closed=
point() {
  local server=$1 n=$2 mode=$3 rate=$4 s=${5:-$secs} line extra=
  start "$server"
  # shellcheck disable=SC2086
  line=$("$fleet" --raw $closed --server-pid "$spid" 127.0.0.1 "$port" "$n" "$mode" "$rate" "$s" | tail -1)
  if [ "$server" = tetherd ]; then
    extra=" metrics_shed=$(curl -sf "http://127.0.0.1:$admin/metrics" |
      awk 'index($0, "tether_writes_refused_total{reason=\"overloaded\"} ") == 1 {s += $NF} END {print s + 0}')"
  fi
  stop
  echo "server=$server devices=$n mode=$mode rate=${closed:+closed}$rate $line$extra" | tee -a "$points"
}

# row PREFIX [N]: the Nth (1st) line of points.txt that starts with PREFIX; empty when none (a
# point a server skipped, e.g. libcoap beyond 10k devices).
row() { awk -v p="$1" -v n="${2:-1}" 'index($0, p) == 1 && ++k == n { print; exit }' "$points"; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
# best SERVER DEVICES MODE: the highest goodput measured for it (closed-loop runs and the sweep).
best() { awk -v s="$1" -v n="$2" -v m="$3" '
  { split("", f); for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    if (f["server"] == s && f["devices"] == n && f["mode"] == m && f["goodput"] + 0 > b) b = f["goodput"] + 0 }
  END { print b + 0 }' "$points"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf (a > 0 && b > 0) ? "%.2f" : "n/a", a / b }'; }

echo "e2e: capacity at 10000 devices, closed loop (2000 requests in flight), two runs" >&2
closed="--closed 2000"
for run in 1 2; do
  for mode in put get; do
    for server in tetherd engine; do point "$server" 10000 "$mode" 2000 >/dev/null; done
  done
done
closed=

echo "e2e: sweep at 10000 devices (rates: $rates)" >&2
for mode in put get; do
  for rate in $rates; do
    for server in tetherd engine libcoap; do point "$server" 10000 "$mode" "$rate" >/dev/null; done
  done
done

echo "e2e: devices scale ($scale), closed loop" >&2
closed="--closed 2000"
for n in $scale; do
  for mode in put get; do
    for server in tetherd engine libcoap; do
      [ "$server" = libcoap ] && [ "$n" -gt 10000 ] && continue
      [ "$n" = 10000 ] && [ "$server" != libcoap ] && continue  # measured above
      point "$server" "$n" "$mode" 2000 >/dev/null
    done
  done
done
closed=

cap_put=$(best tetherd 10000 put); cap_get=$(best tetherd 10000 get)
eng_put=$(best engine 10000 put); eng_get=$(best engine 10000 get)
echo "e2e: overload at 2x the durable capacity ($cap_put/s)" >&2
over=$(point tetherd 10000 put $(( cap_put * 2 )))
over2=$(point tetherd 10000 put $(( cap_put * 2 )))

echo "e2e: observe and fan-out" >&2
obs_t=$(point tetherd 10000 observe $(( cap_put / 2 )))
obs_e=$(point engine 10000 observe $(( cap_put / 2 )))
fan_t=$(point tetherd 10000 fanout 1)
fan_e=$(point engine 10000 fanout 1)

echo "e2e: memory at 100000 devices" >&2
mem() { start "$1"; "$fleet" --raw --server-pid "$spid" 127.0.0.1 "$port" 100000 "$2" 1 1 | grep rss_anon_kb; stop; }
mem_t=$(mem tetherd idle); mem_to=$(mem tetherd idle-observe)
mem_e=$(mem engine idle); mem_eo=$(mem engine idle-observe)

# ---- tables ----
{
  echo "Sweep at 10,000 devices, ${secs} s per point, open loop (offered = requests sent per second):"
  echo
  echo "| mode | offered req/s | tetherd goodput | p99 ms | engine alone goodput | p99 ms | libcoap goodput | p99 ms | tetherd CPU µs per answer (loop + writer) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for mode in put get; do
    for rate in $rates; do
      t=$(row "server=tetherd devices=10000 mode=$mode rate=$rate ")
      e=$(row "server=engine devices=10000 mode=$mode rate=$rate ")
      l=$(row "server=libcoap devices=10000 mode=$mode rate=$rate ")
      echo "| $mode | $rate | $(field goodput "$t") | $(field p99_ms "$t") | $(field goodput "$e") | $(field p99_ms "$e") | $(field goodput "$l") | $(field p99_ms "$l") | $(field cpu_us_per_ok "$t") ($(field loop_cpu_s "$t") + $(field writer_cpu_s "$t") s) |"
    done
  done
  echo
  echo "Capacity at 10,000 devices: the highest goodput measured, closed loop (2,000 requests in flight,"
  echo "two runs) or in the sweep, same run:"
  echo
  echo "| run | mode | tetherd goodput | p99 ms | CPU µs per answer (loop + writer s) | engine alone goodput | p99 ms | CPU µs per answer |"
  echo "|---|---|---|---|---|---|---|---|"
  for run in 1 2; do
    for mode in put get; do
      t=$(row "server=tetherd devices=10000 mode=$mode rate=closed2000 " "$run")
      e=$(row "server=engine devices=10000 mode=$mode rate=closed2000 " "$run")
      echo "| $run | $mode | $(field goodput "$t") | $(field p99_ms "$t") | $(field cpu_us_per_ok "$t") ($(field loop_cpu_s "$t") + $(field writer_cpu_s "$t")) | $(field goodput "$e") | $(field p99_ms "$e") | $(field cpu_us_per_ok "$e") |"
    done
  done
  echo
  echo "| mode | tetherd | engine alone | ratio (goal) |"
  echo "|---|---|---|---|"
  echo "| PUT (durable, fsync) | $cap_put | $eng_put | $(ratio "$cap_put" "$eng_put") (≥ 0.8) |"
  echo "| GET (local copy) | $cap_get | $eng_get | $(ratio "$cap_get" "$eng_get") (≥ 0.9) |"
  echo
  echo "Devices scale, closed loop (2,000 requests in flight; a request unanswered at its first"
  echo "retransmission leaves the window), so goodput is what each server sustains at that many devices:"
  echo
  echo "| devices | mode | tetherd goodput | shed 5.03 | p99 ms | handshakes/s | engine alone goodput | p99 ms | libcoap goodput | p99 ms | ratio tetherd/engine |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for n in $scale; do
    for mode in put get; do
      t=$(row "server=tetherd devices=$n mode=$mode rate=closed2000 ")
      e=$(row "server=engine devices=$n mode=$mode rate=closed2000 ")
      l=$(row "server=libcoap devices=$n mode=$mode rate=closed2000 ")
      echo "| $n | $mode | $(field goodput "$t") | $(field shed "$t") | $(field p99_ms "$t") | $(field opens_per_s "$t") | $(field goodput "$e") | $(field p99_ms "$e") | $(field goodput "$l") | $(field p99_ms "$l") | $(ratio "$(field goodput "$t")" "$(field goodput "$e")") |"
    done
  done
  echo
  echo "Overload: tetherd PUT at 2x its durable capacity ($(( cap_put * 2 )) req/s offered, 10,000 devices), two runs:"
  echo
  echo "| run | goodput | ratio to capacity (goal ≥ 0.95) | shed 5.03 (counted in /metrics) | lost | p99 ms of answered (goal < 200) | max ms | retransmitted |"
  echo "|---|---|---|---|---|---|---|---|"
  k=0
  for o in "$over" "$over2"; do
    k=$((k + 1))
    echo "| $k | $(field goodput "$o") | $(ratio "$(field goodput "$o")" "$cap_put") | $(field shed "$o") ($(field metrics_shed "$o")) | $(field lost "$o") | $(field p99_ms "$o") | $(field max_ms "$o") | $(field retried "$o") |"
  done
  echo
  echo "Notifications at 10,000 devices:"
  echo
  echo "| case | server | notifications | p50 ms | p99 ms | max ms | server CPU µs per notification |"
  echo "|---|---|---|---|---|---|---|"
  echo "| each device observes its own path; PUTs at $(( cap_put / 2 ))/s | tetherd | $(field notifications "$obs_t") | $(field notif_p50_ms "$obs_t") | $(field notif_p99_ms "$obs_t") | $(field notif_max_ms "$obs_t") | |"
  echo "| (same) | engine alone | $(field notifications "$obs_e") | $(field notif_p50_ms "$obs_e") | $(field notif_p99_ms "$obs_e") | $(field notif_max_ms "$obs_e") | |"
  echo "| all observe one path; one change a second, ${secs} changes | tetherd | $(field notifications "$fan_t") (fewest per change $(field fewest_notified "$fan_t")) | $(field notif_p50_ms "$fan_t") | $(field notif_p99_ms "$fan_t") | $(field notif_max_ms "$fan_t") | $(field cpu_us_per_notification "$fan_t") |"
  echo "| (same) | engine alone | $(field notifications "$fan_e") (fewest per change $(field fewest_notified "$fan_e")) | $(field notif_p50_ms "$fan_e") | $(field notif_p99_ms "$fan_e") | $(field notif_max_ms "$fan_e") | $(field cpu_us_per_notification "$fan_e") |"
  echo
  echo "Memory per device at 100,000 devices (growth from the empty server; goal ≤ 1024 B idle, ≤ 1536 B with one observation):"
  echo
  echo "| server | state | RssAnon bytes/device | RssFile bytes/device | RssAnon kB | RssFile kB |"
  echo "|---|---|---|---|---|---|"
  for m in "tetherd|session|$mem_t" "tetherd|session + 1 observation|$mem_to" "engine alone|peer|$mem_e" "engine alone|peer + 1 observation|$mem_eo"; do
    IFS='|' read -r s st line <<<"$m"
    echo "| $s | $st | $(field anon_bytes_per_device "$line") | $(field file_bytes_per_device "$line") | $(field rss_anon_kb "$line") | $(field rss_file_kb "$line") |"
  done
} > "$out/e2e.md"

# ---- headline figures for bench/run-all.sh's summary (name value) ----
{
  echo "cap_put $cap_put"; echo "eng_put $eng_put"; echo "cap_get $cap_get"; echo "eng_get $eng_get"
  echo "over_offered $(( cap_put * 2 ))"
  for k in goodput shed lost p99_ms max_ms; do
    echo "over_$k $(printf '%s\n%s\n' "$(field $k "$over")" "$(field $k "$over2")" | sort -g | head -1)"
  done
  echo "over_p99_worst $(printf '%s\n%s\n' "$(field p99_ms "$over")" "$(field p99_ms "$over2")" | sort -g | tail -1)"
  echo "mem_anon $(field anon_bytes_per_device "$mem_t")"; echo "mem_file $(field file_bytes_per_device "$mem_t")"
  echo "mem_obs_anon $(field anon_bytes_per_device "$mem_to")"; echo "mem_obs_file $(field file_bytes_per_device "$mem_to")"
  echo "mem_eng_anon $(field anon_bytes_per_device "$mem_e")"
  echo "fan_p99 $(field notif_p99_ms "$fan_t")"; echo "fan_eng_p99 $(field notif_p99_ms "$fan_e")"
  echo "fan_cpu $(field cpu_us_per_notification "$fan_t")"; echo "fan_eng_cpu $(field cpu_us_per_notification "$fan_e")"
  echo "fan_fewest $(field fewest_notified "$fan_t")"
  echo "obs_p99 $(field notif_p99_ms "$obs_t")"; echo "obs_eng_p99 $(field notif_p99_ms "$obs_e")"
} > "$out/figures.txt"

# ---- plots: goodput and p99 vs offered, 10k devices ----
for server in tetherd engine libcoap; do
  for mode in put get; do
    for rate in $rates; do
      l=$(row "server=$server devices=10000 mode=$mode rate=$rate ")
      echo "$rate $(field goodput "$l") $(field p99_ms "$l")"
    done > "$work/$server-$mode.dat"
  done
done
gnuplot <<GP
set terminal pngcairo size 1000,720 font ",10"
set output "$out/e2e_put_get.png"
set multiplot layout 2,2 title "SDK-shaped devices (10,000, with sessions), open loop, ${secs} s per point"
set grid; set key top left; set xlabel "offered req/s"; set xtics rotate by -30; set format x "%.0s%c"
set ylabel "goodput (2.xx answers/s)"; set yrange [0:*]
set title "PUT (tetherd: durable, fsync)"
plot x w l dt 2 lc rgb "gray" t "offered", "$work/tetherd-put.dat" u 1:2 w lp lw 2 lc rgb "#009e73" t "tetherd", "$work/engine-put.dat" u 1:2 w lp lw 2 lc rgb "#56b4e9" t "engine alone", "$work/libcoap-put.dat" u 1:2 w lp lw 2 lc rgb "#e69f00" t "libcoap"
set title "GET (tetherd: local copy)"
plot x w l dt 2 lc rgb "gray" t "offered", "$work/tetherd-get.dat" u 1:2 w lp lw 2 lc rgb "#009e73" t "tetherd", "$work/engine-get.dat" u 1:2 w lp lw 2 lc rgb "#56b4e9" t "engine alone", "$work/libcoap-get.dat" u 1:2 w lp lw 2 lc rgb "#e69f00" t "libcoap"
set ylabel "p99 latency of answers (ms)"; set logscale y; set yrange [*:*]
set title "PUT p99"
plot "$work/tetherd-put.dat" u 1:3 w lp lw 2 lc rgb "#009e73" t "tetherd", "$work/engine-put.dat" u 1:3 w lp lw 2 lc rgb "#56b4e9" t "engine alone", "$work/libcoap-put.dat" u 1:3 w lp lw 2 lc rgb "#e69f00" t "libcoap"
set title "GET p99"
plot "$work/tetherd-get.dat" u 1:3 w lp lw 2 lc rgb "#009e73" t "tetherd", "$work/engine-get.dat" u 1:3 w lp lw 2 lc rgb "#56b4e9" t "engine alone", "$work/libcoap-get.dat" u 1:3 w lp lw 2 lc rgb "#e69f00" t "libcoap"
unset multiplot
GP
cat "$out/e2e.md"
