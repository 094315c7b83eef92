#!/usr/bin/env bash
# Checks dist/latchkey.service with `systemd-analyze verify` (skipped where systemd-analyze is
# missing, unless LATCHKEY_REQUIRE_SYSTEMD_ANALYZE=1). Any complaint fails: verify exits 0 on
# unknown keys, so its output is what counts. The binary path points at the built binary.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null; then
  if [ "${LATCHKEY_REQUIRE_SYSTEMD_ANALYZE:-0}" = "1" ]; then
    echo "check-systemd-unit: systemd-analyze is required but missing" >&2
    exit 1
  fi
  echo "check-systemd-unit: SKIPPED (no systemd-analyze)"
  exit 0
fi
binary="${LATCHKEY_BIN_DIR:-$PWD/target/debug}/latchkey"
[ -x "$binary" ] || { echo "check-systemd-unit: no $binary; build it first" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s#/usr/local/bin/latchkey#$binary#g" dist/latchkey.service > "$dir/latchkey.service"
out=$(systemd-analyze verify "$dir/latchkey.service" 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "check-systemd-unit: systemd-analyze complained:" >&2
  echo "$out" >&2
  exit 1
fi
echo "check-systemd-unit: dist/latchkey.service verified"
