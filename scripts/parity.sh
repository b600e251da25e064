#!/usr/bin/env bash
# Drives the example gateway with the official OpenAI SDKs (Python and Node) and Anthropic's Python SDK (versions
# pinned), installed into tests/parity/.venv and tests/parity/node/node_modules. Also checks that SIGTERM shuts the
# gateway down cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cargo build --quiet --example gateway
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"${CARGO_TARGET_DIR:-target}/debug/examples/gateway" --addr "127.0.0.1:$port" >"$log" 2>&1 &
gateway=$!
cleanup() { kill "$gateway" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$gateway" 2>/dev/null || { cat "$log"; echo "parity: the gateway exited early" >&2; exit 1; }
  sleep 0.1
done
export CHITTY_PARITY_BASE_URL="http://127.0.0.1:$port/v1"

echo "parity: Python SDK"
if [ ! -x tests/parity/.venv/bin/pytest ]; then
  python3 -m venv tests/parity/.venv
  tests/parity/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/parity/python/requirements.txt
fi
tests/parity/.venv/bin/pytest -q -p no:cacheprovider tests/parity/python

echo "parity: Anthropic Python SDK"
# pip is a no-op once the pinned versions are installed.
tests/parity/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/parity/anthropic/requirements.txt
tests/parity/.venv/bin/pytest -q -p no:cacheprovider tests/parity/anthropic

echo "parity: Node SDK"
(cd tests/parity/node && { [ -d node_modules/openai ] || npm install --no-audit --no-fund --silent; } && node --test)

echo "parity: graceful shutdown on SIGTERM"
kill -TERM "$gateway"
if ! wait "$gateway"; then cat "$log"; echo "parity: the gateway did not exit cleanly on SIGTERM" >&2; exit 1; fi
trap - EXIT
rm -f "$log"
echo "parity: ok"
