#!/usr/bin/env bash
# The whole test suite: every crate's unit, conformance and HTTP tests.
# Tests that need PostgreSQL or Redis read LATCHKEY_TEST_POSTGRES_URL / LATCHKEY_TEST_REDIS_URL;
# this script starts those servers when it can. With LATCHKEY_REQUIRE_SERVICES=1 (CI) a missing
# server fails the run instead of being skipped.
# The browser test (crates/server/tests/http/browser.rs) needs /usr/bin/chromium and
# /usr/bin/chromedriver (apt-get install chromium chromium-driver) and is skipped without them,
# unless LATCHKEY_REQUIRE_BROWSER=1 (CI), where it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if services=$(scripts/services.sh); then
  eval "$services"
else
  if [ "${LATCHKEY_REQUIRE_SERVICES:-0}" = "1" ]; then
    echo "test: PostgreSQL/Redis are required here (LATCHKEY_REQUIRE_SERVICES=1) but not reachable" >&2
    exit 1
  fi
  echo "test: WARNING: PostgreSQL/Redis not reachable; tests that need them will be skipped" >&2
fi

# Property tests (proptest) run this many cases per property; each prints how many ran.
export PROPTEST_CASES="${PROPTEST_CASES:-256}"

# --all-targets builds and runs every test, example and bench target but no doctests: those
# are a second run. --locked: the lock file is the one reviewed, never silently updated.
cargo test --workspace --all-targets --locked "$@"
# The doctests take no arguments: `--doc` cannot be mixed with the target selections "$@" may hold.
cargo test --workspace --doc --locked
# --- JavaScript client (clients/js) -------------------------------------------------------------
# Unit tests (node --test) and the headless-Chromium end-to-end test against a real latchkey.
# Needs Node >= 20 and npm (devDependencies pinned by clients/js/package-lock.json, `npm ci`). The
# browser test says SKIPPED without /usr/bin/chromium, unless LATCHKEY_REQUIRE_BROWSER=1 (CI).
if command -v npm >/dev/null; then
  (cd clients/js && npm ci --no-audit --no-fund && npm test)
elif [ "${LATCHKEY_REQUIRE_BROWSER:-0}" = "1" ]; then
  echo "test: npm is required for the JS client tests here (LATCHKEY_REQUIRE_BROWSER=1)" >&2
  exit 1
else
  echo "test: SKIPPED: JS client tests (clients/js): npm not found" >&2
fi

# --- Guides executed as written (docs/quickstart.md, the resource-server example) ---------------
# The guides run the binaries they name (`cargo test` builds test harnesses, not every binary);
# needs curl and python3.
cargo build --workspace --bins --locked
python3 scripts/doc-test.py docs/quickstart.md examples/resource-server/README.md

# --- The systemd unit (dist/latchkey.service), where systemd-analyze exists ----------------------
scripts/check-systemd-unit.sh
