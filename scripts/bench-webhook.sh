#!/usr/bin/env bash
# Ack latency of the webhook example over HTTP: drives a steady ~2,000 deliveries/s of signed 25 KB
# pull_request payloads (a fresh X-GitHub-Delivery per request, so each one is verified, claimed and
# enqueued) with wrk, and prints ack latency p50/p99 and req/s. Target: p99 <= 1 ms.
#
#   scripts/bench-webhook.sh                 # 2 rounds of 20 s at ~2,000/s
#   DURATION=60s ROUNDS=1 CONNECTIONS=42 DELAY_MS=20 scripts/bench-webhook.sh
#
# For reference, the same load also goes to nginx answering 202 without doing anything (when nginx
# is installed), alternating with the example: the floor that the machine, loopback and wrk give.
#
# The rate is CONNECTIONS / (DELAY_MS + latency): each connection waits a random time (exponential,
# mean DELAY_MS) between requests, so arrivals are Poisson-like rather than in bursts.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-20s}"
ROUNDS="${ROUNDS:-2}"
CONNECTIONS="${CONNECTIONS:-42}"
DELAY_MS="${DELAY_MS:-20}"
PORT="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
BODY_BYTES="${BODY_BYTES:-25600}"
SECRET="bench-webhook-secret-$$"
WORK="$(mktemp -d)"
trap 'kill "${SERVER_PID:-}" "${NGINX_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  (apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null
fi

cargo build --quiet --release --example webhook --features github

# A realistic pull_request.opened payload, padded in the PR body to BODY_BYTES, and its signature.
python3 - "$WORK" "$BODY_BYTES" "$SECRET" <<'PY'
import hashlib, hmac, json, sys
work, size, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
payload = json.load(open("chitty-github/tests/fixtures/pull_request.opened.json"))
base = len(json.dumps(payload, separators=(",", ":")).encode())
payload["pull_request"]["body"] += " " + "x" * max(0, size - base - 1)
body = json.dumps(payload, separators=(",", ":")).encode()
assert len(body) == size, len(body)
open(f"{work}/body.json", "wb").write(body)
sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
open(f"{work}/signature", "w").write(sig)
PY

cat > "$WORK/deliveries.lua" <<LUA
local f = assert(io.open("$WORK/body.json", "rb"))
local body = f:read("*a")
f:close()
local signature = "$(cat "$WORK/signature")"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
function request()
  n = n + 1
  return wrk.format("POST", "/api/github/webhooks", {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "GitHub-Hookshot/bench",
    ["X-GitHub-Event"] = "pull_request",
    ["X-GitHub-Delivery"] = string.format("%d-%d-%d", $$, tid, n),
    ["X-GitHub-Hook-ID"] = "109948940",
    ["X-Hub-Signature-256"] = signature,
  }, body)
end
function init(args)
  math.randomseed(os.time() * 1000 + tid)
end
-- Exponential waits (mean DELAY_MS) make arrivals Poisson-like; a fixed wait keeps all connections
-- in phase and turns the load into bursts of CONNECTIONS requests at once.
function delay()
  return math.floor(-math.log(1 - math.random()) * $DELAY_MS + 0.5)
end
function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format("requests=%d seconds=%.1f rps=%.0f non2xx=%d socket_errors=%d\n",
    summary.requests, seconds, summary.requests / seconds, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("ack_latency_us p50=%d p90=%d p99=%d p99.9=%d max=%d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
LUA

GITHUB_WEBHOOK_SECRET="$SECRET" WEBHOOK_ADDR="127.0.0.1:$PORT" RUST_LOG=warn \
  target/release/examples/webhook &
SERVER_PID=$!
# The endpoint must be ours and answer a signed delivery with 202 before any load is sent.
ready=""
for _ in $(seq 100); do
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "the webhook example exited (is port $PORT taken?)" >&2; exit 1; }
  status="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/github/webhooks" \
    -H 'Content-Type: application/json' -H 'X-GitHub-Event: pull_request' -H "X-GitHub-Delivery: ready-$$" \
    -H "X-Hub-Signature-256: $(cat "$WORK/signature")" --data-binary @"$WORK/body.json" || true)"
  if [ "$status" = 202 ]; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "the webhook example did not answer 202 on port $PORT" >&2; exit 1; }

NGINX_PORT=""
if command -v nginx >/dev/null; then
  NGINX_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  client_max_body_size 30m;
  client_body_buffer_size 64k;
  server { listen 127.0.0.1:$NGINX_PORT; location / { return 202 '{"status":"accepted"}'; } }
}
NGINX
  nginx -c "$WORK/nginx.conf" -p "$WORK" &
  NGINX_PID=$!
  sleep 0.5
fi

# Prints "requests=… rps=… non2xx=…" and "ack_latency_us p50=… p99=…" for one run against $1.
measure() {
  local result
  result="$(wrk -t1 -c"$CONNECTIONS" -d"$2" -s "$WORK/deliveries.lua" "http://127.0.0.1:$1")"
  echo "$result" | grep -E '^(requests=|ack_latency_us )'
}

echo "warm-up (3 s)" >&2
measure "$PORT" 3s >/dev/null
echo "measuring: $ROUNDS round(s) of $DURATION, $CONNECTIONS connections, mean ${DELAY_MS} ms between requests per connection, ${BODY_BYTES}-byte bodies" >&2
report=""
for round in $(seq "$ROUNDS"); do
  ours="$(measure "$PORT" "$DURATION")"
  echo "round $round webhook example: $ours" | tr '\n' ' ' >&2; echo >&2
  if ! echo "$ours" | grep -q 'non2xx=0 socket_errors=0'; then
    echo "some deliveries were not acknowledged with 2xx; the figures are not valid" >&2
    exit 1
  fi
  report+="round $round, webhook example:"$'\n'"$ours"$'\n'
  if [ -n "$NGINX_PORT" ]; then
    floor="$(measure "$NGINX_PORT" "$DURATION")"
    echo "round $round nginx return 202: $floor" | tr '\n' ' ' >&2; echo >&2
    report+="round $round, nginx return 202 (reference):"$'\n'"$floor"$'\n'
  fi
done

cat <<MD

### Webhook ack latency over HTTP ($(date -u +%Y-%m-%d))

\`scripts/bench-webhook.sh\` (DURATION=$DURATION ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS mean DELAY_MS=$DELAY_MS, wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), release build of \`examples/webhook.rs\`, in-memory de-duplication, in-process queue, ${BODY_BYTES}-byte signed \`pull_request\` bodies, a fresh delivery GUID per request). Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load generator on the same machine; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).

\`\`\`
$report\`\`\`
MD
