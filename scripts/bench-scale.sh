#!/usr/bin/env bash
# Scale-out benchmark: refresh-token rotations/s and token checks/s (GET /v1/me) on SQLite,
# PostgreSQL and PostgreSQL + Redis, each with one `latchkey serve` and with two sharing the
# store (the load generator spreads its clients over both), beside the bare axum baseline, in
# one run and one table. See docs/benchmarks.md ("Scale-out").
#
#   scripts/bench-scale.sh                      # 32 clients in all, 10 s per measurement
#   BENCH_CONCURRENCY=64 BENCH_DURATION=20 scripts/bench-scale.sh
#   BENCH_STORES="postgres redis" scripts/bench-scale.sh
#
# PostgreSQL and Redis: LATCHKEY_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test)
# and LATCHKEY_TEST_REDIS_URL (default redis://127.0.0.1:6379), as for the tests. Each store
# configuration gets a database (CREATE DATABASE, dropped at the end) or a Redis key prefix
# (deleted at the end) of its own. Needs psql, redis-cli, curl and jq.
# BENCH_PORT picks the first port to try (default 18180).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

concurrency="${BENCH_CONCURRENCY:-32}"
duration="${BENCH_DURATION:-10}"
warmup=1
stores="${BENCH_STORES:-sqlite postgres redis}"
pg_url="${LATCHKEY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
redis_url="${LATCHKEY_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
clk_tck="$(getconf CLK_TCK)"

for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "bench-scale: needs $tool" >&2; exit 1; }
done
case " $stores " in *" postgres "*|*" redis "*)
  command -v psql >/dev/null || { echo "bench-scale: needs psql" >&2; exit 1; }
  pg_isready -q -d "$pg_url" 2>/dev/null || psql "$pg_url" -qAtc 'SELECT 1' >/dev/null \
    || { echo "bench-scale: PostgreSQL at $pg_url does not answer" >&2; exit 1; } ;;
esac
case " $stores " in *" redis "*)
  command -v redis-cli >/dev/null || { echo "bench-scale: needs redis-cli" >&2; exit 1; }
  [ "$(redis-cli -u "$redis_url" ping 2>/dev/null)" = PONG ] \
    || { echo "bench-scale: Redis at $redis_url does not answer" >&2; exit 1; } ;;
esac

cargo build --release -p latchkey -p latchkey-loadtest >&2

tmp="$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench-scale.XXXXXX")"
server_pids=()
databases=()
prefixes=()
tag="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

stop_servers() {
  for pid in "${server_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
}
cleanup() {
  status=$?
  stop_servers
  if [ "$status" -ne 0 ]; then
    for log in "$tmp"/*.log; do
      [ -f "$log" ] || continue
      echo "bench-scale: failed; last lines of $(basename "$log"):" >&2
      tail -n 10 "$log" >&2
    done
  fi
  for db in "${databases[@]}"; do
    psql "$pg_url" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 \
      || echo "bench-scale: could not drop database $db" >&2
  done
  for prefix in "${prefixes[@]}"; do
    redis-cli -u "$redis_url" --scan --pattern "${prefix}*" \
      | xargs -r -n 500 redis-cli -u "$redis_url" del >/dev/null 2>&1 || true
  done
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

next_port="${BENCH_PORT:-18180}"
# Sets `port` to a port nobody listens on, from next_port up.
free_port() {
  while (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; do
    next_port=$((next_port + 1))
  done
  port="$next_port"
  next_port=$((next_port + 1))
}

# CPU time (clock ticks) used so far by the given processes.
ticks_of() {
  local total=0 pid fields
  for pid in "$@"; do
    if fields="$(cut -d')' -f2- "/proc/$pid/stat" 2>/dev/null)"; then
      set -- $fields
      total=$((total + ${12} + ${13}))
    fi
  done
  echo "$total"
}
# CPU time of every process whose command name is $1 (postgres, redis-server).
ticks_of_comm() {
  local pids=() f
  for f in /proc/[0-9]*/comm; do
    [ "$(cat "$f" 2>/dev/null)" = "$1" ] && pids+=("$(basename "$(dirname "$f")")")
  done
  ticks_of "${pids[@]}"
}

# start_instances LABEL COUNT DATABASE [REDIS PREFIX]: sets `urls` (comma-separated).
start_instances() {
  local label="$1" count="$2" database="$3" redis="${4:-}" prefix="${5:-}"
  local issuer="" i config url
  urls=""
  for i in $(seq 1 "$count"); do
    free_port
    issuer="${issuer:-http://127.0.0.1:$port}"
    config="$tmp/$label-$i.toml"
    {
      echo "listen = \"127.0.0.1:$port\""
      echo "issuer = \"$issuer\""   # one public URL for the cluster, as behind a load balancer
      echo "database = \"$database\""
      if [ -n "$redis" ]; then
        echo "redis = \"$redis\""
        echo "redis_prefix = \"$prefix\""
      fi
      cat <<EOF

# Sign-up and login are not measured: cheap hashing keeps the setup short.
[password]
argon2_memory_kib = 64
argon2_iterations = 1

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
EOF
    } >"$config"
    (cd "$tmp" && exec "$root/target/release/latchkey" serve --config "$config") \
      >"$tmp/$label-$i.log" 2>&1 &
    server_pids+=("$!")
    url="http://127.0.0.1:$port"
    urls="${urls:+$urls,}$url"
    # One after the other: the SQLite migrator takes no lock, so two processes migrating a
    # new file at once collide ("table users already exists").
    for _ in $(seq 300); do
      curl -fsS "$url/readyz" >/dev/null 2>&1 && break
      sleep 0.1
    done
    curl -fsS "$url/readyz" >/dev/null || { echo "bench-scale: $url/readyz never answered" >&2; exit 1; }
  done
}

