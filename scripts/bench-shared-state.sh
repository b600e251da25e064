#!/usr/bin/env bash
# What sharing budgets and rate limits through Redis costs a request, side by side with the in-memory
# configuration in one run.
#
#   scripts/bench-shared-state.sh
#
# Two builds of nothing: one release example gateway binary, run twice in front of the static upstream with
# the same tenant (a budget, requests- and tokens-per-minute limits it never reaches):
#   memory  [budgets] and [rate_limits] in process
#   redis   [budgets] and [rate_limits] in Redis (CHITTY_TEST_REDIS_URL, default redis://127.0.0.1:6379)
# plus the upstream called directly. Sides alternate (direct, memory, redis) for ROUNDS rounds of DURATION s
# at RATE req/s (oha), so drift hits all three. It prints, per side, p50/p99 latency and what the gateway adds
# over direct, and for the Redis side the Redis commands per request (from INFO commandstats): the key
# lookup makes none, admission one budget script and one rate-limit script, settlement one of each.
#
# Settings (environment): RATE (1000), DURATION (10), ROUNDS (3), CONNECTIONS (32), UPSTREAM_PORT (19300),
# MEMORY_PORT (19301), REDIS_PORT (19302), SKIP_BUILD (0), CHITTY_TEST_REDIS_URL.
set -euo pipefail

