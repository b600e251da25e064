# Shared by scripts/bench-gateway.sh and scripts/callgrind-gateway.sh (sourced, not run): the gateway
# configuration both measure, and the request body both send, so that their figures describe the same work.

# The chat request of every fixed-rate and callgrind run: a system and a user message, 150 bytes.
GATEWAY_BENCH_BODY='{"model":"bench","messages":[{"role":"system","content":"You are a terse assistant."},{"role":"user","content":"Say hello in five words."}],"temperature":0.2}'

# Writes a gateway TOML to FILE: one `openai` provider at the static upstream, one priced model with the cache
# off (so every request goes upstream), one tenant whose key is KEY (stored as its SHA-256), in-memory backends.
write_gateway_bench_config() { # file gateway-port upstream-port key
    cat >"$1" <<TOML
# Written by scripts/lib/gateway-bench.sh: every request goes to the static upstream (cache off).
[server]
addr = "127.0.0.1:$2"

[cache]
backend = "memory"

[budgets]
backend = "memory"

[[providers]]
name = "static"
kind = "openai"
base_url = "http://127.0.0.1:$3/v1"

[[models]]
name = "bench"
routes = [{ provider = "static", model = "bench" }]
price = { input = "0.15", output = "0.60" }
cache = "off"
max_output_tokens = 256

[[tenants]]
id = "bench"
key_sha256 = ["$(printf '%s' "$4" | sha256sum | cut -d' ' -f1)"]
budget_usd = "1000000000"
TOML
}
