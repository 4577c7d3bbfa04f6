#!/usr/bin/env bash
# fuzz.sh — build every libFuzzer target (clang, -DINBOX_FUZZ=ON) in
# build/fuzz and run each for N seconds over a fresh copy of its seed corpus
# (tests/fuzz/corpus/<target>). Fails non-zero on a build failure or on any
# crash, sanitizer report, leak or timeout; the input that did it is left in
# build/fuzz/artifacts/ and the log in build/fuzz/<target>.log.
# Usage: scripts/fuzz.sh [seconds-per-target]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
  echo "usage: $0 [seconds-per-target]" >&2
  exit 2
fi
jobs=$(nproc 2>/dev/null || echo 2)
build=build/fuzz

# -O1 -g without NDEBUG: assertions stay on while fuzzing.
CC=clang cmake -S . -B "$build" -DINBOX_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
  >/dev/null
cmake --build "$build" -j "$jobs" --target fuzz_all

list="$build/tests/fuzz/fuzz_targets.txt"
[ -s "$list" ] || { echo "fuzz: no target list at $list" >&2; exit 1; }
IFS=';' read -r -a targets < "$list"
rm -rf "$build/artifacts"
mkdir -p "$build/artifacts"

failed=0
for t in "${targets[@]}"; do
  [ -n "$t" ] || continue
  corpus="$build/corpus/$t"
  rm -rf "$corpus"
  mkdir -p "$corpus"
  if [ -d "tests/fuzz/corpus/$t" ]; then
    cp -r "tests/fuzz/corpus/$t/." "$corpus/"
  fi
  echo "== $t: ${secs}s over $(ls "$corpus" | wc -l) seed(s) =="
  if "$build/tests/fuzz/$t" -max_total_time="$secs" -timeout=10 \
       -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$t-" "$corpus" \
       >"$build/$t.log" 2>&1; then
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done)" \
      "$build/$t.log" || true
  else
    echo "fuzz: $t FAILED; log: $build/$t.log" >&2
    tail -40 "$build/$t.log" >&2
    failed=1
  fi
done
[ $failed -eq 0 ] && echo "fuzz: all targets clean"
exit $failed
