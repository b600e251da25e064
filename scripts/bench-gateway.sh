#!/usr/bin/env bash
# End-to-end load benchmark of the example gateway against a static OpenAI-compatible upstream.
#
#   scripts/bench-gateway.sh
#
# What it measures, all in one run:
#   1. Latency added by the gateway. The same request body goes at a fixed rate (default 2,000 req/s,
#      15 s per run) to the static upstream directly and through the gateway. Runs alternate direct,
#      gateway, direct, gateway so that noise on the machine hits both. Added p50/p99 = gateway − direct
#      (oha, latency measured from send). The same runs also go through nginx (installed when missing) as a
#      reference reverse proxy. That shows what one extra loopback hop costs on this machine. They also go
#      through a bare pass-through proxy (`static_upstream --forward`) on the gateway's own HTTP stack
#      (PerCoreServer, axum, hyper-util's client, same thread count) without the gateway's work: the
#      difference between it and the gateway is what authentication, budgets, parsing and metrics add.
#   2. The most requests/s each side reaches, unthrottled at a fixed concurrency (wrk when installed,
#      else oha).
#   3. The gateway's RSS (VmRSS): idle after start, the peak while 1,000 SSE streams are held open, and
#      10 s after they end. The upstream streams 50 chunks 200 ms apart, so each stream lives ~10 s.
# It prints a table with PASS/MISS per target. It exits non-zero only when something fails to start or
# a load run cannot be made, never because a target is missed.
#
# Settings (environment): RATE (2000), DURATION (15, seconds per fixed-rate run), ROUNDS (2 pairs),
# RATE_CONNECTIONS (32), MAX_CONNECTIONS (64), MAX_DURATION (10), STREAMS (1000), STREAM_CHUNKS (50),
# CHUNK_DELAY_MS (200), SETTLE_SECS (10), UPSTREAM_PORT (19100), GATEWAY_PORT (19180),
# NGINX_PORT (19190), PASSTHROUGH_PORT (19185), PASSTHROUGH (1: run the pass-through proxy; 0: skip),
# NGINX (1: use nginx as the reference proxy, installing nginx-light with apt-get if it is missing; 0: skip),
# GATEWAY_WORKERS (the gateway's serving threads, CHITTY_WORKERS; default 1, like the nginx reference's one
# worker, because the upstream and the load generator need the other core; empty: the example's default of
# one per core), UPSTREAM_WORKERS
# (the static upstream's Tokio worker threads; default one per core), GATEWAY_ENV (extra
# environment for the gateway only, e.g. "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
# GATEWAY_BIN (another build of the gateway example to measure instead), COMPARE_BIN (a second build of the
# gateway example, e.g. the commit before a change, run as one more side, `compare`, on COMPARE_PORT (19181)
# in the same alternating rounds: an A/B that the machine's drift hits equally), NOISE_SPREAD_PCT (25) and
# NOISE_TAIL_RATIO (10): the run is reported as noisy, next to its latency verdicts, when a side's p50 moves by
# more than NOISE_SPREAD_PCT % between rounds or the direct side's p99 exceeds NOISE_TAIL_RATIO times its p50
# in a round, SKIP_BUILD (0).
# Nothing is pinned to CPUs or reniced: the gateway, the upstream and the load generator share the
# machine's cores with whatever else runs.
set -euo pipefail

RATE=${RATE:-2000}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-32}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-64}
MAX_DURATION=${MAX_DURATION:-10}
STREAMS=${STREAMS:-1000}
STREAM_CHUNKS=${STREAM_CHUNKS:-50}
CHUNK_DELAY_MS=${CHUNK_DELAY_MS:-200}
SETTLE_SECS=${SETTLE_SECS:-10}
UPSTREAM_PORT=${UPSTREAM_PORT:-19100}
GATEWAY_PORT=${GATEWAY_PORT:-19180}
NGINX_PORT=${NGINX_PORT:-19190}
PASSTHROUGH_PORT=${PASSTHROUGH_PORT:-19185}
COMPARE_PORT=${COMPARE_PORT:-19181}
COMPARE_BIN=${COMPARE_BIN:-}
PASSTHROUGH=${PASSTHROUGH:-1}
NGINX=${NGINX:-1}
GATEWAY_WORKERS=${GATEWAY_WORKERS-1}
# The pass-through proxy serves on as many threads as the gateway.
PASSTHROUGH_THREADS=${GATEWAY_WORKERS:-$(nproc)}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-}
GATEWAY_ENV=${GATEWAY_ENV:-}
GATEWAY_BIN=${GATEWAY_BIN:-}
SKIP_BUILD=${SKIP_BUILD:-0}

