#!/usr/bin/env bash
# cli_cert.sh — `inboxctl cert` end to end: files, roles, refusals and the
# exit codes scripts rely on (0 ok, 1 failed, 2 usage).
# usage: cli_cert.sh path/to/inboxctl
set -u
ctl=$1
dir=$(mktemp -d /tmp/inboxctl-cert.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fails=0
passes=0
check() { # description, expected exit, command...
  local what=$1 want=$2; shift 2
  "$@" >"$dir/out" 2>&1
  local got=$?
  if [ "$got" -eq "$want" ]; then
    passes=$((passes + 1))
  else
    echo "FAIL: $what: exit $got, wanted $want"; sed 's/^/    /' "$dir/out"
    fails=$((fails + 1))
  fi
}
has() { # description, pattern (in the last output)
  if grep -q -- "$2" "$dir/out"; then passes=$((passes + 1))
  else echo "FAIL: $1: output lacks '$2'"; sed 's/^/    /' "$dir/out"; fails=$((fails + 1)); fi
}

t="$dir/tls"
check "node before CA fails" 1 "$ctl" cert node --dir "$t" --name n1 --host 127.0.0.1
has "node before CA advises" "inboxctl cert ca"
check "create CA" 0 "$ctl" cert ca --dir "$t"
check "CA again refused" 1 "$ctl" cert ca --dir "$t"
has "CA again explains" "--force"
check "node cert" 0 "$ctl" cert node --dir "$t" --name n1 --host 127.0.0.1 --host localhost
check "frontend cert" 0 "$ctl" cert client --dir "$t" --name fe1 --role frontend
check "admin cert" 0 "$ctl" cert client --dir "$t" --name ops --role admin
check "node role for client refused" 2 "$ctl" cert client --dir "$t" --name x --role node
check "unknown role" 2 "$ctl" cert client --dir "$t" --name x --role root
check "missing --name" 2 "$ctl" cert client --dir "$t" --role admin
check "bad name" 2 "$ctl" cert client --dir "$t" --name "-x" --role admin
check "node without host" 2 "$ctl" cert node --dir "$t" --name n2
check "unknown flag" 2 "$ctl" cert ca --dir "$t" --colour
has "unknown flag names it" "colour"
check "unknown command" 2 "$ctl" frobnicate
check "help" 0 "$ctl" --help
has "help lists cert" "cert client"
check "sub-help" 0 "$ctl" cert node --help
check "bad days" 2 "$ctl" cert ca --dir "$t" --days soon
check "reissue with --force" 0 "$ctl" cert client --dir "$t" --name fe1 --role frontend --force

# The files verify against the CA and carry the role where docs/security.md says.
check "node verifies" 0 openssl verify -CAfile "$t/ca.crt" "$t/n1.crt"
check "node SAN" 0 openssl x509 -in "$t/n1.crt" -noout -ext subjectAltName
has "node role URI" "URI:inboxd:role=node"
has "node IP SAN" "IP Address:127.0.0.1"
check "frontend SAN" 0 openssl x509 -in "$t/fe1.crt" -noout -ext subjectAltName
has "frontend role URI" "URI:inboxd:role=frontend"
check "admin SAN" 0 openssl x509 -in "$t/ops.crt" -noout -ext subjectAltName
has "admin role URI" "URI:inboxd:role=admin"
perm=$(stat -c %a "$t/n1.key")
if [ "$perm" = "600" ]; then passes=$((passes + 1)); else echo "FAIL: key mode $perm"; fails=$((fails + 1)); fi

echo "cli_cert: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
