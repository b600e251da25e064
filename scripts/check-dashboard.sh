#!/usr/bin/env bash
# Evaluates every expression of docs/grafana/chitty-gateway.json against a real Prometheus scraping the example
# gateway under load: each must parse and return data.
#
# Installs the Debian package `prometheus` if it is missing (apt-get; root or sudo), builds and starts the
# example gateway with scripts/lib/dashboard-gateway.toml (metrics on their own port behind a bearer token, an
# offline mock upstream, a dead upstream to fall back from, tenants without budget and over their rate limit),
# starts Prometheus on a free loopback port scraping it every second, drives a short load, and evaluates each
# panel target and variable query through /api/v1/query with Grafana's variables substituted
# (scripts/lib/dashboard_check.py). Prints a table; exits non-zero on any failure. About 30 s after the build.
#
# Environment: LOAD_SECS (default 12), CARGO_TARGET_DIR (default target), PROFILE (debug or release; debug),
# DASHBOARD (another dashboard JSON to check).
set -euo pipefail
cd "$(dirname "$0")/.."

load_secs=${LOAD_SECS:-12}
profile=${PROFILE:-debug}
target_dir=${CARGO_TARGET_DIR:-target}
dashboard=${DASHBOARD:-docs/grafana/chitty-gateway.json}

if ! command -v prometheus >/dev/null; then
  echo "check-dashboard: installing the Debian package prometheus"
  sudo_=""
  if [ "$(id -u)" != 0 ]; then sudo_="sudo -n"; fi
  # The package's service is not wanted here: the script runs its own instance.
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null ||
    { $sudo_ apt-get update -q >/dev/null && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }
fi
prometheus --version 2>&1 | head -1

echo "check-dashboard: building the example gateway ($profile)"
release_flag=()
if [ "$profile" = release ]; then release_flag=(--release); fi
cargo build --quiet "${release_flag[@]}" --example gateway
gateway_bin="$target_dir/$profile/examples/gateway"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
gateway_port=$(free_port)
metrics_port=$(free_port)
prometheus_port=$(free_port)
# A port that was free a moment ago and that nothing listens on: the dead upstream.
dead_port=$(free_port)
token="dashboard-$RANDOM$RANDOM"

sed -e "s/@DEAD_PORT@/$dead_port/" -e "s/@METRICS_PORT@/$metrics_port/" scripts/lib/dashboard-gateway.toml \
  >"$work/gateway.toml"
CHITTY_DASHBOARD_METRICS_TOKEN=$token RUST_LOG=warn "$gateway_bin" --config "$work/gateway.toml" \
  --addr "127.0.0.1:$gateway_port" --workers 1 >"$work/gateway.log" 2>&1 &
pids+=($!)

wait_for() { # what url [curl args]
  local what=$1 url=$2; shift 2
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "check-dashboard: $what did not answer at $url within 10 s" >&2
  cat "$work"/*.log >&2
  exit 1
}
wait_for "the gateway" "http://127.0.0.1:$gateway_port/healthz"
wait_for "the gateway's /metrics" "http://127.0.0.1:$metrics_port/metrics" -H "Authorization: Bearer $token"

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: chitty
    metrics_path: /metrics
    authorization:
      credentials: "$token"
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
prom="http://127.0.0.1:$prometheus_port"
wait_for "Prometheus" "$prom/-/ready"

# Prometheus must be scraping the gateway before the load, so that rates span it.
scraping() {
  curl -fsS "$prom/api/v1/query" --data-urlencode 'query=up{job="chitty"} == 1' |
    python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["data"]["result"] else 1)'
}
for _ in $(seq 1 100); do scraping && break; sleep 0.2; done
if ! scraping; then
  echo "check-dashboard: Prometheus is not scraping the gateway" >&2
  curl -sS "$prom/api/v1/targets" >&2 || true
  cat "$work/prometheus.log" >&2
  exit 1
fi

echo "check-dashboard: ${load_secs}s of load"
python3 scripts/lib/dashboard_check.py load "http://127.0.0.1:$gateway_port/v1" "$load_secs"
# The gauges refresh every 5 s; three more scrapes take in the last requests.
sleep 3

echo "check-dashboard: evaluating $dashboard"
python3 scripts/lib/dashboard_check.py evaluate "$prom" "$dashboard"
