#!/usr/bin/env bash
# Cost and quality of the smart router against always using the strongest model, on a labelled set of prompts.
#
#   scripts/bench-routing.sh
#
# The set, benches/data/routing_labelled.jsonl, is SYNTHETIC: made by benches/data/make_routing_set.py, whose
# header says where every label comes from (a prompt's class is the template category it was made from; each
# class's per-model quality and answer length were set by hand from one stated assumption; no model was run).
# No public routing benchmark ships its data in a registry package (RouteLLM's PyPI wheel has none; it
# downloads its data at run time), and nothing else can be fetched on these machines.
#
# The router is chitty_core::router::SmartRouter, built like a `[[routers]]` table (a long-context rule and a
# k-NN classifier over the training split's embeddings), run in-process on every test prompt with the
# testkit's bag-of-words embedding (benches/routing_quality.rs says what that does and does not show). It
# prints cost and quality against always gpt-4o, always gpt-4o-mini and a per-prompt oracle.
# Settings (environment): LTO (false, see bench-report.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_PROFILE_BENCH_LTO=${LTO:-false}
export CARGO_PROFILE_BENCH_CODEGEN_UNITS=16
# The data file must be what its generator writes: a hand edit would make the labels undocumented.
if command -v python3 >/dev/null; then
    python3 benches/data/make_routing_set.py | cmp -s - benches/data/routing_labelled.jsonl ||
        { echo "bench-routing: benches/data/routing_labelled.jsonl differs from make_routing_set.py's output" >&2; exit 1; }
fi
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
cargo bench --bench routing_quality
