#!/usr/bin/env bash
# chDB, the ClickHouse engine as a library: how the tests check our DDL and
# queries on a current ClickHouse (Debian's only server here is 18.16). It
# downloads chDB's npm package once (pinned version and checksum), keeps
# libchdb.so in a cache outside the repository, and prints its path.
#
#   scripts/chdb.sh path     ensure it is there, print the path of libchdb.so
#
# Environment: CHDB_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/decnet-stream).
set -euo pipefail

version=26.5.3
integrity=fPrLmRt5Moor9yGz4mazbrNje4t7X9KB2mTGkXFWRxRBs2iKy8yh6jx11xsa0Qr3iDFMU/yHqd+bVdYJXu3QaQ==
url="https://registry.npmjs.org/@chdb/lib-linux-x64-gnu/-/lib-linux-x64-gnu-${version}.tgz"
cache="${CHDB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/decnet-stream}/chdb-${version}"
lib="$cache/libchdb.so"

ensure() {
  [ -s "$lib" ] && return 0
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.download.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "chdb.sh: downloading chDB $version (~170 MB, once)" >&2
  curl -fsSL --retry 3 -o "$tmp/chdb.tgz" "$url"
  got=$(openssl dgst -sha512 -binary "$tmp/chdb.tgz" | base64 -w0)
  if [ "$got" != "$integrity" ]; then
    echo "chdb.sh: checksum mismatch for $url" >&2
    exit 1
  fi
  tar -xzf "$tmp/chdb.tgz" -C "$tmp" package/libchdb.so
  mv "$tmp/package/libchdb.so" "$lib"
}

case "${1:-}" in
  path) ensure; echo "$lib" ;;
  *) echo "usage: $0 path" >&2; exit 2 ;;
esac
