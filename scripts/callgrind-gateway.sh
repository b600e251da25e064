#!/usr/bin/env bash
# Instructions per proxied request of the example gateway, counted by valgrind's callgrind: repeatable for one
# binary whatever else the machine does, unlike timings. The figures in docs/benchmarks.md ("Ir per request")
# come from it.
#
#   scripts/callgrind-gateway.sh [GATEWAY_BIN] [OUT_DIR]
#
# It starts `static_upstream` and the gateway (under callgrind, CHITTY_WORKERS=1) with the configuration and
# request body of scripts/bench-gateway.sh (scripts/lib/gateway-bench.sh), sends WARMUP requests
# with oha, zeroes the counters, sends REQUESTS more over CONNECTIONS connections, dumps, and prints the total
# divided by REQUESTS. The dump stays in OUT_DIR for `callgrind_annotate`. Settings (environment): WARMUP (200),
# REQUESTS (2000), CONNECTIONS (32), UPSTREAM_PORT (19200), GATEWAY_PORT (19280).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/gateway-bench.sh
. "$ROOT/scripts/lib/gateway-bench.sh"
BIN=${1:-$ROOT/target/release/examples/gateway}
OUT=${2:-$(mktemp -d -t chitty-callgrind.XXXXXX)}
WARMUP=${WARMUP:-200}
REQUESTS=${REQUESTS:-2000}
CONNECTIONS=${CONNECTIONS:-32}
UPSTREAM_PORT=${UPSTREAM_PORT:-19200}
GATEWAY_PORT=${GATEWAY_PORT:-19280}
UPSTREAM_BIN=$ROOT/target/release/examples/static_upstream
die() {
    echo "callgrind-gateway: $*" >&2
    exit 1
}
export PATH="$HOME/.cargo/bin:$PATH"
for tool in valgrind callgrind_control callgrind_annotate oha curl; do
    command -v "$tool" >/dev/null || die "$tool is needed (valgrind from apt-get, oha from cargo install oha --locked)"
done
[ -x "$BIN" ] && [ -x "$UPSTREAM_BIN" ] ||
    die "build first: cargo build --release --example gateway --example static_upstream"
mkdir -p "$OUT"

KEY="sk-chitty-callgrind-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
write_gateway_bench_config "$OUT/gateway.toml" "$GATEWAY_PORT" "$UPSTREAM_PORT" "$KEY"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
"$UPSTREAM_BIN" --addr "127.0.0.1:$UPSTREAM_PORT" >"$OUT/upstream.log" 2>&1 &
PIDS+=($!)
CHITTY_WORKERS=1 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$BIN" \
    --config "$OUT/gateway.toml" --addr "127.0.0.1:$GATEWAY_PORT" >"$OUT/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
for _ in $(seq 1 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$GATEWAY_PORT/healthz" && break
    kill -0 "$GATEWAY_PID" 2>/dev/null || { cat "$OUT/gateway.log" >&2; die "the gateway exited"; }
    sleep 0.2
done
send() { # count
    oha --no-tui -n "$1" -c "$CONNECTIONS" -m POST -H "Content-Type: application/json" -H "Authorization: Bearer $KEY" \
        -d "$GATEWAY_BENCH_BODY" "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions" >"$OUT/oha.txt" || die "oha failed"
    grep -Eq "Success rate:[[:space:]]+100.00%" "$OUT/oha.txt" || { cat "$OUT/oha.txt" >&2; die "not every request succeeded"; }
}
send "$WARMUP"
callgrind_control -z "$GATEWAY_PID" >/dev/null
send "$REQUESTS"
callgrind_control -d "$GATEWAY_PID" >/dev/null
sleep 1
DUMP=$(ls -t "$OUT"/callgrind.out.* | head -1)
TOTAL=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
[ -n "$TOTAL" ] || die "no totals in $DUMP"
echo "$(basename "$BIN"): $TOTAL instructions for $REQUESTS requests, $((TOTAL / REQUESTS)) per request (dump: $DUMP)"
