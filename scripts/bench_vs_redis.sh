#!/bin/bash
# bench_vs_redis.sh — inboxd's single node against Redis 7 Streams, both
# durable before the answer (inboxd: WAL fsync before ack; Redis: AOF
# appendfsync always), in one sitting on 127.0.0.1.
#
#   1. builds inboxd and bench_load (RelWithDebInfo) in build/bench;
#   2. inboxd pass 1: a fresh inboxd (temp data dir, default settings);
#      bench_load, RUNS runs of SECS seconds each: 50 connections x 16 in
#      flight, 50 x 1, 1 x 1. For each run: inboxd's CPU, the machine's,
#      the WAL's fsyncs and checkpoints (from /metrics), and for c50 P16
#      each inboxd thread's on-CPU and run-queue-wait time
#      (/proc/PID/task/TID/schedstat). PERF=1 adds one c50 P16 run (not in
#      the medians) under `perf record -g` and prints the top functions of
#      each inboxd thread. Then inboxd is stopped (SIGTERM);
#   3. the peers' redis_streams.sh (run from a copy: the folder is
#      read-only): Redis 7, AOF always (and everysec, for reference);
#   4. inboxd pass 2, as pass 1 (PASSES=1 skips it): A-B-A, so a change in
#      the machine's other load during the sitting weighs on both alike;
#   5. one table: medians of ops/s, p50 and p99 side by side, and the ratio
#      inboxd/Redis (throughput: above 1 is better; p99: below 1 is
#      better), with the CPU everything else on the machine used meanwhile.
#
# usage: scripts/bench_vs_redis.sh
# env:   SECS=10 (per bench_load run)  RUNS=3  PERF=0  PORT=17420
#        N1=100000 N16=300000 (Redis c50 P1 / P16 request counts: ~10 s
#        per run when the disk is shared; the peers' default is 1,000,000)
#        PEERS=/work/shared/peers  OUT=build/bench/vs-redis (logs, perf data)
#        REDIS=0 skips Redis, PASSES=1 the second inboxd pass (iterating)
# Load is bounded (SECS per run, Redis by request count). Everything this
# script starts is stopped by PID on exit (trap); the temp dir is removed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build/bench}
SECS=${SECS:-10}
RUNS=${RUNS:-3}
PERF=${PERF:-0}
PORT=${PORT:-17420}
MPORT=$((PORT + 1))
N1=${N1:-100000}
N16=${N16:-300000}
PEERS=${PEERS:-/work/shared/peers}
OUT=${OUT:-$BUILD/vs-redis}
WORK=$(mktemp -d /tmp/bench-vs-redis.XXXXXX)
IPID=""    # inboxd
RSPID=""   # the peers' redis script
PERFPID="" # perf record

stop_pid() { # pid: SIGTERM, wait up to 15 s, then SIGKILL
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || return 0
    for i in $(seq 1 150); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}
cleanup() {
    [ -n "$PERFPID" ] && stop_pid "$PERFPID"
    [ -n "$IPID" ] && stop_pid "$IPID"
    if [ -n "$RSPID" ]; then # its redis-server first (a child of ours)
        for c in $(ps -o pid= --ppid "$RSPID" 2>/dev/null); do stop_pid "$c"; done
        stop_pid "$RSPID"
    fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
rm -f "$OUT"/inboxd_* "$OUT"/redis.txt "$OUT"/perf* "$OUT"/*.log
cp -r "$PEERS" "$WORK/peers"
chmod -R u+w "$WORK/peers"
# shellcheck source=/dev/null
. "$WORK/peers/common.sh" # cpu_begin/cpu_end, median, wait_port
set -e

echo "== bench_vs_redis $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
echo "   uptime at start: $(uptime)"

echo "-- build ($BUILD, RelWithDebInfo)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/cmake.log"
cmake --build "$BUILD" -j2 --target bench_load inboxd >"$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log"; exit 1; }
INBOXD=$BUILD/server/inboxd
LOAD=$BUILD/bench/load/bench_load

# Per-thread schedstat of inboxd: "tid on_cpu_ns runqueue_wait_ns".
sched_snap() { local t; for t in "/proc/$IPID/task/"*; do echo "${t##*/} $(cut -d' ' -f1,2 "$t/schedstat")"; done; }
sched_diff() { # before-file after-file wall-seconds
    join <(sort "$1") <(sort "$2") | awk -v w="$3" '
        FILENAME == ARGV[1] { t = $1; $1 = ""; role[t] = substr($0, 2); next }
        { printf "      thread %s (%s): on a cpu %.0f%%, runnable but waiting for a cpu %.0f%% of the wall time\n",
            $1, ($1 in role ? role[$1] : "?"), ($4 - $2) / 1e7 / w, ($5 - $3) / 1e7 / w }' "$WORK/roles" -
}

