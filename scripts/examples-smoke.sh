#!/usr/bin/env bash
# Runs the examples CI does not already drive (parity runs `gateway`; tests drive `webhook`'s router and the
# `custom_provider` program):
# `in_process`, the `delta` CLI end to end, `static_upstream` answering one request, and the gateway serving
# /metrics on its own address behind a token.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "examples: in_process"
cargo run --quiet --example in_process

echo "examples: delta (generate, compress, inspect, verify, decompress, compare, refusals, -o -)"
cargo build --quiet --example delta --features delta
delta=./target/debug/examples/delta
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$delta" generate --bytes 8M "$work/base.safetensors" "$work/ft.safetensors" >/dev/null
"$delta" compress "$work/base.safetensors" "$work/ft.safetensors" -o "$work/ft.delta" | tail -1
"$delta" inspect "$work/ft.delta" >/dev/null
"$delta" verify "$work/base.safetensors" "$work/ft.delta" | tail -1
"$delta" decompress "$work/base.safetensors" "$work/ft.delta" -o "$work/back.safetensors" | tail -1
cmp "$work/ft.safetensors" "$work/back.safetensors"
set +e
"$delta" decompress "$work/ft.safetensors" "$work/ft.delta" -o "$work/wrong.safetensors" >/dev/null 2>&1
code=$?
set -e
if [ "$code" != 5 ]; then echo "examples: delta with the wrong base exited $code, expected 5" >&2; exit 1; fi
if [ -e "$work/wrong.safetensors" ]; then echo "examples: a failed decompress left a file behind" >&2; exit 1; fi
set +e
"$delta" compress "$work/base.safetensors" "$work/ft.safetensors" -o "$work/base.safetensors" >/dev/null 2>&1
code=$?
set -e
if [ "$code" != 7 ]; then echo "examples: delta with the base as its output exited $code, expected 7" >&2; exit 1; fi
# The refused run left the base intact: a streamed decompress against it still gives the fine-tune back.
"$delta" decompress "$work/base.safetensors" "$work/ft.delta" -o - 2>/dev/null | cmp - "$work/ft.safetensors"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Posts a chat request for `model` to the server at `port` until it answers (at most 5 s) and checks that the
# answer is a chat completion for that model with usage.
chat_answers() { # port model
  local out="$work/answer-$1.json"
  for _ in $(seq 1 50); do
    if curl -fsS "http://127.0.0.1:$1/v1/chat/completions" -H 'Content-Type: application/json' \
        -d "{\"model\":\"$2\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" -o "$out" 2>/dev/null; then
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["object"]=="chat.completion" and d["model"]==sys.argv[2] and d["usage"]["total_tokens"]>0, d' "$out" "$2"
      return
    fi
    sleep 0.1
  done
  echo "examples: nothing answered a chat request on port $1 within 5 s" >&2
  exit 1
}

echo "examples: static_upstream"
cargo build --quiet --example static_upstream
port=$(free_port)
./target/debug/examples/static_upstream --addr "127.0.0.1:$port" >/dev/null 2>&1 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true; rm -rf "$work"' EXIT
chat_answers "$port" m

echo "examples: static_upstream --forward (the benchmark's pass-through proxy)"
proxy_port=$(free_port)
./target/debug/examples/static_upstream --addr "127.0.0.1:$proxy_port" --forward "http://127.0.0.1:$port" >/dev/null 2>&1 &
proxy=$!
trap 'kill $upstream $proxy 2>/dev/null || true; rm -rf "$work"' EXIT
chat_answers "$proxy_port" through
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$proxy_port/v1/chat/completions" -d '{')
if [ "$code" != 400 ]; then echo "examples: the upstream's 400 came through the proxy as $code" >&2; exit 1; fi
echo "examples: gateway with /metrics on its own address behind a token"
cargo build --quiet --example gateway
gateway_port=$(free_port)
metrics_port=$(free_port)
sed "s|^\[server\]|[server]\nmetrics_addr = \"127.0.0.1:$metrics_port\"\nmetrics_token = \"\${CHITTY_SMOKE_METRICS_TOKEN}\"|" \
  examples/gateway.toml >"$work/gateway.toml"
CHITTY_SMOKE_METRICS_TOKEN=scrape-me ./target/debug/examples/gateway --config "$work/gateway.toml" \
  --addr "127.0.0.1:$gateway_port" >"$work/gateway.log" 2>&1 &
gateway=$!
trap 'kill $upstream $proxy $gateway 2>/dev/null || true; rm -rf "$work"' EXIT
status_of() { curl -sS -o /dev/null -w '%{http_code}' "$@"; }
for _ in $(seq 1 100); do
  [ "$(status_of "http://127.0.0.1:$gateway_port/healthz" 2>/dev/null)" = 200 ] && break
  sleep 0.1
done
expect() { # what code url [curl args]
  local what=$1 want=$2; shift 2
  local got; got=$(status_of "$@")
  if [ "$got" != "$want" ]; then echo "examples: $what answered $got, expected $want" >&2; cat "$work/gateway.log" >&2; exit 1; fi
}
expect "/metrics on the API address" 404 "http://127.0.0.1:$gateway_port/metrics"
expect "/metrics without the token" 401 "http://127.0.0.1:$metrics_port/metrics"
expect "/metrics with a wrong token" 401 -H 'Authorization: Bearer nope' "http://127.0.0.1:$metrics_port/metrics"
expect "/metrics with the token" 200 -H 'Authorization: Bearer scrape-me' "http://127.0.0.1:$metrics_port/metrics"
echo "examples: ok"
