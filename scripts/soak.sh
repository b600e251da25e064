#!/usr/bin/env bash
# A bounded soak of the example gateway: mixed traffic (plain and streamed chat, streamed legacy completions,
# embeddings, and streams the client abandons after the first event) at a steady rate against the offline
# example (its in-process mock upstream), sampling the gateway's RSS every SAMPLE_SECS. It fails when RSS
# trends upward after the warm-up, when the gateway dies, or when requests fail.
#
#   scripts/soak.sh                    # 5 minutes at 200 req/s
#   SOAK_SECS=60 PROFILE=debug scripts/soak.sh    # what .ci/run does (no release build)
#
# The trend: a least-squares line through the samples after the first WARMUP_PCT % of the run (pools, the
# cache and allocator arenas fill there); the soak fails when that line rises by more than MAX_GROWTH_MB over
# the measured window. The cache sees a fixed set of 200 prompts, so it fills once and stays that size.
#
# Settings (environment): SOAK_SECS (300), RATE (200 req/s), SAMPLE_SECS (10), WARMUP_PCT (20),
# MAX_GROWTH_MB (8), MAX_FAILED_PCT (1: requests answered 5xx or broken off, of all sent), PORT (19280),
# GATEWAY_WORKERS (the gateway's serving threads; default 1), PROFILE (release, or debug), SKIP_BUILD (0),
# GATEWAY_BIN (another build of the gateway example to soak, e.g. an older commit's).
set -euo pipefail

SOAK_SECS=${SOAK_SECS:-300}
RATE=${RATE:-200}
SAMPLE_SECS=${SAMPLE_SECS:-10}
WARMUP_PCT=${WARMUP_PCT:-20}
MAX_GROWTH_MB=${MAX_GROWTH_MB:-8}
MAX_FAILED_PCT=${MAX_FAILED_PCT:-1}
PORT=${PORT:-19280}
GATEWAY_WORKERS=${GATEWAY_WORKERS:-1}
PROFILE=${PROFILE:-release}
SKIP_BUILD=${SKIP_BUILD:-0}
KEY=sk-chitty-soak

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
die() {
    echo "soak: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

case "$PROFILE" in
release) profile_flag=(--release) ;;
debug) profile_flag=() ;;
*) die "PROFILE must be release or debug" ;;
esac
if [ "$SKIP_BUILD" != 1 ]; then
    log "building the example gateway ($PROFILE)"
    cargo build "${profile_flag[@]}" --example gateway >&2 || die "build failed"
fi
GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/$PROFILE/examples/gateway}
[ -x "$GATEWAY_BIN" ] || die "$GATEWAY_BIN is missing"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "port $PORT is in use (set PORT)"; fi
ulimit -n 65536 2>/dev/null || true