# Targets of issue 3 (µs and MB). "Back near idle" is read as within NEAR_IDLE_MB of the idle RSS.
TARGET_P50_US=150
TARGET_P99_US=500
TARGET_IDLE_MB=30
TARGET_STREAMS_MB=150
NEAR_IDLE_MB=${NEAR_IDLE_MB:-10}
NOISE_SPREAD_PCT=${NOISE_SPREAD_PCT:-25}
NOISE_TAIL_RATIO=${NOISE_TAIL_RATIO:-10}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/gateway-bench.sh
. "$ROOT/scripts/lib/gateway-bench.sh"

die() {
    echo "bench-gateway: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- tools
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha --locked)"
    cargo install oha --locked >&2 || die "could not install oha"
fi
# wrk measures max req/s (oha does when it is missing); nginx is the reference proxy. One apt-get for both.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ "$NGINX" != 1 ] || command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} (apt-get)"
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >&2 ||
        log "could not install ${missing[*]}: without wrk oha measures max req/s; without nginx there is no reference proxy"
fi
command -v jq >/dev/null || die "jq is needed to read oha's JSON output"
# oha has called its JSON switch `--output-format json` since 1.5 and `--json` before.
if oha --help | grep -q -- '--output-format'; then OHA_JSON=(--output-format json); else OHA_JSON=(--json); fi
NGINX_BIN=$(command -v nginx || true)
[ -x "$NGINX_BIN" ] || NGINX_BIN=/usr/sbin/nginx
if [ "$NGINX" = 1 ] && [ ! -x "$NGINX_BIN" ]; then
    log "nginx not installed: no reference proxy (apt-get install nginx-light to add one)"
    NGINX=0
fi

# Each stream holds a client socket, a server socket and an upstream socket; leave room for more.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((STREAMS * 2 + 256)) ] ||
    die "ulimit -n is $(ulimit -n): too low for $STREAMS streams"

if [ "$SKIP_BUILD" != 1 ]; then
    log "building (release): gateway, static_upstream"
    cargo build --release --example gateway --example static_upstream >&2 || die "build failed"
fi
BIN="$ROOT/target/release/examples"
GATEWAY_BIN=${GATEWAY_BIN:-$BIN/gateway}
if [ ! -x "$GATEWAY_BIN" ] || [ ! -x "$BIN/static_upstream" ]; then die "release examples missing in $BIN"; fi
[ -z "$COMPARE_BIN" ] || [ -x "$COMPARE_BIN" ] || die "COMPARE_BIN $COMPARE_BIN is not an executable"

for port in "$UPSTREAM_PORT" "$GATEWAY_PORT" "$NGINX_PORT" "$PASSTHROUGH_PORT" "$COMPARE_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use (set UPSTREAM_PORT / GATEWAY_PORT / NGINX_PORT / PASSTHROUGH_PORT / COMPARE_PORT)"
    fi
done