# inboxd's own counters: "fsyncs fsync_seconds fsync_records checkpoints checkpoint_seconds".
metrics_snap() {
    curl -s "http://127.0.0.1:$MPORT/metrics" | awk '
        /^inbox_node_wal_fsync_seconds_count/ { a = $2 } /^inbox_node_wal_fsync_seconds_sum/ { b = $2 }
        /^inbox_node_wal_fsync_records_sum/ { c = $2 }
        /^inbox_node_checkpoint_seconds_count/ { d = $2 } /^inbox_node_checkpoint_seconds_sum/ { e = $2 }
        END { print a + 0, b + 0, c + 0, d + 0, e + 0 }'
}
metrics_diff() { # before after wall-seconds
    awk -v w="$3" -v x="$1" -v y="$2" 'BEGIN { split(x, p, " "); split(y, q, " ")
        f = q[1] - p[1]; fs = q[2] - p[2]; r = q[3] - p[3]; k = q[4] - p[4]; ks = q[5] - p[5]
        printf "      wal: %.0f fsyncs/s, mean %.2f ms, fdatasync running %.0f%% of the wall time, %.0f records per fsync; checkpoints: %d, mean %.0f ms, %.0f%% of the wall time\n",
            f / w, f ? 1000 * fs / f : 0, 100 * fs / w, f ? r / f : 0, k, k ? 1000 * ks / k : 0, 100 * ks / w }'
}