WORK=$(mktemp -d -t chitty-soak.XXXXXX)
GATEWAY_PID=
LOAD_PID=
cleanup() {
    [ -z "$LOAD_PID" ] || kill "$LOAD_PID" 2>/dev/null || true
    [ -z "$GATEWAY_PID" ] || kill "$GATEWAY_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The example's own models and mock upstream, and a tenant whose budget outlasts any soak.
cat >"$WORK/soak.toml" <<TOML
[server]
addr = "127.0.0.1:$PORT"

[cache]
backend = "memory"
max_bytes = 268435456

[budgets]
backend = "memory"

[[providers]]
name = "mock"
kind = "mock"

[[models]]
name = "chitty-mock"
routes = [{ provider = "mock", model = "chitty-mock" }]
price = { input = "0.15", output = "0.60" }
cache = "deterministic"
max_output_tokens = 512

[[models]]
name = "chitty-mock-embed"
kind = "embedding"
routes = [{ provider = "mock", model = "chitty-mock-embed" }]
price = { input = "0.02", output = "0" }
cache = "deterministic"

[[tenants]]
id = "soak"
key_sha256 = ["$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)"]
budget_usd = "1000000000"
TOML

RUST_LOG=warn CHITTY_WORKERS="$GATEWAY_WORKERS" "$GATEWAY_BIN" --config "$WORK/soak.toml" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then break; fi
    kill -0 "$GATEWAY_PID" 2>/dev/null || { cat "$WORK/gateway.log" >&2; die "the gateway exited at start"; }
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || die "the gateway did not answer /healthz"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
IDLE_KB=$(rss_kb "$GATEWAY_PID")
log "soak: ${SOAK_SECS} s at ${RATE} req/s, RSS sampled every ${SAMPLE_SECS} s (idle: $((IDLE_KB / 1024)) MB)"
python3 "$ROOT/scripts/lib/soak_load.py" --port "$PORT" --key "$KEY" --seconds "$SOAK_SECS" --rate "$RATE" \
    --report "$WORK/load.json" &
LOAD_PID=$!
STARTED=$(date +%s.%N)
: >"$WORK/samples"
while kill -0 "$LOAD_PID" 2>/dev/null; do
    kill -0 "$GATEWAY_PID" 2>/dev/null || { cat "$WORK/gateway.log" >&2; die "the gateway died during the soak"; }
    now=$(date +%s.%N)
    echo "$(awk -v a="$now" -v b="$STARTED" 'BEGIN { printf "%.1f", a - b }') $(rss_kb "$GATEWAY_PID")" >>"$WORK/samples"
    # Sleep in short steps so that the end of the load is noticed at once.
    for _ in $(seq 1 $((SAMPLE_SECS * 10))); do
        kill -0 "$LOAD_PID" 2>/dev/null || break
        sleep 0.1
    done
done
wait "$LOAD_PID" || die "the load generator failed"
LOAD_PID=
kill -0 "$GATEWAY_PID" 2>/dev/null || die "the gateway died during the soak"
sleep 5
AFTER_KB=$(rss_kb "$GATEWAY_PID")

python3 - "$WORK/samples" "$WORK/load.json" "$IDLE_KB" "$AFTER_KB" "$WARMUP_PCT" "$MAX_GROWTH_MB" \
    "$MAX_FAILED_PCT" "$SOAK_SECS" "$RATE" <<'PY'
import json
import sys

samples_file, load_file, idle_kb, after_kb, warmup_pct, max_growth_mb, max_failed_pct, secs, rate = sys.argv[1:]
samples = [tuple(map(float, line.split())) for line in open(samples_file) if line.strip()]
load = json.load(open(load_file))
print(f"soak: {float(secs):.0f} s at {float(rate):.0f} req/s, {load['sent']} requests sent")
print("RSS samples (s, MB):", "  ".join(f"{t:.0f}:{kb / 1024:.1f}" for t, kb in samples))
print(f"RSS idle {int(idle_kb) / 1024:.1f} MB, peak {max(kb for _, kb in samples) / 1024:.1f} MB, "
      f"5 s after the load {int(after_kb) / 1024:.1f} MB")
measured = [s for s in samples if s[0] >= float(secs) * float(warmup_pct) / 100]
failed = False
if len(measured) < 3:
    print(f"RSS trend: only {len(measured)} samples after the warm-up; not judged")
    failed = True
else:
    n = len(measured)
    mean_t = sum(t for t, _ in measured) / n
    mean_kb = sum(kb for _, kb in measured) / n
    slope = sum((t - mean_t) * (kb - mean_kb) for t, kb in measured) / sum((t - mean_t) ** 2 for t, _ in measured)
    window = measured[-1][0] - measured[0][0]
    growth_mb = slope * window / 1024
    verdict = "PASS" if growth_mb <= float(max_growth_mb) else "FAIL"
    print(f"RSS trend after the warm-up: {slope * 60 / 1024:+.2f} MB/min, {growth_mb:+.2f} MB over {window:.0f} s "
          f"(limit +{float(max_growth_mb):.0f} MB): {verdict}")
    failed |= verdict == "FAIL"
counts = load["counts"]
by_status = {}
for name, count in counts.items():
    status = name.rsplit(":", 1)[1]
    by_status[status] = by_status.get(status, 0) + count
print("statuses:", ", ".join(f"{s}: {c}" for s, c in sorted(by_status.items())))
print("by kind:", ", ".join(f"{k} {c}" for k, c in sorted(counts.items())))
bad = sum(c for s, c in by_status.items() if s == "error" or s.startswith("5") or s.endswith("truncated"))
bad_pct = 100 * bad / max(load["sent"], 1)
verdict = "PASS" if bad_pct <= float(max_failed_pct) else "FAIL"
print(f"failed requests (5xx, broken off, truncated streams): {bad} ({bad_pct:.2f} %, limit "
      f"{float(max_failed_pct):.0f} %): {verdict}")
failed |= verdict == "FAIL"
sys.exit(1 if failed else 0)
PY