# ---------------------------------------------------------------- processes
WORK=$(mktemp -d -t chitty-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_healthy() { # url pid name
    for _ in $(seq 1 100); do
        kill -0 "$2" 2>/dev/null || { cat "$WORK"/*.log >&2; die "$3 exited during start"; }
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    cat "$WORK"/*.log >&2
    die "$3 did not answer $1 within 10 s"
}

KEY="sk-chitty-bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
write_gateway_bench_config "$WORK/gateway.toml" "$GATEWAY_PORT" "$UPSTREAM_PORT" "$KEY"

"$BIN/static_upstream" --addr "127.0.0.1:$UPSTREAM_PORT" --stream-chunks "$STREAM_CHUNKS" \
    --chunk-delay-ms "$CHUNK_DELAY_MS" ${UPSTREAM_WORKERS:+--workers "$UPSTREAM_WORKERS"} >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
wait_healthy "http://127.0.0.1:$UPSTREAM_PORT/healthz" "$UPSTREAM_PID" "static upstream"

# The example serves HTTP on CHITTY_WORKERS threads, each with its own runtime (PerCoreServer). Both gateway
# builds start the same way, each on its own port; the started process's pid lands in STARTED_PID.
start_gateway() { # binary port name
    # GATEWAY_ENV is split into words on purpose: it holds VAR=value pairs.
    # shellcheck disable=SC2086
    env ${GATEWAY_WORKERS:+CHITTY_WORKERS="$GATEWAY_WORKERS"} $GATEWAY_ENV "$1" --config "$WORK/gateway.toml" \
        --addr "127.0.0.1:$2" >"$WORK/$3.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_healthy "http://127.0.0.1:$2/healthz" "$STARTED_PID" "$3"
}
start_gateway "$GATEWAY_BIN" "$GATEWAY_PORT" gateway
GATEWAY_PID=$STARTED_PID
if [ -n "$COMPARE_BIN" ]; then
    start_gateway "$COMPARE_BIN" "$COMPARE_PORT" compare
    COMPARE_PID=$STARTED_PID
fi

if [ "$NGINX" = 1 ]; then
    mkdir -p "$WORK/nginx"
    # One worker, keep-alive to the upstream, no buffering, no logs: a lean reverse proxy.
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    upstream static { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://static;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    "$NGINX_BIN" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >>"$WORK/nginx.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_healthy "http://127.0.0.1:$NGINX_PORT/healthz" "$NGINX_PID" "nginx"
    NGINX_WORKER_PID=$(pgrep -P "$NGINX_PID" | head -1)
fi
if [ "$PASSTHROUGH" = 1 ]; then
    "$BIN/static_upstream" --addr "127.0.0.1:$PASSTHROUGH_PORT" --forward "http://127.0.0.1:$UPSTREAM_PORT" \
        --workers "$PASSTHROUGH_THREADS" >"$WORK/passthrough.log" 2>&1 &
    PASSTHROUGH_PID=$!
    PIDS+=("$PASSTHROUGH_PID")
    wait_healthy "http://127.0.0.1:$PASSTHROUGH_PORT/healthz" "$PASSTHROUGH_PID" "pass-through proxy"
fi
SIDES=(direct)
[ "$NGINX" != 1 ] || SIDES+=(nginx)
[ "$PASSTHROUGH" != 1 ] || SIDES+=(passthrough)
SIDES+=(gateway)
[ -z "$COMPARE_BIN" ] || SIDES+=(compare)

url_of() {
    case $1 in
    direct) echo "http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" ;;
    passthrough) echo "http://127.0.0.1:$PASSTHROUGH_PORT/v1/chat/completions" ;;
    gateway) echo "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions" ;;
    compare) echo "http://127.0.0.1:$COMPARE_PORT/v1/chat/completions" ;;
    esac
}
GATEWAY_URL=$(url_of gateway)
BODY=$GATEWAY_BENCH_BODY
STREAM_BODY='{"model":"bench","stream":true,"messages":[{"role":"user","content":"Stream me fifty tokens."}]}'
HEADERS=(-H "Content-Type: application/json" -H "Authorization: Bearer $KEY")

code=$(curl -s -o "$WORK/check.json" -w '%{http_code}' "${HEADERS[@]}" -d "$BODY" "$GATEWAY_URL")
[ "$code" = 200 ] || { cat "$WORK/check.json" "$WORK/gateway.log" >&2; die "gateway answered $code to the benchmark request"; }

cpu_ticks() { # pid -> user + system clock ticks (0 when there is no such process)
    if [ -z "${1:-}" ] || [ ! -r "/proc/$1/stat" ]; then
        echo 0
        return
    fi
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
mb() { awk -v kb="$1" 'BEGIN {printf "%.1f", kb / 1024}'; }

sleep 2
IDLE_KB=$(rss_kb "$GATEWAY_PID")
log "gateway idle RSS: $(mb "$IDLE_KB") MB"

# ---------------------------------------------------------------- latency at a fixed rate
oha_run() { # out-file url oha-args...
    local out=$1 url=$2
    shift 2
    oha --no-tui "${OHA_JSON[@]}" -m POST "${HEADERS[@]}" "$@" "$url" >"$out" 2>"$out.err" ||
        { cat "$out.err" >&2; die "oha failed against $url"; }
}
field() { jq -r "$2" "$1"; }

log "warm-up: 3 s at $RATE req/s on each side"
for side in "${SIDES[@]}"; do
    oha_run "$WORK/warm-$side.json" "$(url_of "$side")" -z 3s -q "$RATE" -c "$RATE_CONNECTIONS" -d "$BODY"
done

for round in $(seq 1 "$ROUNDS"); do
    for side in "${SIDES[@]}"; do
        log "round $round: $side, ${DURATION} s at $RATE req/s over $RATE_CONNECTIONS connections"
        g0=$(cpu_ticks "$GATEWAY_PID")
        u0=$(cpu_ticks "$UPSTREAM_PID")
        n0=$(cpu_ticks "${NGINX_WORKER_PID:-}")
        p0=$(cpu_ticks "${PASSTHROUGH_PID:-}")
        c0=$(cpu_ticks "${COMPARE_PID:-}")
        oha_run "$WORK/rate-$side-$round.json" "$(url_of "$side")" -z "${DURATION}s" -q "$RATE" \
            -c "$RATE_CONNECTIONS" -d "$BODY"
        echo "$(($(cpu_ticks "$GATEWAY_PID") - g0)) $(($(cpu_ticks "$UPSTREAM_PID") - u0))" \
            "$(($(cpu_ticks "${NGINX_WORKER_PID:-}") - n0))" "$(($(cpu_ticks "${PASSTHROUGH_PID:-}") - p0))" \
            "$(($(cpu_ticks "${COMPARE_PID:-}") - c0))" >"$WORK/cpu-$side-$round"
    done
done

# Per side: mean over rounds of p50 and p99 (µs), req/s, and the share of 200 answers.
side_stats() { # side -> "p50 p99 rps ok"
    jq -s -r '[ (map(.latencyPercentiles.p50) | add / length * 1e6),
                (map(.latencyPercentiles.p99) | add / length * 1e6),
                (map(.summary.requestsPerSec) | add / length),
                ((map(.statusCodeDistribution["200"] // 0) | add)
                  / ([.[].statusCodeDistribution | to_entries[].value] | add // 1)) ]
              | map(tostring) | join(" ")' "$WORK"/rate-"$1"-*.json
}
# CPU time (µs) per request of one process over one side's runs (column 1 gateway, 2 upstream, 3 nginx,
# 4 pass-through, 5 the compared build).
cpu_per_request() { # side column
    local ticks requests
    ticks=$(cat "$WORK"/cpu-"$1"-* | awk -v c="$2" '{t += $c} END {print t}')
    requests=$(jq -s '[.[].statusCodeDistribution | to_entries[].value] | add // 0' "$WORK"/rate-"$1"-*.json)
    awk -v t="$ticks" -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f", n ? t / hz * 1e6 / n : 0}'
}
minus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", a - b}'; }
read -r D_P50 D_P99 D_RPS D_OK <<<"$(side_stats direct)"
read -r G_P50 G_P99 G_RPS G_OK <<<"$(side_stats gateway)"
ADD_P50=$(minus "$G_P50" "$D_P50")
ADD_P99=$(minus "$G_P99" "$D_P99")
G_CPU_US=$(cpu_per_request gateway 1)
U_CPU_US=$(cpu_per_request direct 2)
if [ "$NGINX" = 1 ]; then
    read -r N_P50 N_P99 _ N_OK <<<"$(side_stats nginx)"
    N_CPU_US=$(cpu_per_request nginx 3)
fi
if [ "$PASSTHROUGH" = 1 ]; then
    read -r P_P50 P_P99 _ P_OK <<<"$(side_stats passthrough)"
    P_CPU_US=$(cpu_per_request passthrough 4)
fi
if [ -n "$COMPARE_BIN" ]; then
    read -r C_P50 C_P99 _ C_OK <<<"$(side_stats compare)"
    C_CPU_US=$(cpu_per_request compare 5)
fi

# ---------------------------------------------------------------- max throughput
if command -v wrk >/dev/null; then
    MAX_TOOL="wrk -t2 -c$MAX_CONNECTIONS -d${MAX_DURATION}s"
    cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
EOF
    max_rps() { # url
        local out
        out=$(wrk -t2 -c"$MAX_CONNECTIONS" -d"${MAX_DURATION}s" -s "$WORK/post.lua" "$1") || die "wrk failed against $1"
        if grep -q 'Non-2xx' <<<"$out"; then log "non-2xx answers from $1: $(grep 'Non-2xx' <<<"$out")"; fi
        awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out"
    }
else
    MAX_TOOL="oha -c $MAX_CONNECTIONS -z ${MAX_DURATION}s"
    max_rps() { # url
        oha_run "$WORK/max.json" "$1" -z "${MAX_DURATION}s" -c "$MAX_CONNECTIONS" -d "$BODY"
        field "$WORK/max.json" '.summary.requestsPerSec | floor'
    }
fi
declare -A MAX
for side in "${SIDES[@]}"; do
    log "max throughput: $MAX_TOOL, $side"
    MAX[$side]=$(max_rps "$(url_of "$side")")
done
sleep 2
WARM_IDLE_KB=$(rss_kb "$GATEWAY_PID")

# ---------------------------------------------------------------- RSS with concurrent streams
log "RSS: $STREAMS concurrent SSE streams through the gateway ($STREAM_CHUNKS chunks, $CHUNK_DELAY_MS ms apart)"
BEFORE_STREAMS_KB=$(rss_kb "$GATEWAY_PID")
oha --no-tui "${OHA_JSON[@]}" -m POST "${HEADERS[@]}" -n "$STREAMS" -c "$STREAMS" -t 120s -d "$STREAM_BODY" \
    "$GATEWAY_URL" >"$WORK/streams.json" 2>"$WORK/streams.err" &
OHA_PID=$!
PEAK_KB=0
PEAK_CONNS=0
while kill -0 "$OHA_PID" 2>/dev/null; do
    kb=$(rss_kb "$GATEWAY_PID")
    [ "$kb" -gt "$PEAK_KB" ] && PEAK_KB=$kb
    conns=$(ss -Htn state established "( sport = :$GATEWAY_PORT )" 2>/dev/null | wc -l)
    [ "$conns" -gt "$PEAK_CONNS" ] && PEAK_CONNS=$conns
    sleep 0.25
done
wait "$OHA_PID" || { cat "$WORK/streams.err" >&2; die "oha failed to drive the streams"; }
STREAMS_OK=$(field "$WORK/streams.json" '.statusCodeDistribution["200"] // 0')
STREAMS_SECS=$(field "$WORK/streams.json" '.latencyPercentiles.p50 // 0 | . * 10 | round / 10')
BYTES_PER_STREAM=$(field "$WORK/streams.json" '.summary.sizePerRequest // 0')
log "streams answered 200: $STREAMS_OK/$STREAMS, p50 duration ${STREAMS_SECS} s, peak open connections $PEAK_CONNS"
sleep "$SETTLE_SECS"
kill -0 "$GATEWAY_PID" 2>/dev/null || die "the gateway exited during the run"
AFTER_KB=$(rss_kb "$GATEWAY_PID")
HWM_KB=$(hwm_kb "$GATEWAY_PID")
# Upstream connections the gateway's client pool still keeps open (idle) after the streams.
POOLED_AFTER=$(ss -Htnp state established "( dport = :$UPSTREAM_PORT )" 2>/dev/null | grep -c "pid=$GATEWAY_PID," || true)

# ---------------------------------------------------------------- summary
verdict() { awk -v v="$1" -v t="$2" 'BEGIN {print (v <= t) ? "PASS" : "MISS"}'; }
# A burst on the machine moves one side's rounds apart, or stretches the direct side's tail: a PASS or MISS
# measured through one is marked, so that it is not read as the gateway's.
NOISE=()
for side in "${SIDES[@]}"; do
    spread=$(jq -s -r 'map(.latencyPercentiles.p50) | (max - min) / min * 100 | floor' "$WORK"/rate-"$side"-*.json)
    [ "$spread" -le "$NOISE_SPREAD_PCT" ] || NOISE+=("$side p50 moved $spread % between rounds")
done
tail_ratio=$(jq -s -r 'map(.latencyPercentiles.p99 / .latencyPercentiles.p50) | max | floor' "$WORK"/rate-direct-*.json)
[ "$tail_ratio" -le "$NOISE_TAIL_RATIO" ] || NOISE+=("direct p99 reached ${tail_ratio}x its p50")
latency_verdict() { # value target
    if [ ${#NOISE[@]} -eq 0 ]; then verdict "$1" "$2"; else echo "$(verdict "$1" "$2") (noisy run)"; fi
}
pct() { awk -v v="$1" 'BEGIN {printf "%.2f%%", v * 100}'; }
int() { awk -v v="$1" 'BEGIN {printf "%.0f", v}'; }
AFTER_GROWTH_MB=$(awk -v a="$AFTER_KB" -v i="$IDLE_KB" 'BEGIN {printf "%.1f", (a - i) / 1024}')

echo
echo "chitty gateway end-to-end benchmark: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average before the summary $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "$GATEWAY_ENV$UPSTREAM_WORKERS$COMPARE_BIN" ] && [ "$GATEWAY_BIN" = "$BIN/gateway" ] ||
    echo "settings: GATEWAY_BIN='$GATEWAY_BIN' COMPARE_BIN='$COMPARE_BIN' GATEWAY_ENV='$GATEWAY_ENV' UPSTREAM_WORKERS='$UPSTREAM_WORKERS'"
echo "gateway serving threads: ${GATEWAY_WORKERS:-one per core ($(nproc))}"
echo "fixed rate: $RATE req/s, ${DURATION} s x $ROUNDS rounds per side over $RATE_CONNECTIONS connections (oha $(oha --version | awk '{print $2}')), same body, sides alternating: ${SIDES[*]}"
echo
echo "| measure | direct | gateway | gateway − direct | target | verdict |"
echo "|---|---|---|---|---|---|"
echo "| p50 latency at $RATE req/s (µs) | $(int "$D_P50") | $(int "$G_P50") | **$ADD_P50** | ≤ $TARGET_P50_US | $(latency_verdict "$ADD_P50" "$TARGET_P50_US") |"
echo "| p99 latency at $RATE req/s (µs) | $(int "$D_P99") | $(int "$G_P99") | **$ADD_P99** | ≤ $TARGET_P99_US | $(latency_verdict "$ADD_P99" "$TARGET_P99_US") |"
echo "| req/s held (share of 200s) | $(int "$D_RPS") ($(pct "$D_OK")) | $(int "$G_RPS") ($(pct "$G_OK")) | | $RATE | - |"
echo "| CPU per request at $RATE req/s (µs) | $U_CPU_US (upstream) | $G_CPU_US | | - | - |"
echo "| max req/s, $MAX_CONNECTIONS connections ($(cut -d' ' -f1 <<<"$MAX_TOOL")) | ${MAX[direct]} | ${MAX[gateway]} | $(awk -v g="${MAX[gateway]}" -v d="${MAX[direct]}" 'BEGIN {printf "%.2fx of direct", g / d}') | - | - |"
echo "| gateway RSS idle after start (MB) | | $(mb "$IDLE_KB") | | ≤ $TARGET_IDLE_MB | $(verdict "$(mb "$IDLE_KB")" "$TARGET_IDLE_MB") |"
echo "| gateway RSS after the rate and max runs (MB) | | $(mb "$WARM_IDLE_KB") | | - | - |"
echo "| gateway RSS peak, $STREAMS concurrent streams (MB) | | $(mb "$PEAK_KB") | $STREAMS_OK/$STREAMS streams ok, $PEAK_CONNS open at once, ${STREAMS_SECS} s each | ≤ $TARGET_STREAMS_MB | $(verdict "$(mb "$PEAK_KB")" "$TARGET_STREAMS_MB") |"
echo "| gateway RSS ${SETTLE_SECS} s after the streams (MB) | | $(mb "$AFTER_KB") | +$AFTER_GROWTH_MB over idle | ≤ idle + $NEAR_IDLE_MB | $(verdict "$AFTER_GROWTH_MB" "$NEAR_IDLE_MB") |"
if [ ${#NOISE[@]} -gt 0 ]; then
    echo
    joined=$(printf '%s; ' "${NOISE[@]}")
    echo "noisy run: ${joined%; }. Compare the sides within a round (below), or run again on a quieter machine."
fi
if [ "$NGINX" = 1 ]; then
    echo
    echo "reference proxy, same runs: nginx $("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///') (1 worker, upstream keep-alive)" \
        "adds p50 $(minus "$N_P50" "$D_P50") µs, p99 $(minus "$N_P99" "$D_P99") µs" \
        "(nginx p50 $(int "$N_P50") µs, p99 $(int "$N_P99") µs, $(pct "$N_OK") 200s);" \
        "CPU per request $N_CPU_US µs; max ${MAX[nginx]} req/s"
fi
if [ "$PASSTHROUGH" = 1 ]; then
    echo
    echo "HTTP stack alone, same runs: the pass-through proxy (static_upstream --forward, $PASSTHROUGH_THREADS thread(s))" \
        "adds p50 $(minus "$P_P50" "$D_P50") µs, p99 $(minus "$P_P99" "$D_P99") µs" \
        "(p50 $(int "$P_P50") µs, p99 $(int "$P_P99") µs, $(pct "$P_OK") 200s);" \
        "CPU per request $P_CPU_US µs; max ${MAX[passthrough]} req/s."
    echo "The gateway's own work (gateway − pass-through) adds p50 $(minus "$G_P50" "$P_P50") µs, p99 $(minus "$G_P99" "$P_P99") µs," \
        "CPU per request $(minus "$G_CPU_US" "$P_CPU_US") µs."
fi
if [ -n "$COMPARE_BIN" ]; then
    echo
    echo "compared build, same runs: $COMPARE_BIN adds p50 $(minus "$C_P50" "$D_P50") µs, p99 $(minus "$C_P99" "$D_P99") µs" \
        "(p50 $(int "$C_P50") µs, p99 $(int "$C_P99") µs, $(pct "$C_OK") 200s); CPU per request $C_CPU_US µs;" \
        "max ${MAX[compare]} req/s."
    echo "gateway − compared build: p50 $(minus "$G_P50" "$C_P50") µs, p99 $(minus "$G_P99" "$C_P99") µs," \
        "CPU per request $(minus "$G_CPU_US" "$C_CPU_US") µs (negative: the gateway build is the faster)."
fi
echo
echo "per round (µs, p50/p99):"
for round in $(seq 1 "$ROUNDS"); do
    line="  round $round:"
    for side in "${SIDES[@]}"; do
        line+=" $side $(field "$WORK/rate-$side-$round.json" '.latencyPercentiles.p50 * 1e6 | round')/$(field "$WORK/rate-$side-$round.json" '.latencyPercentiles.p99 * 1e6 | round')"
    done
    echo "$line"
done
echo "streams: $BYTES_PER_STREAM bytes each; RSS before the streams $(mb "$BEFORE_STREAMS_KB") MB, VmHWM (peak over the whole run) $(mb "$HWM_KB") MB;" \
    "gateway → upstream connections still open ${SETTLE_SECS} s after the streams: $POOLED_AFTER"
