#!/usr/bin/env bash
# deps.sh — install what inboxd needs from Debian 12's packages, if missing.
# Idempotent: a machine that has everything runs no apt command at all.
set -euo pipefail

pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      liblmdb-dev lmdb-utils libuv1-dev libssl-dev libxxhash-dev
      libcmocka-dev libinih-dev openssl python3 curl iproute2
      faketime gnuplot-nox)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
