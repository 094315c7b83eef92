#!/usr/bin/env bash
# HTTP benchmark: a release `latchkey serve` on SQLite in a temporary directory, driven by
# `latchkey-loadtest all` (bare axum baseline, refresh token rotations, GET /v1/me), one table
# with each line's ratio to the baseline measured in the same run. See docs/benchmarks.md.
#
#   scripts/bench-http.sh              # 32 clients, 10 s per mode
#   BENCH_CONCURRENCY=64 BENCH_DURATION=20 scripts/bench-http.sh
#   scripts/bench-http.sh --json       # extra arguments go to latchkey-loadtest
#
# BENCH_DATABASE replaces the SQLite file in the temporary directory (e.g. "memory:" to take the
# store out of the picture). BENCH_PORT picks the first port to try (default 18080; the next free one of 20 is used).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

concurrency="${BENCH_CONCURRENCY:-32}"
duration="${BENCH_DURATION:-10}"

cargo build --release -p latchkey -p latchkey-loadtest >&2

tmp="$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench.XXXXXX")"
server_pid=""
cleanup() {
  status=$?
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$tmp/server.log" ]; then
    echo "bench: failed; last lines of the server log:" >&2
    tail -n 20 "$tmp/server.log" >&2
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nobody listens on: connecting to it must fail.
port="${BENCH_PORT:-18080}"
for _ in $(seq 20); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    break
  fi
  port=$((port + 1))
done
url="http://127.0.0.1:$port"

cat >"$tmp/latchkey.toml" <<EOF
listen = "127.0.0.1:$port"
issuer = "$url"
database = "${BENCH_DATABASE:-sqlite://$tmp/latchkey.db}"

# The benchmark logs in from one IP as fast as it can: no throttles.
[rate_limit]
login_per_account = "off"
login_per_ip = "off"
token_per_ip = "off"

[[clients]]
id = "bench"
kind = "public"
audience = "api"
scopes = ["read"]
grant_types = ["password", "refresh_token"]

[[clients]]
id = "bench-backend"
kind = "confidential"
secret = "bench-backend-secret-0123456789"
audience = "internal"
scopes = ["read"]
grant_types = ["password", "refresh_token"]
EOF

(cd "$tmp" && exec "$root/target/release/latchkey" serve --config "$tmp/latchkey.toml") \
  >"$tmp/server.log" 2>&1 &
server_pid=$!

for _ in $(seq 100); do
  if curl -fsS "$url/readyz" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "bench: the server exited during start-up" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS "$url/readyz" >/dev/null || { echo "bench: $url/readyz never answered" >&2; exit 1; }

echo "bench: latchkey $(git describe --always --dirty 2>/dev/null || echo "?") on $url, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)" >&2
target/release/latchkey-loadtest all --url "$url" --client-id bench \
  --confidential bench-backend:bench-backend-secret-0123456789 \
  --concurrency "$concurrency" --duration "$duration" "$@"
if [ "${BENCH_REACH:-1}" = "1" ]; then
  target/release/latchkey-loadtest reach --url "$url" --client-id bench \
    --sessions "${BENCH_REACH_SESSIONS:-1000}"
fi
