#!/usr/bin/env bash
# Runs every libFuzzer binary in BUILD/fuzz for SECONDS each, seeded from tests/fuzz/corpus/<name>.
set -euo pipefail
build=${1:?build dir}; secs=${2:?seconds}
root=$(cd "$(dirname "$0")/.." && pwd)
shopt -s nullglob
n=0
for f in "$build"/fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  work=$(mktemp -d); seeds="$root/tests/fuzz/corpus/$name"
  echo "fuzz: $name for ${secs}s"
  "$f" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 "$work" ${seeds:+$( [ -d "$seeds" ] && echo "$seeds")} 2>&1 | tail -4
  rm -rf "$work"; n=$((n+1))
done
echo "fuzz: $n targets ran clean"
