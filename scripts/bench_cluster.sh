#!/bin/bash
# bench_cluster.sh — a three-node inboxd cluster against NATS JetStream R3
# and etcd (three nodes), all on this one machine, in one sitting.
#
# Durability differs; say so beside every figure:
#   inboxd  acks an enqueue once a majority (2 of 3) has fsync'd it (WAL
#           fdatasync on each node) and the leader applied it; mutual TLS.
#   NATS    (2.9, Debian) acks once a quorum holds the message in memory;
#           it syncs to disk every two minutes (this version has no
#           sync_interval: always). Plaintext.
#   etcd    fsyncs on a quorum before acking, like inboxd; HTTP gateway,
#           plaintext.
#
#   1. builds inboxd, inboxctl and bench_load (RelWithDebInfo) in build/bench;
#   2. inboxd: a fresh 3-node cluster (temp data dirs, one CA, default
#      settings, 64 shards, leaders spread over the nodes by their
#      elections); bench_load (libinbox, routes each enqueue to its shard's
#      leader), RUNS runs of SECS s each: 50 connections x 16 in flight,
#      50 x 1, 1 x 1; 100-byte payloads to 100,000 random inboxes;
#   3. the peers' nats_jetstream.sh and etcd_cluster.sh (from a copy);
#   4. one table: medians side by side and the ratios, matched by shape:
#      inboxd c50 x16 (800 in flight) vs NATS R3 async (4096 in flight,
#      no latency figures) and etcd 200 clients; c50 x1 vs NATS sync 50
#      threads and etcd 50 clients; c1 x1 vs NATS sync 1 thread and etcd
#      1 client.
#
# usage: scripts/bench_cluster.sh
# env:   SECS=10 RUNS=3 PORT=17420 (node i: PORT+10(i-1), metrics +1)
#        NATS_N=200000 NATS_SECS=10 ETCD_SECS=10 NATS=0 / ETCD=0 skip one
#        PEERS=/work/shared/peers OUT=build/bench/cluster
# Load is bounded by time; everything started is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build/bench}
SECS=${SECS:-10}
RUNS=${RUNS:-3}
PORT=${PORT:-17420}
NATS_N=${NATS_N:-200000}
NATS_SECS=${NATS_SECS:-10}
ETCD_SECS=${ETCD_SECS:-10}
PEERS=${PEERS:-/work/shared/peers}
OUT=${OUT:-$BUILD/cluster}
WORK=$(mktemp -d /tmp/bench-cluster.XXXXXX)
declare -a IPIDS=()
PEERPID=""

stop_pid() { # pid: SIGTERM, wait up to 15 s, then SIGKILL
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || return 0
    for i in $(seq 1 150); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}
