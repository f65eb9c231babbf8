#!/usr/bin/env bash
# Two trees' benchmarks in the same run, alternating, so a change's cost (or a restructure's lack
# of one) is a ratio measured side by side rather than against figures of another day:
#   bench/run-ab.sh CANDIDATE_BUILD BASELINE_BUILD [ROUNDS=3] [SCALE=1]
# Each build as `make bench` makes it (Release; targets tetherd sdk_fleet store_bench
# upstream_drain_bench detection_bench restart_bench). Run as root (the fleet gives every device
# its own address). SCALE divides the sizes below (2 = half) for a quicker look.
#   store      store_bench --seconds 3: durable writes/s, 256 outstanding (tree set + queue append)
#   drain      upstream_drain_bench 1000000 0 100000: seconds to drain 1M queued operations
#   detection  detection_bench 10000 5: p99 seconds beyond the timeout of 10k silent devices
#   restart    restart_bench 1000000 100000: ms from exec to the first answer on a restored session
#   put, get   each tree's tetherd under the candidate's sdk_fleet, 10k devices, closed loop with
#              2,000 in flight, 5 s (run-e2e.sh's capacity points): answered req/s
# FIGURES="put get" in the environment runs only those. Rounds alternate the order (candidate
# first, then baseline first). Prints every run's figure,
# then per figure the medians and the ratio, oriented so that above 1 means the candidate is better.
set -euo pipefail
cand=$(cd "${1:?usage: run-ab.sh CANDIDATE_BUILD BASELINE_BUILD [ROUNDS] [SCALE]}" && pwd)
base=$(cd "${2:?usage: run-ab.sh CANDIDATE_BUILD BASELINE_BUILD [ROUNDS] [SCALE]}" && pwd)
rounds=${3:-3}
scale=${4:-1}
for b in "$cand" "$base"; do
  for t in tetherd bench/gateway/sdk_fleet bench/store/store_bench bench/upstream/upstream_drain_bench \
           bench/gateway/detection_bench bench/gateway/restart_bench; do
    [ -x "$b/$t" ] || { echo "build $b/$t first" >&2; exit 1; }
  done
done
[ "$(id -u)" = 0 ] || { echo "run as root: the fleet gives every device its own address (raw sockets)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d /var/tmp/tether-ab.XXXXXX)  # on disk: fsync must reach a real file system
spid=
cleanup() { [ -n "$spid" ] && kill "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
source "$(dirname "$0")/gateway/bench_tetherd.sh"
fleet=$cand/bench/gateway/sdk_fleet
points=$work/points

# figure NAME BUILD: runs one benchmark of BUILD, prints its figure.
figure() {
  local b=$1/bench out
  case $2 in
    store)
      # (its recovery figure is restart's: a small fixture here)
      out=$("$b/store/store_bench" --seconds 3 --entries 1000 --sessions 100 --dir "$work/store"); rm -rf "$work/store"
      sed -n 's/.*Store, 256 outstanding *: *\([0-9.]*\).*tree set.*/\1/p' <<<"$out" | head -1 ;;
    drain)
      out=$("$b/upstream/upstream_drain_bench" $((1000000 / scale)) 0 100000)
      sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$out" | head -1 ;;
    detection)
      out=$("$b/gateway/detection_bench" $((10000 / scale)) 5)
      awk -F'|' '$2 ~ /[0-9]/ { split($4, p, "/"); v = p[2]; gsub(/ /, "", v); print v; exit }' <<<"$out" ;;
    restart)
      out=$("$b/gateway/restart_bench" $((1000000 / scale)) $((100000 / scale)) 2>/dev/null)
      awk -F'|' '{ v = $4; gsub(/[^0-9.]/, "", v); print v; exit }' <<<"$out" ;;
    put|get)
      start_tetherd "$1/tetherd"
      out=$("$fleet" --raw --closed 2000 --server-pid "$spid" 127.0.0.1 "$port" $((10000 / scale)) "$2" 2000 5 | tail -1)
      kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; spid=
      sed -n 's/.* goodput=\([0-9.]*\).*/\1/p' <<<" $out" ;;
  esac
}

figures=${FIGURES:-"store drain detection restart put get"}
: > "$points"
for r in $(seq "$rounds"); do
  order="cand base"; [ $((r % 2)) = 0 ] && order="base cand"
  for f in $figures; do
    for who in $order; do
      dir=$cand; [ "$who" = base ] && dir=$base
      v=$(figure "$dir" "$f")
      echo "round=$r figure=$f build=$who value=${v:-n/a}" | tee -a "$points" >&2
    done
  done
done

values() { awk -v f="$1" -v w="$2" '$2 == "figure=" f && $3 == "build=" w { split($4, kv, "="); if (kv[2] != "n/a") print kv[2] }' "$points"; }
median() { values "$1" "$2" | sort -g | awk '{ v[NR] = $1 } END { if (!NR) print "n/a"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { awk -v f="$1" -v w="$2" '$2 == "figure=" f && $3 == "build=" w { split($4, kv, "="); printf "%s%s", sep, kv[2]; sep = ", " }' "$points"; }
echo "| figure | candidate: median (runs) | baseline: median (runs) | ratio (> 1: candidate better) |"
echo "|---|---|---|---|"
for f in $figures; do
  c=$(median "$f" cand); b=$(median "$f" base)
  case $f in
    store|put|get) label="$f (higher is better)"; ratio=$(awk -v a="$c" -v b="$b" 'BEGIN { printf (a > 0 && b > 0) ? "%.2f" : "n/a", a / b }') ;;
    *) label="$f (lower is better)"; ratio=$(awk -v a="$c" -v b="$b" 'BEGIN { printf (a > 0 && b > 0) ? "%.2f" : "n/a", b / a }') ;;
  esac
  echo "| $label | $c ($(range "$f" cand)) | $b ($(range "$f" base)) | $ratio |"
done
