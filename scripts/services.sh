#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis servers the tests use are up (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379),
# starting them if this machine has them installed. Prints the URLs to export.
# Exit status: 0 when both answer, 1 otherwise (with a message saying which and why).
set -uo pipefail

PG_URL="${LATCHKEY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS_URL="${LATCHKEY_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
ok=0

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >&2 || true
    for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
  fi
fi
if pg_up; then echo "services: PostgreSQL is up" >&2; else echo "services: PostgreSQL is NOT reachable on 127.0.0.1:5432" >&2; ok=1; fi

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "services: starting Redis" >&2
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2 || true
    for _ in $(seq 1 30); do redis_up && break; sleep 0.2; done
  fi
fi
if redis_up; then echo "services: Redis is up" >&2; else echo "services: Redis is NOT reachable on 127.0.0.1:6379" >&2; ok=1; fi

echo "export LATCHKEY_TEST_POSTGRES_URL=$PG_URL"
echo "export LATCHKEY_TEST_REDIS_URL=$REDIS_URL"
exit $ok
