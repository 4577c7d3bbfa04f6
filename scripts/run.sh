#!/usr/bin/env bash
# run.sh — install what is missing, build, start a local inboxd with its data
# under ./inboxd-data (certificates made on first start), and show it doing
# its job with inboxctl: enqueue, fetch, ack, last-seen, status.
#
#   scripts/run.sh           demo, then keep inboxd running (Ctrl-C stops it)
#   scripts/run.sh --demo    demo, then stop inboxd and exit
#
# Environment: INBOX_DATA (default ./inboxd-data), INBOX_PORT (7420),
# INBOX_METRICS_PORT (7421).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)" \
  --target inboxd inboxctl >/dev/null

data=${INBOX_DATA:-./inboxd-data}
port=${INBOX_PORT:-7420}
mport=${INBOX_METRICS_PORT:-7421}
bin=build/release
ctl() { "$bin/cli/inboxctl" "$@" --addr "127.0.0.1:$port" \
          --ca "$data/tls/ca.crt" --cert "$data/tls/admin.crt" \
          --key "$data/tls/admin.key"; }

mkdir -p "$data"
"$bin/server/inboxd" --node-data-dir "$data" \
  --node-listen "127.0.0.1:$port" --node-metrics "127.0.0.1:$mport" \
  >>"$data/inboxd.log" 2>&1 &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; }
trap stop EXIT INT TERM

for _ in $(seq 1 100); do
  ctl status >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "inboxd exited; see $data/inboxd.log" >&2; tail -5 "$data/inboxd.log" >&2; exit 1; }
  sleep 0.1
done

say() { printf '\n\033[1m$ inboxctl %s\033[0m\n' "$*"; }
inbox="demo-$(date +%s)"
say enqueue "$inbox" "hello"; ctl enqueue "$inbox" "hello"
say enqueue "$inbox" "are you there?"; ctl enqueue "$inbox" "are you there?"
say enqueue "$inbox" "third message"; ctl enqueue "$inbox" "third message"
say fetch "$inbox"; ctl fetch "$inbox"
say ack "$inbox" 2; ctl ack "$inbox" 2
say fetch "$inbox"; ctl fetch "$inbox"
say seen set "$inbox"; ctl seen set "$inbox"
say seen get "$inbox"; ctl seen get "$inbox"
say status; ctl status

echo
echo "inboxd is running: pid $pid, clients on 127.0.0.1:$port, metrics on http://127.0.0.1:$mport/metrics"
echo "data and certificates in $data (admin client: $data/tls/admin.crt); log in $data/inboxd.log"
if [ "${1:-}" = "--demo" ]; then
  exit 0
fi
echo "Ctrl-C stops it."
wait "$pid"