RATE=${RATE:-1000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
UPSTREAM_PORT=${UPSTREAM_PORT:-19300}
MEMORY_PORT=${MEMORY_PORT:-19301}
REDIS_PORT=${REDIS_PORT:-19302}
SKIP_BUILD=${SKIP_BUILD:-0}
REDIS_URL=${CHITTY_TEST_REDIS_URL:-redis://127.0.0.1:6379}
KEY=sk-bench-shared-state

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/gateway-bench.sh
. "$ROOT/scripts/lib/gateway-bench.sh"
die() { echo "bench-shared-state: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || { log "installing oha"; cargo install oha --locked >&2 || die "could not install oha"; }
command -v jq >/dev/null || { apt-get install -y -qq jq >&2 || die "jq is needed"; }
command -v redis-cli >/dev/null || die "redis-cli is needed to count Redis commands"
if oha --help | grep -q -- '--output-format'; then OHA_JSON=(--output-format json); else OHA_JSON=(--json); fi
REDIS_HOSTPORT=${REDIS_URL#redis://}
REDIS_HOSTPORT=${REDIS_HOSTPORT%%/*}
redis() { redis-cli -h "${REDIS_HOSTPORT%:*}" -p "${REDIS_HOSTPORT#*:}" "$@"; }
redis PING >/dev/null || die "Redis does not answer at $REDIS_URL (scripts/services.sh starts it)"

if [ "$SKIP_BUILD" != 1 ]; then
    log "building (release): gateway, static_upstream"
    cargo build --release --example gateway --example static_upstream >&2 || die "build failed"
fi
BIN="$ROOT/target/release/examples"

WORK=$(mktemp -d -t chitty-shared.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# The tenant's limits: far above what the run sends, so every request does the work and none is refused.
limits='requests_per_minute = 1000000000
tokens_per_minute = 4000000000'
write_gateway_bench_config "$WORK/memory.toml" "$MEMORY_PORT" "$UPSTREAM_PORT" "$KEY"
printf '%s\n' "$limits" >>"$WORK/memory.toml"
# The same file with the tenant's budget and limits in Redis: [budgets] moved below [[tenants]] (a table
# header ends the array entry), [rate_limits] added.
write_gateway_bench_config "$WORK/redis.toml" "$REDIS_PORT" "$UPSTREAM_PORT" "$KEY"
sed -i '/^\[budgets\]$/,/^backend = "memory"$/d' "$WORK/redis.toml"
cat >>"$WORK/redis.toml" <<TOML
$limits

[budgets]
backend = "redis"
url = "$REDIS_URL"

[rate_limits]
backend = "redis"
url = "$REDIS_URL"
TOML
[ "$(grep -c 'backend = "redis"' "$WORK/redis.toml")" = 2 ] || die "could not write the Redis configuration"
grep -q '^\[budgets\]' "$WORK/memory.toml" || die "the bench configuration has no [budgets] section to move"

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; die "nothing listens on $1"; }
"$BIN/static_upstream" --addr "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
for side in memory redis; do
    CHITTY_WORKERS=1 "$BIN/gateway" --config "$WORK/$side.toml" >"$WORK/$side.log" 2>&1 &
    PIDS+=($!)
done
wait_port "$UPSTREAM_PORT"; wait_port "$MEMORY_PORT"; wait_port "$REDIS_PORT"

url_of() {
    case $1 in
        direct) echo "http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions" ;;
        memory) echo "http://127.0.0.1:$MEMORY_PORT/v1/chat/completions" ;;
        redis) echo "http://127.0.0.1:$REDIS_PORT/v1/chat/completions" ;;
    esac
}
run() { # out side seconds
    oha --no-tui "${OHA_JSON[@]}" -m POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -z "$3s" -q "$RATE" -c "$CONNECTIONS" -d "$GATEWAY_BENCH_BODY" "$(url_of "$2")" >"$1" 2>"$1.err" ||
        { cat "$1.err" >&2; die "oha failed against $2"; }
}
calls() { redis INFO commandstats | awk -F'[=,:]' '/^cmdstat_(evalsha|eval|fcall)/ {n += $3} END {print n + 0}'; }

log "warm-up: 3 s per side"
for side in direct memory redis; do run "$WORK/warm-$side.json" "$side" 3; done
REDIS_REQUESTS=0
REDIS_CALLS=0
for round in $(seq 1 "$ROUNDS"); do
    for side in direct memory redis; do
        log "round $round: $side, $DURATION s at $RATE req/s"
        before=$(calls)
        run "$WORK/rate-$side-$round.json" "$side" "$DURATION"
        if [ "$side" = redis ]; then
            REDIS_CALLS=$((REDIS_CALLS + $(calls) - before))
            REDIS_REQUESTS=$((REDIS_REQUESTS + $(jq '[.statusCodeDistribution | to_entries[].value] | add // 0' "$WORK/rate-$side-$round.json")))
        fi
    done
done

stats() { # side -> "p50_us p99_us ok_share"
    jq -s -r '[ (map(.latencyPercentiles.p50) | add / length * 1e6), (map(.latencyPercentiles.p99) | add / length * 1e6),
                ((map(.statusCodeDistribution["200"] // 0) | add) / ([.[].statusCodeDistribution | to_entries[].value] | add // 1)) ]
              | map(tostring) | join(" ")' "$WORK"/rate-"$1"-*.json
}
read -r d50 d99 _ <<<"$(stats direct)"
echo
echo "shared state, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $RATE req/s, $ROUNDS x $DURATION s per side, oha $(oha --version | awk '{print $2}')"
printf '%-8s %10s %10s %12s %12s %8s\n' side p50_us p99_us added_p50 added_p99 ok
for side in direct memory redis; do
    read -r p50 p99 ok <<<"$(stats "$side")"
    awk -v s="$side" -v a="$p50" -v b="$p99" -v c="$d50" -v d="$d99" -v o="$ok" \
        'BEGIN {printf "%-8s %10.0f %10.0f %12.0f %12.0f %7.1f%%\n", s, a, b, a - c, b - d, o * 100}'
done
awk -v c="$REDIS_CALLS" -v r="$REDIS_REQUESTS" \
    'BEGIN {printf "redis side: %d script calls for %d requests = %.2f per request (admission: budget + rate limit; settlement: budget + token refund)\n", c, r, (r ? c / r : 0)}'
read -r m50 m99 _ <<<"$(stats memory)"
read -r r50 r99 _ <<<"$(stats redis)"
awk -v a="$m50" -v b="$r50" -v c="$m99" -v d="$r99" \
    'BEGIN {printf "redis - memory: %+.0f us at p50, %+.0f us at p99\n", b - a, d - c}'