# run PASS LABEL ARGS...: RUNS runs of bench_load; each result line is kept
# in $WORK/rows_LABEL for the medians.
run() {
    local pass=$1 label=$2; shift 2
    local i f t0 t1 m0 m1 wall cpu r ccpu
    for i in $(seq 1 "$RUNS"); do
        f=$OUT/inboxd_pass${pass}_${label// /_}_run$i.txt
        sched_snap >"$WORK/s0"; m0=$(metrics_snap); t0=$(date +%s.%N)
        cpu_begin "$IPID"
        "$LOAD" --server "127.0.0.1:$PORT" --tls-dir "$DATA/tls" --seconds "$SECS" "$@" >"$f" 2>&1 ||
            { echo "bench_load failed (exit $?):"; cat "$f"; }
        cpu=$(cpu_end "$IPID")
        t1=$(date +%s.%N); sched_snap >"$WORK/s1"; m1=$(metrics_snap)
        r=$(grep '^enqueue:' "$f" || echo "enqueue: failed")
        ccpu=$(grep -o 'client_cpu=[0-9]*%' "$f" || echo "client_cpu=?")
        printf "   %-8s pass%d run%d %s %s; %s\n" "$label" "$pass" "$i" "${r#enqueue: }" "$ccpu" "$cpu"
        grep -E '^(errors|client):' "$f" | grep -v 'errors: none' | sed 's/^/      /' || true
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
        metrics_diff "$m0" "$m1" "$wall"
        [ "$label" = "c50 P16" ] && sched_diff "$WORK/s0" "$WORK/s1" "$wall"
        echo "pass$pass $r $ccpu $cpu" >>"$WORK/rows_${label// /_}"
    done
}

# perf_summary perf.data roles: per thread (by tid, from `perf script`:
# `perf report --tid` mixed threads up here), its share of all samples,
# then its samples by library and its top leaf functions.
perf_summary() {
    perf script -i "$1" -F tid,ip,sym,dso 2>/dev/null | awk '
        /^ *[0-9]+ *$/ { tid = $1; leaf = 1; total++; n[tid]++; next }
        leaf && NF >= 2 { leaf = 0; dso = $NF; gsub(/[()]/, "", dso); sub(/.*\//, "", dso)
            $1 = ""; sub(/^ /, ""); sym[tid "\t" $0]++; lib[tid "\t" dso]++ }
        END { for (t in n) printf "%s\t0\t%.1f\t-\n", t, 100 * n[t] / total
              for (k in lib) { split(k, a, "\t"); printf "%s\t1\t%.1f\t%s\n", a[1], 100 * lib[k] / total, a[2] }
              for (k in sym) { split(k, a, "\t"); printf "%s\t2\t%.1f\t%s\n", a[1], 100 * sym[k] / total, a[2] } }' |
        sort -t"$(printf '\t')" -k1,1n -k2,2n -k3,3gr | awk -F'\t' -v roles="$2" '
        BEGIN { while ((getline l < roles) > 0) { t = l; sub(/ .*/, "", t); sub(/^[0-9]+ /, "", l); role[t] = l } }
        $2 == 0 { printf "      thread %s (%s): %s%% of the samples\n", $1, role[$1], $3; c1 = c2 = 0; libs = ""; next }
        $2 == 1 { if (c1++ < 6) libs = libs sprintf("%s%s %s%%", (c1 > 1 ? ", " : ""), $4, $3); next }
        $2 == 2 { if (c2 == 0) printf "         by library: %s\n", libs; if (c2++ < 8) printf "         %5s%%  %s\n", $3, $4 }'
}

# inboxd_pass N: a fresh inboxd, the three loads, stop it. Pass 1 also
# records the extra perf run when PERF=1.
inboxd_pass() {
    local pass=$1
    echo "-- inboxd pass $pass: fresh data dir, default settings, 127.0.0.1:$PORT"
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        echo "port $PORT is taken: set PORT" >&2; exit 1
    fi
    DATA=$WORK/inboxd$pass
    "$INBOXD" --node-data-dir "$DATA" --node-listen "127.0.0.1:$PORT" \
        --node-metrics "127.0.0.1:$MPORT" --node-log-level warn >"$OUT/inboxd_pass$pass.log" 2>&1 &
    IPID=$!
    wait_port "$PORT" || { cat "$OUT/inboxd_pass$pass.log"; exit 1; }
    # Roles by creation order: server/node.c starts the node thread, then
    # the WAL sync thread; the main thread runs the libuv loop.
    find "/proc/$IPID/task" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | awk -v main="$IPID" '
        $1 == main { print $1, "main: libuv loop, TLS, frames"; next }
        { n++; print $1, (n == 1 ? "node: raft, WAL append, LMDB apply" : n == 2 ? "WAL sync: fdatasync" : "other") }' >"$WORK/roles"
    "$LOAD" --server "127.0.0.1:$PORT" --tls-dir "$DATA/tls" --seconds 1 --connections 1 \
        --inflight 1 >"$OUT/inboxd_pass${pass}_warmup.txt" 2>&1 || true
    run "$pass" "c50 P16" --connections 50 --inflight 16
    run "$pass" "c50 P1" --connections 50 --inflight 1
    run "$pass" "c1 P1" --connections 1 --inflight 1
    if [ "$PERF" = 1 ] && [ "$pass" = 1 ]; then # one more c50 P16 run under perf, not in the medians
        perf record -q -g -p "$IPID" -o "$OUT/perf.data" -- sleep $((SECS > 3 ? SECS - 2 : 1)) \
            >"$OUT/perf_record.log" 2>&1 &
        PERFPID=$!
        "$LOAD" --server "127.0.0.1:$PORT" --tls-dir "$DATA/tls" --seconds "$SECS" \
            --connections 50 --inflight 16 >"$OUT/inboxd_c50_P16_perf.txt" 2>&1 || true
        wait "$PERFPID" || true; PERFPID=""
        echo "   c50 P16 under perf (not in the medians): $(grep '^enqueue:' "$OUT/inboxd_c50_P16_perf.txt")"
        echo "   perf record -g of inboxd during that run: each thread's share of the samples, where its"
        echo "   samples landed by library, and its top functions (self time)"
        perf_summary "$OUT/perf.data" "$WORK/roles" | tee "$OUT/perf_threads.txt"
    fi
    stop_pid "$IPID"; wait "$IPID" 2>/dev/null || true; IPID=""
}

# Before and after Redis (A-B-A), so that a change in the machine's other
# load during the sitting shows, and weighs on both sides alike.
inboxd_pass 1

if [ "${REDIS:-1}" = 1 ]; then
    echo "-- Redis Streams: the peers' redis_streams.sh $N1 $N16"
    "$WORK/peers/redis_streams.sh" "$N1" "$N16" >"$OUT/redis.txt" 2>&1 &
    RSPID=$!
    wait "$RSPID" || { echo "redis_streams.sh failed:"; cat "$OUT/redis.txt"; exit 1; }
    RSPID=""
    sed 's/^/   /' "$OUT/redis.txt"
    awk '/appendfsync always/ {on=1} /appendfsync everysec/ {on=0}
         on && /MEDIAN XADD/ { l=$3 " " $4; m=""
            for (i=5; i<=NF; i++) if ($i ~ /^(ops\/s|p50_ms|p99_ms)=/) m=m " " $i
            print "redis|" l "|" m }' "$OUT/redis.txt" >>"$WORK/medians"
fi

[ "${PASSES:-2}" -ge 2 ] && inboxd_pass 2
medians_of() { # rows -> " ops/s=.. p50_ms=.. p99_ms=.. p999_ms=.."
    local k med=""
    for k in ops/s p50_ms p99_ms p999_ms; do
        med+=" $k=$(echo "$1" | grep -o "$k=[0-9.]*" | cut -d= -f2 | median)"
    done
    echo "$med"
}
echo "-- inboxd medians"
for label in "c50 P16" "c50 P1" "c1 P1"; do
    f=$WORK/rows_${label// /_}
    for pass in $(cut -d' ' -f1 "$f" | sort -u); do
        printf "   MEDIAN %-8s %s:%s\n" "$label" "$pass" "$(medians_of "$(grep "^$pass " "$f")")"
    done
    med=$(medians_of "$(cat "$f")")
    printf "   MEDIAN %-8s all:  %s\n" "$label" "$med"
    echo "inboxd|$label|$med" >>"$WORK/medians"
done

# CPU the rest of the machine used meanwhile, in % of one core: machine busy
# minus the server minus the load generator (c50 P16 runs).
others() { # file-with-run-lines
    sed -n 's/.*client_cpu=\([0-9]*\)%.*machine busy [0-9]*% of [0-9]* cores (\([0-9]*\)% of 1 core); servers \([0-9]*\)%.*/\2 \3 \1/p' "$1" |
        awk '{ printf "%s%.0f%%", (NR > 1 ? " " : ""), $1 - $2 - $3 }'
}
awk '/appendfsync always/ { on = 1 } /appendfsync everysec/ { on = 0 }
     on && /XADD c50 P16/ && / run[0-9]/' "$OUT/redis.txt" >"$WORK/redis_c50p16" 2>/dev/null || true

echo
echo "== inboxd (1 node, WAL fsync before ack, mutual TLS) vs Redis 7 Streams (AOF always, plaintext); 100-byte enqueues/XADDs to 100,000 random inboxes; medians of $RUNS runs x ${PASSES:-2} passes (inboxd), $RUNS runs (Redis)"
echo "   $(grep -h '^machine:' "$OUT"/inboxd_pass1_c1_P1_run1.txt)"
echo "   cpu used by everything else on the machine during the c50 P16 runs, % of one core: inboxd runs: $(others "$WORK/rows_c50_P16"); Redis runs: $(others "$WORK/redis_c50p16")"
echo "   date: $(date -u '+%Y-%m-%d %H:%M UTC'); uptime at end: $(uptime)"
awk -F'|' '
    function get(s, k,   a, n, i) { n = split(s, a, " "); for (i = 1; i <= n; i++) if (index(a[i], k "=") == 1) return substr(a[i], length(k) + 2); return "" }
    { key = $2; if ($1 == "inboxd") I[key] = $3; else R[key] = $3 }
    END {
        printf "| %-8s | %12s | %12s | %8s | %9s | %9s | %9s | %9s | %8s |\n", "load", "inboxd ops/s", "Redis ops/s", "ratio", "inboxd p50", "Redis p50", "inboxd p99", "Redis p99", "ratio"
        printf "|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", "----------", "-------------:", "-------------:", "---------:", "----------:", "----------:", "----------:", "----------:", "---------:"
        n = split("c50 P16,c50 P1,c1 P1", order, ",")
        for (j = 1; j <= n; j++) { k = order[j]
            io = get(I[k], "ops/s"); ro = get(R[k], "ops/s"); i99 = get(I[k], "p99_ms"); r99 = get(R[k], "p99_ms")
            printf "| %-8s | %12.0f | %12.0f | %8.2f | %6.2f ms | %6.2f ms | %6.2f ms | %6.2f ms | %8.2f |\n", k, io, ro, (ro > 0 ? io / ro : 0),
                get(I[k], "p50_ms"), get(R[k], "p50_ms"), i99, r99, (r99 > 0 ? i99 / r99 : 0) } }' "$WORK/medians"
echo "   ratio = inboxd / Redis: throughput above 1 and p99 below 1 favour inboxd. Logs: $OUT"
