#!/usr/bin/env bash
# run.sh — install what is missing, build, start a local three-node inboxd
# cluster (each node with its own data directory and ports, certificates
# from one cluster CA made on first start), and show it doing its job with
# inboxctl: enqueue, fetch, ack, last-seen, cluster status — then kill -9
# the leader of the demo inbox's shard and show the cluster carrying on
# with every message, and the killed node rejoining.
#
#   scripts/run.sh           demo, then keep the cluster running (Ctrl-C)
#   scripts/run.sh --demo    demo, then stop the cluster and exit
#
# Environment: INBOX_DATA (default ./inboxd-data), INBOX_PORT (7420: node
# i listens on INBOX_PORT + 10*(i-1), its /metrics on that + 1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j "$(nproc 2>/dev/null || echo 2)" \
  --target inboxd inboxctl >/dev/null

data=${INBOX_DATA:-./inboxd-data}
base=${INBOX_PORT:-7420}
bin=build/release
tls="$data/tls"
port() { echo $((base + 10 * ($1 - 1))); }
members="1@127.0.0.1:$(port 1),2@127.0.0.1:$(port 2),3@127.0.0.1:$(port 3)"
seeds=(--addr "127.0.0.1:$(port 1)" --addr "127.0.0.1:$(port 2)"
       --addr "127.0.0.1:$(port 3)")
ctl() { "$bin/cli/inboxctl" "$@" "${seeds[@]}" --ca "$tls/ca.crt" \
          --cert "$tls/admin.crt" --key "$tls/admin.key"; }

# Certificates: one CA for the cluster, a node certificate per node, an
# admin client certificate for inboxctl. Made once; kept across runs.
mkdir -p "$tls"
[ -f "$tls/ca.crt" ] || "$bin/cli/inboxctl" cert ca --dir "$tls" >/dev/null
for i in 1 2 3; do
  [ -f "$tls/node$i.crt" ] || "$bin/cli/inboxctl" cert node --name "node$i" \
    --host 127.0.0.1 --dir "$tls" >/dev/null
done
[ -f "$tls/admin.crt" ] || "$bin/cli/inboxctl" cert client --name admin \
  --role admin --dir "$tls" >/dev/null

declare -a pids
start() {
  local i=$1
  mkdir -p "$data/node$i"
  "$bin/server/inboxd" --node-id "$i" --node-data-dir "$data/node$i" \
    --node-listen "127.0.0.1:$(port "$i")" \
    --node-metrics "127.0.0.1:$(($(port "$i") + 1))" \
    --cluster-members "$members" --tls-ca "$tls/ca.crt" \
    --tls-cert "$tls/node$i.crt" --tls-key "$tls/node$i.key" \
    >>"$data/node$i.log" 2>&1 &
  pids[i]=$!
}
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop EXIT INT TERM

for i in 1 2 3; do start "$i"; done
# Ready once every shard has a leader that answers.
for _ in $(seq 1 150); do
  ctl cluster status >/dev/null 2>&1 && break
  for i in 1 2 3; do
    kill -0 "${pids[i]}" 2>/dev/null || {
      echo "node $i exited; see $data/node$i.log" >&2
      tail -5 "$data/node$i.log" >&2; exit 1; }
  done
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
say cluster status; ctl cluster status

# The leader of the demo inbox's shard dies without warning.
say route "$inbox"; ctl route "$inbox"
leader=$(ctl route "$inbox" | awk -v i="$inbox" '$1 == i { sub("leader=", "", $3); print $3 }')
printf '\n\033[1m$ kill -9 node %s (pid %s), the leader of %s\033[0m\n' \
  "$leader" "${pids[leader]}" "$inbox"
kill -9 "${pids[leader]}"
wait "${pids[leader]}" 2>/dev/null || true
t0=$(date +%s%N)
say enqueue "$inbox" "sent after the leader died"
ctl enqueue "$inbox" "sent after the leader died"
echo "(answered $(( ($(date +%s%N) - t0) / 1000000 )) ms after the kill, by a newly elected leader)"
say fetch "$inbox"; ctl fetch "$inbox"
say route "$inbox"; ctl route "$inbox" | tail -1
say cluster status; ctl cluster status || true

printf '\n\033[1m# node %s restarts and catches up from the others\033[0m\n' "$leader"
start "$leader"
# Caught up: every shard has a reachable leader and the node lags by 0.
for _ in $(seq 1 150); do
  out=$(ctl cluster status 2>/dev/null) &&
    echo "$out" | awk -v n="$leader" '$1 == n && $NF == "0" { ok = 1 } END { exit !ok }' &&
    break
  sleep 0.1
done
say cluster status; ctl cluster status

echo
echo "inboxd cluster running: nodes 1-3 on 127.0.0.1:$(port 1),$(port 2),$(port 3) (pids ${pids[*]})"
echo "metrics on http://127.0.0.1:$(($(port 1) + 1))/metrics (and +10, +20)"
echo "data in $data/node{1,2,3}, logs in $data/node{1,2,3}.log, certificates in $tls"
echo "try: build/release/cli/inboxctl --addr 127.0.0.1:$(port 1) --ca $tls/ca.crt --cert $tls/admin.crt --key $tls/admin.key cluster status"
if [ "${1:-}" = "--demo" ]; then
  exit 0
fi
echo "Ctrl-C stops it."
wait