results="$tmp/results.jsonl"
: >"$results"

# measure STORE INSTANCES MODE URLS: one loadtest run, plus the CPU each party used.
measure() {
  local store="$1" instances="$2" mode="$3" urls="$4"
  local out="$tmp/out.json" before_srv before_pg before_redis started lpid last=0 t
  before_srv="$(ticks_of "${server_pids[@]}")"
  before_pg="$(ticks_of_comm postgres)"
  before_redis="$(ticks_of_comm redis-server)"
  started="$(date +%s%N)"
  "$root/target/release/latchkey-loadtest" "$mode" --url "$urls" --client-id bench \
    --concurrency "$concurrency" --duration "$duration" --warmup "$warmup" --json >"$out" &
  lpid=$!
  while kill -0 "$lpid" 2>/dev/null; do
    t="$(ticks_of "$lpid")"
    [ "$t" -gt 0 ] && last="$t"
    sleep 0.2
  done
  wait "$lpid"
  local wall srv pg redis
  wall="$(awk -v a="$started" -v b="$(date +%s%N)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
  srv="$(( $(ticks_of "${server_pids[@]}") - before_srv ))"
  pg="$(( $(ticks_of_comm postgres) - before_pg ))"
  redis="$(( $(ticks_of_comm redis-server) - before_redis ))"
  jq -c --arg store "$store" --argjson instances "$instances" \
    --argjson wall "$wall" --argjson tck "$clk_tck" \
    --argjson srv "$srv" --argjson pg "$pg" --argjson redis "$redis" --argjson gen "$last" \
    --argjson loaded "$(awk -v d="$duration" -v w="$warmup" 'BEGIN { print d + w }')" \
    '.results[0] | . + {store: $store, instances: $instances,
      cores_latchkey: ($srv / $tck / $wall), cores_postgres: ($pg / $tck / $wall),
      cores_redis: ($redis / $tck / $wall), cores_loadgen: ($gen / $tck / $wall),
      latchkey_cpu_us_per_request: ($srv / $tck * 1e6 / (.requests_per_sec * $loaded))}' \
    "$out" >>"$results"
}

echo "bench-scale: latchkey $(git describe --always --dirty 2>/dev/null || echo "?"), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), $concurrency clients, ${duration} s per measurement" >&2

"$root/target/release/latchkey-loadtest" baseline --concurrency "$concurrency" \
  --duration "$duration" --warmup "$warmup" --json >"$tmp/baseline.json"
baseline="$(jq '.results[0].requests_per_sec' "$tmp/baseline.json")"

for store in $stores; do
  for instances in 1 2; do
    label="$store-$instances"
    case "$store" in
      sqlite)
        mkdir -p "$tmp/$label"
        start_instances "$label" "$instances" "sqlite://$tmp/$label/latchkey.db" ;;
      postgres|redis)
        db="latchkey_bench_${tag}_${store}_${instances}"
        psql "$pg_url" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$db\"" >/dev/null
        databases+=("$db")
        base="${pg_url%%\?*}"
        db_url="${base%/*}/$db${pg_url#"$base"}"
        if [ "$store" = redis ]; then
          prefix="latchkey-bench-$tag-$instances:"
          prefixes+=("$prefix")
          start_instances "$label" "$instances" "$db_url" "$redis_url" "$prefix"
        else
          start_instances "$label" "$instances" "$db_url"
        fi ;;
      *) echo "bench-scale: unknown store $store (sqlite, postgres, redis)" >&2; exit 2 ;;
    esac
    echo "bench-scale: $store, $instances instance(s): $urls" >&2
    for mode in rotations me; do
      measure "$store" "$instances" "$mode" "$urls"
    done
    stop_servers
  done
done

name() { case "$1" in sqlite) echo SQLite ;; postgres) echo PostgreSQL ;; redis) echo "PostgreSQL + Redis" ;; esac; }
printf '\nbaseline (bare axum, GET /hello): %.0f requests/s\n\n' "$baseline"
echo "| store | instances | mode | requests/s | p50 ms | p99 ms | errors | vs baseline | 2 vs 1 | CPU cores: latchkey / store / load generator | latchkey CPU µs per request |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"
for store in $stores; do
  for mode in rotations me; do
    one="$(jq -s --arg s "$store" --arg m "$mode" '[.[] | select(.store == $s and .mode == $m and .instances == 1)][0].requests_per_sec' "$results")"
    jq -r -s --arg s "$store" --arg m "$mode" --arg name "$(name "$store")" \
      --argjson base "$baseline" --argjson one "$one" '
      .[] | select(.store == $s and .mode == $m) |
      "| \($name) | \(.instances) | \(.mode) | \(.requests_per_sec | floor) | \(.p50_ms * 100 | round / 100) | \(.p99_ms * 100 | round / 100) | \(.errors) | \(100 * .requests_per_sec / $base * 10 | round / 10) % | \(if .instances == 1 then "" else "\(.requests_per_sec / $one * 100 | round / 100) ×" end) | \(.cores_latchkey * 100 | round / 100) / \((.cores_postgres + .cores_redis) * 100 | round / 100) / \(.cores_loadgen * 100 | round / 100) | \(.latchkey_cpu_us_per_request | round) |"' \
      "$results"
  done
done
if jq -e -s 'any(.[]; .errors > 0 or .stopped_workers > 0)' "$results" >/dev/null; then
  echo
  echo "errors (first samples):"
  jq -r -s '.[] | select(.errors > 0) | "\(.store) \(.instances) \(.mode): \(.error_samples | join(" | "))"' "$results"
fi
