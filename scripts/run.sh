#!/usr/bin/env bash
# run.sh — install what is missing, build, and show inboxd doing its job.
# Until the server lands this runs the storage engine's demo benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)"
if [ -x build/release/bench/engine/bench_engine ]; then
  exec build/release/bench/engine/bench_engine --seconds 5 --dir "${INBOX_DATA:-./inboxd-data}/bench"
fi
echo "built; nothing to run yet"
