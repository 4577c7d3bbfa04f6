#!/usr/bin/env bash
# test.sh — install what is missing, build, and run every test: the release
# build, then the sanitizer build (ASan + UBSan), each under CTest, then
# every libFuzzer target for a bounded time (INBOX_FUZZ_SECONDS, default 30),
# then two short jepsen/ runs (a real three-node cluster in network
# namespaces under kill, pause, partitions and power cuts; five nodes under
# WAL damage,
# majority crashes, membership changes, clock skew and halves; any anomaly,
# in the histories or between the replicas' stores, fails; needs root,
# skipped with a message otherwise).
# Usage: scripts/test.sh [--quick]   (--quick: release build and tests only)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
quick=0
[ "${1:-}" = "--quick" ] && quick=1

run_build() {  # dir, cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs"
}

echo "== release build (RelWithDebInfo) =="
run_build build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ $quick -eq 0 ]; then
  echo "== sanitizer build (ASan + UBSan) =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_build build/asan -DCMAKE_BUILD_TYPE=Debug -DINBOX_ASAN=ON
  echo "== fuzzers (libFuzzer, bounded time) =="
  scripts/fuzz.sh "${INBOX_FUZZ_SECONDS:-30}"
  echo "== jepsen/ short run (faults on a real cluster) =="
  if [ "$(id -u)" -eq 0 ]; then
    python3 jepsen/run.py --short --bin build/release \
      --faults kill,pause,isolate,bridge,oneway,power
    # Five nodes under the nemeses that damage state: a WAL tail cut or
    # bit-flipped while a node is down, a majority crashing one by one, a
    # node removed and joined back, clock jumps, a 2 / 3 partition.
    python3 jepsen/run.py --short --bin build/release --nodes 5 \
      --faults truncate,bitflip,crash,member,skew,halves
  else
    echo "jepsen: skipped (network namespaces need root)"
  fi
fi
echo "all tests passed"
