#!/usr/bin/env bash
# Ack latency of the webhook example over HTTP: drives a steady ~2,000 deliveries/s of signed 25 KB
# pull_request payloads (a fresh X-GitHub-Delivery per request, so each one is verified, claimed and
# enqueued) with wrk, and prints ack latency p50/p99 and req/s. Target: p99 <= 1 ms.
#
#   scripts/bench-webhook.sh                 # 2 rounds of 20 s at ~2,000/s
#   DURATION=60s ROUNDS=1 CONNECTIONS=42 DELAY_MS=20 scripts/bench-webhook.sh
#
# With HANDLERS=1 (the default) the same load also goes to the github_app example, offline (mock
# GitHub API and a built-in model in the same process), with every ready-made handler registered
# (installations, push analysis, pull request review, issue triage): the handlers run after the 202,
# so its ack latency should match the plain webhook example's. HANDLERS=0 leaves it out.
#
# For reference, the same load also goes to nginx answering 202 without doing anything (when nginx
# is installed), alternating with the examples: the floor that the machine, loopback and wrk give.
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
HANDLERS="${HANDLERS:-1}"
# The github_app example's offline mode takes deliveries signed with chitty_github::testing::TEST_SECRET.
SECRET="chitty-test-webhook-secret"
TARGET="${CARGO_TARGET_DIR:-target}"
WORK="$(mktemp -d)"
trap 'kill "${SERVER_PID:-}" "${APP_PID:-}" "${NGINX_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  (apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null
fi

if [ "$HANDLERS" = 1 ]; then
  cargo build --quiet --release --example webhook --example github_app --features github
else
  cargo build --quiet --release --example webhook --features github
fi

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

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until the server $2 (pid) on port $1 answers a signed delivery with 202: the endpoint must be
# ours before any load is sent.
wait_ready() {
  for _ in $(seq 300); do
    kill -0 "$2" 2>/dev/null || { echo "$3 exited (is port $1 taken?)" >&2; exit 1; }
    status="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/api/github/webhooks" \
      -H 'Content-Type: application/json' -H 'X-GitHub-Event: pull_request' -H "X-GitHub-Delivery: ready-$$-$1" \
      -H "X-Hub-Signature-256: $(cat "$WORK/signature")" --data-binary @"$WORK/body.json" || true)"
    if [ "$status" = 202 ]; then return 0; fi
    sleep 0.1
  done
  echo "$3 did not answer 202 on port $1" >&2
  exit 1
}

GITHUB_WEBHOOK_SECRET="$SECRET" WEBHOOK_ADDR="127.0.0.1:$PORT" RUST_LOG=warn \
  "$TARGET/release/examples/webhook" &
SERVER_PID=$!
wait_ready "$PORT" "$SERVER_PID" "the webhook example"

APP_PORT=""
if [ "$HANDLERS" = 1 ]; then
  APP_PORT="$(free_port)"
  # Offline: no GitHub variables, so the App talks to the mock GitHub API and the built-in model.
  env -u GITHUB_APP_ID -u GITHUB_APP_CLIENT_ID -u PUBLIC_URL -u DATABASE_URL -u CHITTY_LLM_BASE_URL \
    -u CHITTY_GITHUB_CONFIG GITHUB_APP_ADDR="127.0.0.1:$APP_PORT" RUST_LOG=warn \
    "$TARGET/release/examples/github_app" >"$WORK/github_app.log" 2>&1 &
  APP_PID=$!
  wait_ready "$APP_PORT" "$APP_PID" "the github_app example"
fi

NGINX_PORT=""
if command -v nginx >/dev/null; then
  NGINX_PORT="$(free_port)"
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

echo "warm-up (3 s each)" >&2
measure "$PORT" 3s >/dev/null
[ -z "$APP_PORT" ] || measure "$APP_PORT" 3s >/dev/null
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
  if [ -n "$APP_PORT" ]; then
    app="$(measure "$APP_PORT" "$DURATION")"
    echo "round $round github_app example (handlers registered): $app" | tr '\n' ' ' >&2; echo >&2
    if ! echo "$app" | grep -q 'non2xx=0 socket_errors=0'; then
      echo "some deliveries to the github_app example were not acknowledged with 2xx; the figures are not valid" >&2
      exit 1
    fi
    report+="round $round, github_app example, handlers registered:"$'\n'"$app"$'\n'
  fi
  if [ -n "$NGINX_PORT" ]; then
    floor="$(measure "$NGINX_PORT" "$DURATION")"
    echo "round $round nginx return 202: $floor" | tr '\n' ' ' >&2; echo >&2
    report+="round $round, nginx return 202 (reference):"$'\n'"$floor"$'\n'
  fi
done

cat <<MD

### Webhook ack latency over HTTP ($(date -u +%Y-%m-%d))

\`scripts/bench-webhook.sh\` (DURATION=$DURATION ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS mean DELAY_MS=$DELAY_MS, wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), release builds of \`examples/webhook.rs\` and (HANDLERS=$HANDLERS) \`examples/github_app.rs\` offline with every ready-made handler registered, in-memory de-duplication, in-process queue, ${BODY_BYTES}-byte signed \`pull_request\` bodies, a fresh delivery GUID per request). Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load generator on the same machine; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).

\`\`\`
$report\`\`\`
MD
