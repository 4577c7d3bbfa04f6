#!/usr/bin/env bash
# cli_data.sh — inboxctl's data and status commands against a real inboxd on
# loopback: enqueue (seqs, dedup by msg id), fetch (table, --after, --json,
# long-poll --wait), ack, seen set/get, watch, status, route, snapshot and
# the roles, and the exit codes scripts rely on (0 ok, 1 failed, 2 usage,
# 3 unreachable/TLS); then `store verify` on the node's data directory
# (refused while it runs, then per-shard output, --json, errors).
# usage: cli_data.sh path/to/inboxctl path/to/inboxd
set -u
# The --json checks parse with python3; without it the test is reported as
# skipped (exit 77, CTest's SKIP_RETURN_CODE), never as passed.
if ! command -v python3 >/dev/null 2>&1; then
  echo "cli_data: skipped: python3 is needed to check the --json output"
  exit 77
fi
ctl=$(realpath "$1")
srv=$(realpath "$2")
dir=$(mktemp -d /tmp/inboxctl-data.XXXXXX)
pid=""
bg_pids=""

stop_server() {
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  pid=""
}
cleanup() {
  for p in $bg_pids; do kill -KILL "$p" 2>/dev/null; done
  stop_server
  if [ -n "${KEEP:-}" ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fails=0
passes=0
pass() { passes=$((passes + 1)); }
fail() {
  echo "FAIL: $1"
  fails=$((fails + 1))
  if [ -s "$dir/out" ]; then echo "  stdout:"; sed 's/^/    /' "$dir/out" | head -20; fi
  if [ -s "$dir/err" ]; then echo "  stderr:"; sed 's/^/    /' "$dir/err" | head -20; fi
}
check() { # description, expected exit, command... (stdout -> out, stderr -> err)
  local what=$1 want=$2
  shift 2
  "$@" >"$dir/out" 2>"$dir/err" </dev/null
  local got=$?
  if [ "$got" -eq "$want" ]; then pass; else fail "$what: exit $got, wanted $want"; fi
  if grep -q "Sanitizer\|runtime error:" "$dir/err"; then fail "$what: sanitizer report"; fi
}
has() { # description, pattern (in the last stdout + stderr)
  if cat "$dir/out" "$dir/err" | grep -q -- "$2"; then pass
  else fail "$1: output lacks '$2'"; fi
}
# A Python expression over the last stdout parsed as JSON (d) must be true.
json_true() { # description, expression
  if python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$dir/out" "$2" 2>"$dir/pyerr"; then pass
  else fail "$1: not true of the JSON output: $2 ($(tail -1 "$dir/pyerr"))"; fi
}
json_parses() { # description (stdout must be one JSON document)
  if python3 -c 'import json,sys; json.load(sys.stdin)' <"$dir/out" 2>/dev/null; then pass
  else fail "$1: stdout is not valid JSON"; fi
}
# Waits up to $2 seconds for background process $1 to end; its exit code in
# $bg_rc (124 when it did not end in time; it is then killed).
wait_bg() {
  local p=$1 secs=$2
  for _ in $(seq 1 $((secs * 10))); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$p" 2>/dev/null; then
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    bg_rc=124
  else
    wait "$p"
    bg_rc=$?
  fi
}

cd "$dir" || exit 1
data="$dir/inboxd-data"
# A sanitizer report must not pass for an expected "exit 1".
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=86"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}exitcode=86"

# ---- start inboxd on free ports (retry on a port conflict) -----------------
port=0
for attempt in 1 2 3 4 5; do
  port=$((20000 + (($$ * 131 + RANDOM + attempt * 977) % 40000)))
  mport=$((port + 1))
  "$srv" --node-data-dir "$data" --node-listen "127.0.0.1:$port" \
    --node-metrics "127.0.0.1:$mport" --node-log-level warn \
    >"$dir/inboxd.log" 2>&1 &
  pid=$!
  up=0
  for _ in $(seq 1 150); do # 30 s at most
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    if "$ctl" --addr "127.0.0.1:$port" --timeout 2000 status >/dev/null 2>&1; then
      up=1
      break
    fi
    sleep 0.2
  done
  [ "$up" -eq 1 ] && break
  if kill -0 "$pid" 2>/dev/null; then
    echo "inboxd did not answer status in time"; sed 's/^/    /' "$dir/inboxd.log" | tail -20
    echo "cli_data: $passes passed, 1 failed"
    exit 1
  fi
  # It exited: most likely one of its two ports was taken. Try others.
  wait "$pid" 2>/dev/null
  pid=""
  cp "$dir/inboxd.log" "$dir/inboxd.failed.log"
  rm -rf "$data"
done
if [ -z "$pid" ]; then
  echo "inboxd did not start in 5 attempts on random ports; its last log:"
  sed 's/^/    /' "$dir/inboxd.failed.log" | tail -20
  echo "cli_data: $passes passed, 1 failed"
  exit 1
fi
addr="127.0.0.1:$port"
# Global options before the command; the TLS files are the defaults
# (./inboxd-data/tls/{ca.crt,admin.crt,admin.key}, which inboxd made).
ic() { "$ctl" --addr "$addr" --timeout 5000 "$@"; }

# ---- status, route ------------------------------------------------------------
check "status" 0 ic status
has "status names the node" "node 1"
has "status summarises 64 shards" "leader known for 64 of 64 shards"
check "status --json" 0 ic status --json
json_parses "status --json"
json_true "status lists 64 leaders" 'd["node_id"] == 1 and len(d["shards"]) == 64 and all(s["role"] == "leader" for s in d["shards"])'
check "status --shards" 0 ic status --shards
has "status --shards lists shard 63" "^63 "
check "cluster status" 0 ic cluster status
has "cluster status: one node, every shard led" "1 node(s), 64 shard(s), 0 without a reachable leader, 0 node(s) unreachable"
has "cluster status: node 1 up, leads 64, no lag" "^1 .* up .* 64 .* 0$"
check "cluster status --json" 0 ic cluster status --json
json_parses "cluster status --json"
json_true "cluster status --json: node 1 reachable, 64 shards" 'd["shard_count"] == 64 and d["nodes"][0]["reachable"] and d["nodes"][0]["leads"] == 64 and len(d["shards"]) == 64'
check "cluster status --shards" 0 ic cluster status --shards
has "cluster status --shards lists shard 63" "^63 "
check "cluster status: unknown option" 2 ic cluster status --bogus
check "route" 0 ic route alice
has "route: alice's shard (protocol.md test vector)" "alice shard=48 leader=1"
check "route --json" 0 ic route alice bob --json
json_true "route --json" 'd["shard_count"] == 64 and d["inboxes"][1]["shard"] == 37'

# ---- enqueue: seqs 1, 2, 3, then dedup -----------------------------------------
id1=00112233445566778899aabbccddeeff
check "enqueue 1" 0 ic enqueue alice "hello one" --msg-id "$id1"
has "enqueue 1 is seq 1" "seq=1 dedup=false msg_id=$id1"
check "enqueue 2" 0 ic enqueue alice "héllo two"
has "enqueue 2 is seq 2" "seq=2 dedup=false"
has "enqueue 2 prints its msg id" "msg_id=[0-9a-f]\{32\}"
check "enqueue 3 (--json)" 0 ic enqueue alice "hello three" --json
json_true "enqueue 3 is seq 3" 'd["seq"] == 3 and d["dedup"] is False and len(d["msg_id"]) == 32'
check "enqueue same msg id again" 0 ic enqueue alice "something else" --msg-id "$id1"
has "same msg id: first seq, dedup" "seq=1 dedup=true msg_id=$id1"

# ---- fetch ------------------------------------------------------------------------
check "fetch" 0 ic fetch alice
has "fetch table header" "^SEQ  *MSG_ID  *ENQUEUED  *PAYLOAD"
has "fetch row 1" "^1  *$id1  *20[0-9-]*T[0-9:.]*Z  *hello one\$"
has "fetch row 2" "^2  .*héllo two\$"
has "fetch row 3" "^3  .*hello three\$"
has "fetch summary" "messages=3 acked_seq=0 last_seq=3"
check "fetch --json" 0 ic fetch alice --json
json_parses "fetch --json"
json_true "fetch: 3 messages, right payloads" '[m["seq"] for m in d["messages"]] == [1, 2, 3] and [m["payload"] for m in d["messages"]] == ["hello one", "héllo two", "hello three"] and d["messages"][0]["msg_id"] == "'$id1'" and d["last_seq"] == 3 and d["acked_seq"] == 0'
check "fetch --after 2" 0 ic fetch alice --after 2 --json
json_true "fetch --after 2: seq 3 only" '[m["seq"] for m in d["messages"]] == [3] and d["messages"][0]["payload"] == "hello three"'
check "fetch --max 1" 0 ic fetch alice --max 1 --json
json_true "fetch --max 1: one message, more waiting" 'len(d["messages"]) == 1 and d["last_seq"] == 3'

# ---- ack ----------------------------------------------------------------------------
check "ack 2" 0 ic ack alice 2
has "ack answers acked_seq" "acked_seq=2"
check "fetch after ack" 0 ic fetch alice --json
json_true "after ack 2: seq 3 only, acked_seq 2" '[m["seq"] for m in d["messages"]] == [3] and d["acked_seq"] == 2'
check "fetch after ack (table)" 0 ic fetch alice
has "after ack: summary" "messages=1 acked_seq=2 last_seq=3"
check "ack beyond last fails" 1 ic ack alice 99
has "ack beyond last: error name" "ACK_BEYOND_LAST"
check "ack beyond last --json" 1 ic ack alice 99 --json
json_true "ack error as JSON" 'd["error"] == "ACK_BEYOND_LAST" and d["exit"] == 1'

# ---- seen -----------------------------------------------------------------------------
check "seen set" 0 ic seen set bob 5000
has "seen set stores" "ts_ms=5000 "
check "seen set backwards" 0 ic seen set bob 4000
has "seen only moves forward" "ts_ms=5000 "
check "seen get" 0 ic seen get bob carol --json
json_true "seen get round trip" 'd["inboxes"][0] == {"inbox": "bob", "ts_ms": 5000} and d["inboxes"][1]["ts_ms"] == 0'
check "seen set now" 0 ic seen set bob --json
json_true "seen set default is now" 'd["ts_ms"] > 1600000000000'
check "seen get (table)" 0 ic seen get bob
has "seen get table" "^bob  *[0-9]\{13\}  *20"

# ---- payloads: stdin, files, binary, the limit -------------------------------------------
printf 'from stdin' >"$dir/in.txt"
check "enqueue from stdin" 0 sh -c "printf 'from stdin' | \"$ctl\" --addr $addr enqueue stdinbox -"
check "enqueue --file" 0 ic enqueue stdinbox --file "$dir/in.txt"
printf '\000\001\377' >"$dir/bin"
check "enqueue binary" 0 ic enqueue stdinbox --file "$dir/bin"
check "fetch stdin/file/binary" 0 ic fetch stdinbox --json
json_true "payloads from stdin, file; binary as base64" '[(m["payload"], m["payload_encoding"]) for m in d["messages"]] == [("from stdin", "utf8"), ("from stdin", "utf8"), ("AAH/", "base64")]'
check "fetch binary (table)" 0 ic fetch stdinbox --after 2
has "binary payload shown as hex" "hex:0001ff"
head -c 65537 /dev/zero >"$dir/big"
check "payload over 64 KiB fails" 1 ic enqueue big --file "$dir/big"
has "payload error name" "PAYLOAD_TOO_LARGE"
has "payload error names the limit" "65536"
check "payload over 64 KiB from stdin fails" 1 sh -c "head -c 70000 /dev/zero | \"$ctl\" --addr $addr enqueue big -"
has "stdin payload error" "PAYLOAD_TOO_LARGE"
head -c 65536 /dev/zero >"$dir/max"
check "payload of exactly 64 KiB" 0 ic enqueue big --file "$dir/max"

# ---- enqueue-many -----------------------------------------------------------------------
check "enqueue-many" 0 ic enqueue-many --inbox m1 --inbox m2 --inbox alice "to all"
has "enqueue-many m1" "^m1 seq=1 dedup=false"
has "enqueue-many alice" "^alice seq=4 dedup=false"
check "enqueue-many --json" 0 ic enqueue-many --inbox m1 --inbox m2 "again" --json
json_true "enqueue-many --json" '[r["seq"] for r in d["results"]] == [2, 2] and d["failed"] == 0'

# ---- long-poll fetch: returns when another process enqueues ----------------------------------
ic fetch pollbox --wait 30000 --json >"$dir/poll.out" 2>"$dir/poll.err" &
poll_pid=$!
bg_pids="$bg_pids $poll_pid"
sleep 1
check "enqueue while a fetch waits" 0 ic enqueue pollbox "wake up"
wait_bg "$poll_pid" 20
if [ "$bg_rc" -eq 0 ]; then pass; else fail "long-poll fetch: exit $bg_rc, wanted 0 before its 30 s wait ran out"; cat "$dir/poll.err"; fi
cp "$dir/poll.out" "$dir/out"
json_true "long-poll fetch got the message" '[m["payload"] for m in d["messages"]] == ["wake up"]'

# ---- watch: a NOTIFY per enqueue -------------------------------------------------------------
ic watch watchbox --count 1 --seconds 25 >"$dir/watch.out" 2>"$dir/watch.err" &
watch_pid=$!
bg_pids="$bg_pids $watch_pid"
for _ in $(seq 1 100); do
  grep -q "watching watchbox" "$dir/watch.out" 2>/dev/null && break
  sleep 0.1
done
if grep -q "watching watchbox last_seq=0" "$dir/watch.out"; then pass; else fail "watch did not start"; fi
check "enqueue to a watched inbox" 0 ic enqueue watchbox "ping"
wait_bg "$watch_pid" 20
if [ "$bg_rc" -eq 0 ]; then pass; else fail "watch: exit $bg_rc, wanted 0"; cat "$dir/watch.err"; fi
if grep -q "^NOTIFY watchbox last_seq=1\$" "$dir/watch.out"; then pass
else fail "watch printed no NOTIFY"; sed 's/^/    /' "$dir/watch.out"; fi
# --json: one object per line; a bounded watch with no push ends with TIMEOUT.
check "watch --json with no push" 1 ic watch quietbox --count 1 --seconds 1 --json
if python3 -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if lines[0] == {"event": "watching", "inbox": "quietbox", "last_seq": 0} and lines[-1]["error"] == "TIMEOUT" else 1)' "$dir/out"; then pass
else fail "watch --json lines"; fi

# ---- roles: frontend may write, not snapshot ---------------------------------------------------
check "frontend certificate" 0 "$ctl" cert client --dir "$data/tls" --name fe --role frontend
fe() { ic --cert "$data/tls/fe.crt" --key "$data/tls/fe.key" "$@"; }
check "frontend enqueues" 0 fe enqueue febox "from the front"
has "frontend enqueue seq" "seq=1 dedup=false"
check "frontend snapshot denied" 1 fe snapshot
has "snapshot denied: name" "DENIED"
has "snapshot denied: advice" "admin certificate"
check "admin snapshot" 0 ic snapshot --json
json_true "snapshot --json" '"epoch" in d'

# ---- TLS and reachability ---------------------------------------------------------------------
check "another CA" 0 "$ctl" cert ca --dir "$dir/other"
check "a client of the other CA" 0 "$ctl" cert client --dir "$dir/other" --name x --role admin
check "wrong CA: unreachable (TLS)" 3 ic --ca "$dir/other/ca.crt" --cert "$dir/other/x.crt" --key "$dir/other/x.key" status
has "wrong CA explained" "not signed by --ca $dir/other/ca.crt"
check "missing TLS files" 3 ic --ca "$dir/nope.crt" status
has "missing TLS files explained" "cannot read --ca"
# A port nothing listens on: the one after /metrics, checked closed first.
dead=$((mport + 1))
while (exec 3<>"/dev/tcp/127.0.0.1/$dead") 2>/dev/null; do dead=$((dead + 1)); done
check "no server: exit 3" 3 "$ctl" --addr "127.0.0.1:$dead" --timeout 5000 status
has "no server: says so" "cannot connect to 127.0.0.1:$dead"
has "no server: advice" "is inboxd running"
check "no server --json" 3 "$ctl" --addr "127.0.0.1:$dead" enqueue x y --json
json_true "no server as JSON" 'd["error"] == "UNREACHABLE" and d["exit"] == 3'
has "failed enqueue names its msg id" "--msg-id [0-9a-f]\{32\}"

# ---- usage errors: exit 2 -------------------------------------------------------------------
check "wrong flag" 2 ic fetch alice --bogus
has "wrong flag named" "bogus"
check "fetch without inbox" 2 ic fetch
check "ack without seq" 2 ic ack alice
check "ack with a bad seq" 2 ic ack alice two
check "bad msg id" 2 ic enqueue alice x --msg-id 1234
check "bad ttl" 2 ic enqueue alice x --ttl soon
check "no payload" 2 ic enqueue alice
check "inbox too long" 2 ic enqueue "$(head -c 129 /dev/zero | tr '\0' a)" x
check "bad --addr" 2 "$ctl" --addr nowhere status
check "bad --timeout" 2 ic status --timeout 0
check "seen alone" 2 ic seen
check "enqueue --help" 0 ic enqueue --help
has "enqueue --help" "msg-id"
check "fetch --help documents the payload encoding" 0 "$ctl" fetch --help
has "fetch --help: base64" "payload_encoding"
check "cert still works" 0 "$ctl" cert ca --dir "$dir/third"

# ---- store verify (offline): refused while the node runs ---------------------
check "store verify on a running node" 1 "$ctl" store verify "$data"
has "store verify: locked" "LOCKED"
has "store verify: says why" "is inboxd running"

# inboxd stops cleanly, and nothing went wrong inside it meanwhile.
kill -TERM "$pid"
wait_bg "$pid" 10
pid=""
if [ "$bg_rc" -eq 0 ]; then pass; else fail "inboxd exit $bg_rc after SIGTERM, wanted 0"; fi
if grep -q "Sanitizer\|runtime error:" "$dir/inboxd.log"; then fail "inboxd sanitizer report"; else pass; fi

# ---- store verify on the stopped node ---------------------------------------
check "store verify" 0 "$ctl" store verify "$data"
has "store verify: header" "SHARD  *APPLIED_INDEX  *APPLIED_TERM  *APPLIED_COMMANDS  *STATE_HASH  *CHECK"
has "store verify: a shard ok" " ok$"
has "store verify: summary" "violations=0"
check "store verify --json" 0 "$ctl" store verify "$data" --json
json_parses "store verify --json"
json_true "store verify --json: fields" 'd["ok"] and d["violations"] == 0 and d["exit"] == 0 and len(d["shards"]) > 0 and all(set(s) >= {"shard", "applied_index", "applied_term", "applied_commands", "state_hash", "ok"} and len(s["state_hash"]) == 16 for s in d["shards"])'
json_true "store verify --json: each index applied once" 'all(s["applied_commands"] == s["applied_index"] > 0 and s["ok"] for s in d["shards"])'
check "store verify, --json first" 0 "$ctl" --json store verify "$data"
json_parses "store verify, --json first"
# A shard applied more than once: its meta rewritten (index 2, 5 commands)
# with LMDB's own mdb_load, when installed.
if command -v mdb_load >/dev/null 2>&1; then
  cp -r "$data" "$dir/bad"
  printf 'VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n 00000000\n %s\nDATA=END\n' \
    0200000000000000010000000000000000000000000000000500000000000000 |
    mdb_load -s shard "$dir/bad/store"
  check "store verify: a violation is exit 4" 4 "$ctl" store verify "$dir/bad"
  has "store verify: the violation named" "shard 0: applied_commands 5 > applied_index 2"
  has "store verify: the row says so" "VIOLATED"
  check "store verify: a violation --json" 4 "$ctl" store verify "$dir/bad" --json
  json_true "store verify: the violation as JSON" 'not d["ok"] and d["violations"] == 1 and d["exit"] == 4 and [s["shard"] for s in d["shards"] if not s["ok"]] == [0]'
fi
check "store verify: missing DATA_DIR" 1 "$ctl" store verify "$dir/nope"
has "store verify: missing DATA_DIR named" "$dir/nope: No such file or directory"
check "store verify: missing DATA_DIR --json" 1 "$ctl" store verify "$dir/nope" --json
json_true "store verify: missing DATA_DIR as JSON" 'd["error"] == "NOTFOUND" and d["exit"] == 1'
check "store verify: not a data dir" 1 "$ctl" store verify "$dir/other"
has "store verify: no store there" "holds no inboxd store"
check "store verify: not a data dir --json" 1 "$ctl" store verify "$dir/other" --json
json_true "store verify: no store as JSON" 'd["error"] == "NOTFOUND" and d["exit"] == 1 and d["shards"] == []'
check "store verify: no DATA_DIR" 2 "$ctl" store verify
has "store verify: no DATA_DIR named" "missing DATA_DIR"
check "store verify: wrong flag" 2 "$ctl" store verify "$data" --bogus
has "store verify: wrong flag named" "bogus"
check "store verify --help" 0 "$ctl" store verify --help
has "store verify --help: invariant" "applied_commands <= applied_index"
check "store alone" 2 "$ctl" store

if [ "$fails" -gt 0 ]; then
  echo "inboxd log (tail):"
  tail -20 "$dir/inboxd.log" | sed 's/^/    /'
fi
echo "cli_data: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