cleanup() {
    local p
    for p in "${IPIDS[@]}"; do stop_pid "$p"; done
    if [ -n "$PEERPID" ]; then
        for p in $(ps -o pid= --ppid "$PEERPID" 2>/dev/null); do stop_pid "$p"; done
        stop_pid "$PEERPID"
    fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
rm -f "$OUT"/*.txt "$OUT"/*.log
cp -r "$PEERS" "$WORK/peers"
chmod -R u+w "$WORK/peers"
# shellcheck source=/dev/null
. "$WORK/peers/common.sh" # cpu_begin/cpu_end, median, wait_port
set -e

echo "== bench_cluster $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
echo "   uptime at start: $(uptime)"
echo "-- build ($BUILD, RelWithDebInfo)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/cmake.log"
cmake --build "$BUILD" -j2 --target bench_load inboxd inboxctl >"$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log"; exit 1; }
INBOXD=$BUILD/server/inboxd
CTL=$BUILD/cli/inboxctl
LOAD=$BUILD/bench/load/bench_load

port() { echo $((PORT + 10 * ($1 - 1))); }
TLS=$WORK/tls
mkdir -p "$TLS"
"$CTL" cert ca --dir "$TLS" >/dev/null
for i in 1 2 3; do "$CTL" cert node --name "node$i" --host 127.0.0.1 --dir "$TLS" >/dev/null; done
"$CTL" cert client --name admin --role admin --dir "$TLS" >/dev/null
MEMBERS="1@127.0.0.1:$(port 1),2@127.0.0.1:$(port 2),3@127.0.0.1:$(port 3)"
ctl() { "$CTL" "$@" --addr "127.0.0.1:$(port 1)" --ca "$TLS/ca.crt" \
          --cert "$TLS/admin.crt" --key "$TLS/admin.key"; }

# Sum of a counter over the three nodes' /metrics.
metric_sum() {
    local i s=0 v
    for i in 1 2 3; do
        v=$(curl -s "http://127.0.0.1:$(($(port "$i") + 1))/metrics" |
            awk -v k="$1" '$1 == k { print $2 }')
        s=$(awk -v a="$s" -v b="${v:-0}" 'BEGIN { print a + b }')
    done
    echo "$s"
}

echo "-- inboxd: 3 nodes on 127.0.0.1:$(port 1),$(port 2),$(port 3), fresh data dirs, default settings"
for i in 1 2 3; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$(port "$i")") 2>/dev/null; then
        echo "port $(port "$i") is taken: set PORT" >&2; exit 1
    fi
    "$INBOXD" --node-id "$i" --node-data-dir "$WORK/node$i" \
        --node-listen "127.0.0.1:$(port "$i")" \
        --node-metrics "127.0.0.1:$(($(port "$i") + 1))" \
        --cluster-members "$MEMBERS" --tls-ca "$TLS/ca.crt" \
        --tls-cert "$TLS/node$i.crt" --tls-key "$TLS/node$i.key" \
        --node-log-level warn >"$OUT/inboxd_node$i.log" 2>&1 &
    IPIDS+=($!)
done
for _ in $(seq 1 200); do ctl cluster status >/dev/null 2>&1 && break; sleep 0.1; done
ctl cluster status | sed 's/^/   /'
"$LOAD" --server "127.0.0.1:$(port 1)" --tls-dir "$TLS" --seconds 1 --connections 1 \
    --inflight 1 >"$OUT/inboxd_warmup.txt" 2>&1 || true

run() { # LABEL ARGS...: RUNS runs of bench_load
    local label=$1; shift
    local i f r ccpu cpu f0 f1 m0 m1
    for i in $(seq 1 "$RUNS"); do
        f=$OUT/inboxd_${label// /_}_run$i.txt
        f0=$(metric_sum inbox_node_wal_fsync_seconds_count)
        m0=$(metric_sum inbox_node_peer_msgs_out_total)
        cpu_begin "${IPIDS[@]}"
        "$LOAD" --server "127.0.0.1:$(port 1)" --tls-dir "$TLS" --seconds "$SECS" "$@" >"$f" 2>&1 ||
            { echo "bench_load failed (exit $?):"; cat "$f"; }
        cpu=$(cpu_end "${IPIDS[@]}")
        f1=$(metric_sum inbox_node_wal_fsync_seconds_count)
        m1=$(metric_sum inbox_node_peer_msgs_out_total)
        r=$(grep '^enqueue:' "$f" || echo "enqueue: failed")
        ccpu=$(grep -o 'client_cpu=[0-9]*%' "$f" || echo "client_cpu=?")
        printf "   %-8s run%d %s %s; %s\n" "$label" "$i" "${r#enqueue: }" "$ccpu" "$cpu"
        awk -v a="$f0" -v b="$f1" -v c="$m0" -v d="$m1" -v s="$SECS" 'BEGIN {
            printf "      fsyncs on the 3 nodes: %.0f/s; raft messages between nodes: %.0f/s\n", (b - a) / s, (d - c) / s }'
        grep -E '^(errors|client):' "$f" | grep -v 'errors: none' | sed 's/^/      /' || true
        echo "$r" >>"$WORK/rows_${label// /_}"
    done
}
run "c50 P16" --connections 50 --inflight 16
run "c50 P1" --connections 50 --inflight 1
run "c1 P1" --connections 1 --inflight 1
ctl cluster status | sed 's/^/   /'
for p in "${IPIDS[@]}"; do stop_pid "$p"; done
IPIDS=()

medians_of() { # rows -> " ops/s=.. p50_ms=.. p99_ms=.."
    local k med=""
    for k in ops/s p50_ms p99_ms; do
        med+=" $k=$(echo "$1" | grep -o "$k=[0-9.]*" | cut -d= -f2 | median)"
    done
    echo "$med"
}
for label in "c50 P16" "c50 P1" "c1 P1"; do
    med=$(medians_of "$(cat "$WORK/rows_${label// /_}")")
    printf "   MEDIAN inboxd %-8s %s\n" "$label" "$med"
    echo "inboxd|$label|$med" >>"$WORK/medians"
done

peer() { # script args...: run a peer script, keep its output
    local s=$1; shift
    echo "-- $s $*"
    "$WORK/peers/$s" "$@" >"$OUT/${s%.sh}.txt" 2>&1 &
    PEERPID=$!
    wait "$PEERPID" || { echo "$s failed:"; cat "$OUT/${s%.sh}.txt"; exit 1; }
    PEERPID=""
    grep -E 'MEDIAN|NOTE|^==' "$OUT/${s%.sh}.txt" | sed 's/^/   /'
}
if [ "${NATS:-1}" = 1 ]; then
    peer nats_jetstream.sh "$NATS_N" "$NATS_SECS"
    # "MEDIAN R3 async ...: msgs/s=X" and "MEDIAN R3 sync N thread(s) ...: msgs/s=X p50_us=Y p99_us=Z"
    awk '/MEDIAN R3 async/ { print "nats|c50 P16|" $0 }
         /MEDIAN R3 sync 50 threads/ { print "nats|c50 P1|" $0 }
         /MEDIAN R3 sync 1 thread/ { print "nats|c1 P1|" $0 }' "$OUT/nats_jetstream.txt" | head -3 >>"$WORK/medians"
fi
if [ "${ETCD:-1}" = 1 ]; then
    peer etcd_cluster.sh "$ETCD_SECS" skip-check-perf
    awk '/MEDIAN put 200 threads/ { print "etcd|c50 P16|" $0 }
         /MEDIAN put 50 threads/ { print "etcd|c50 P1|" $0 }
         /MEDIAN put 1 thread/ { print "etcd|c1 P1|" $0 }' "$OUT/etcd_cluster.txt" >>"$WORK/medians"
fi

echo
echo "== 3 nodes on one machine, 100-byte writes. inboxd: fsync on a quorum before the ack, mutual TLS,"
echo "   64 shards (leaders on all nodes), 100,000 random inboxes; NATS JetStream R3 (2.9: acks from memory,"
echo "   disk sync every 2 min), plaintext; etcd 3.4 (fsync on a quorum), HTTP gateway, plaintext."
echo "   Medians of $RUNS runs. Matched loads: c50 P16 = 800 in flight (NATS: async 4096 in flight; etcd: 200"
echo "   clients); c50 P1 = 50 clients one at a time (NATS: 50 sync threads; etcd: 50 clients); c1 P1 = one"
echo "   at a time. ratio = inboxd / peer: throughput above 1 and p99 below 1 favour inboxd."
echo "   $(grep -h '^machine:' "$OUT"/inboxd_c1_P1_run1.txt 2>/dev/null || true)"
echo "   date: $(date -u '+%Y-%m-%d %H:%M UTC'); uptime at end: $(uptime)"
awk -F'|' '
    function get(s, k,   a, n, i) { n = split(s, a, /[ :]+/); for (i = 1; i <= n; i++) if (index(a[i], k "=") == 1) return substr(a[i], length(k) + 2); return "" }
    function ops(s) { v = get(s, "ops/s"); if (v == "") v = get(s, "msgs/s"); if (v == "") v = get(s, "puts/s"); return v + 0 }
    function p99(s) { v = get(s, "p99_ms"); if (v != "") return v + 0; v = get(s, "p99_us"); return v == "" ? -1 : v / 1000 }
    function p50(s) { v = get(s, "p50_ms"); if (v != "") return v + 0; v = get(s, "p50_us"); return v == "" ? -1 : v / 1000 }
    function ms(v) { return v < 0 ? "       -" : sprintf("%6.2f ms", v) }
    function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%6.2f", a / b) : "     -" }
    { S[$1 "|" $2] = $3 }
    END {
        printf "| %-8s | %-6s | %10s | %9s | %9s | %8s | %8s |\n", "load", "system", "ops/s", "p50", "p99", "ops ratio", "p99 ratio"
        printf "|----------|--------|-----------:|----------:|----------:|---------:|---------:|\n"
        n = split("c50 P16,c50 P1,c1 P1", order, ",")
        for (j = 1; j <= n; j++) { k = order[j]; i = S["inboxd|" k]
            printf "| %-8s | %-6s | %10.0f | %9s | %9s | %8s | %8s |\n", k, "inboxd", ops(i), ms(p50(i)), ms(p99(i)), "", ""
            split("nats,etcd", ps, ",")
            for (q = 1; q <= 2; q++) if ((ps[q] "|" k) in S) { s = S[ps[q] "|" k]
                printf "| %-8s | %-6s | %10.0f | %9s | %9s | %8s | %8s |\n", k, ps[q], ops(s), ms(p50(s)), ms(p99(s)),
                    ratio(ops(i), ops(s)), (p99(s) > 0 ? ratio(p99(i), p99(s)) : "     -") } } }' "$WORK/medians"
echo "   Logs: $OUT"
