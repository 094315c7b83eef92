#!/usr/bin/env bash
# BFF proxy benchmark: a release `latchkey serve` (SQLite in a temporary directory) with one
# `[[bff.routes]]` to the demo echo upstream (examples/bff-demo, `GET /ping` = a fixed small
# JSON), driven by `latchkey-loadtest bff`: the bare axum baseline, then `GET /ping` on the
# upstream directly, then `GET /api/ping` through the BFF with a session cookie, in one run.
# The last line compares the BFF with direct. See docs/benchmarks.md ("BFF proxy").
#
#   scripts/bench-bff.sh                         # 32 clients, 10 s per mode
#   BENCH_CONCURRENCY=1 BENCH_DURATION=5 scripts/bench-bff.sh
#   scripts/bench-bff.sh --json                  # extra arguments go to latchkey-loadtest
#
# BENCH_DATABASE replaces the SQLite file (e.g. "memory:" to take the store out of the
# picture). BENCH_SESSION_CACHE sets bff.session_cache (default "0s": a store lookup per
# request; e.g. "1s" to reuse a checked session for up to a second). BENCH_PORT picks the first port to try for Latchkey (default 18080); the upstream
# takes the next free one after it.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

concurrency="${BENCH_CONCURRENCY:-32}"
duration="${BENCH_DURATION:-10}"

cargo build --release -p latchkey -p latchkey-loadtest -p latchkey-example-echo-upstream >&2

tmp="$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench-bff.XXXXXX")"
server_pid=""
upstream_pid=""
cleanup() {
  status=$?
  for pid in "$server_pid" "$upstream_pid"; do
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ "$status" -ne 0 ]; then
    for log in server upstream; do
      if [ -f "$tmp/$log.log" ]; then
        echo "bench: failed; last lines of the $log log:" >&2
        tail -n 20 "$tmp/$log.log" >&2
      fi
    done
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The first port from $1 that nobody listens on.
free_port() {
  local port="$1"
  for _ in $(seq 20); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
    port=$((port + 1))
  done
  echo "bench: no free port from $1" >&2
  exit 1
}
port="$(free_port "${BENCH_PORT:-18080}")"
upstream_port="$(free_port $((port + 1)))"
url="http://127.0.0.1:$port"
upstream="http://127.0.0.1:$upstream_port"

cat >"$tmp/latchkey.toml" <<CONF
listen = "127.0.0.1:$port"
issuer = "$url"
database = "${BENCH_DATABASE:-sqlite://$tmp/latchkey.db}"

# The benchmark logs in from one IP as fast as it can: no throttles.
[rate_limit]
login_per_account = "off"
login_per_ip = "off"
token_per_ip = "off"

[bff]
session_cache = "${BENCH_SESSION_CACHE:-0s}"

[[bff.routes]]
prefix = "/api/"
upstream = "$upstream/"
audience = "api"
scopes = ["read"]
CONF

"$root/target/release/echo-upstream" --listen "127.0.0.1:$upstream_port" >"$tmp/upstream.log" 2>&1 &
upstream_pid=$!
(cd "$tmp" && exec "$root/target/release/latchkey" serve --config "$tmp/latchkey.toml") \
  >"$tmp/server.log" 2>&1 &
server_pid=$!

wait_for() {
  for _ in $(seq 100); do
    if curl -fsS "$1" >/dev/null 2>&1; then
      return
    fi
    sleep 0.1
  done
  echo "bench: $1 never answered" >&2
  exit 1
}
wait_for "$upstream/ping"
wait_for "$url/readyz"

echo "bench: latchkey $(git describe --always --dirty 2>/dev/null || echo "?") on $url, upstream $upstream, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)" >&2
target/release/latchkey-loadtest bff --url "$url" --upstream "$upstream" --prefix /api/ --path ping \
  --concurrency "$concurrency" --duration "$duration" "$@"
