#!/usr/bin/env bash
# Model-repository benchmark through the CLI: a generated base repository in BASE_SHARDS safetensors
# shards and a fine-tune in TARGET_SHARDS (sharded differently, so no shard lines up), with config,
# tokenizer, generation config, README and a subdirectory, as `delta generate --base-shards N
# --target-shards M` writes them (chitty_testkit::model_pairs::write_repo_pair).
# Prints: archive size (% of the fine-tune's bytes), compress / verify / decompress wall time, MB/s of
# the fine-tune, CPU seconds and peak RSS (/usr/bin/time -v), then an interrupted compress (SIGINT once
# all shards but one are done) and the resumed run: files reused, its time, and that its archive is byte
# for byte the uninterrupted one. Every decompressed file is compared with `cmp`.
#
# Usage: scripts/bench-repo-delta.sh [SIZE] [BASE_SHARDS] [TARGET_SHARDS] [DTYPE]   (defaults: 1G 5 3 bf16)
# Environment: DATA_DIR (default .bench/repo), KEEP=1 keeps the repositories and archives;
#   CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

size=${1:-1G}
base_shards=${2:-5}
target_shards=${3:-3}
dtype=${4:-bf16}
dir=${DATA_DIR:-.bench/repo}
mkdir -p "$dir"
base="$dir/base-$dtype-$size-$base_shards"
target="$dir/ft-$dtype-$size-$target_shards"
archive="$dir/ft-$size.repodelta"
restored="$dir/restored-$size"

cargo build --release --example delta --features delta >&2
bin=${CARGO_TARGET_DIR:-target}/release/examples/delta

if [ ! -d "$target" ]; then
  rm -rf "$base" "$target"
  "$bin" generate --bytes "$size" --dtype "$dtype" --base-shards "$base_shards" --target-shards "$target_shards" \
    "$base" "$target" >&2
fi
target_bytes=$(du -b -s "$target" | cut -f1)
base_bytes=$(du -b -s "$base" | cut -f1)

# Runs a command under /usr/bin/time -v; sets `last` (its stdout's last line), `wall`, `cpu`, `rss_mb`.
timed() {
  local log out
  log=$(mktemp)
  out=$(/usr/bin/time -v "$@" 2>"$log") || { cat "$log" >&2; rm -f "$log"; return 1; }
  last=$(tail -n 1 <<<"$out")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s}' "$log")
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u+s}' "$log")
  rss_mb=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log")
  rm -f "$log"
}
mbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.0f", b / s / 1e6}'; }
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }
# Inputs are read into the page cache first: the figures are for warm files.
warm() { find "$@" -type f -exec cat {} + >/dev/null; }

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "pair: base $base ($base_bytes bytes, $base_shards shards) -> fine-tune $target ($target_bytes bytes, $target_shards shards), $dtype"
echo
echo "| step | wall s | CPU s | MB/s of the fine-tune | peak RSS MB | archive |"
echo "|---|---|---|---|---|---|"

rm -rf "$archive" "$archive.chitty-partial" "$restored" "$restored.chitty-partial"
warm "$base" "$target"
timed "$bin" --json compress "$base" "$target" -o "$archive"
archive_bytes=$(stat -c %s "$archive")
pct=$(awk -v a="$archive_bytes" -v b="$target_bytes" 'BEGIN {printf "%.2f", 100 * a / b}')
echo "| compress | $wall | $cpu | $(mbps "$target_bytes" "$wall") | $rss_mb | $archive_bytes bytes ($pct % of the fine-tune) |"
warm "$base" "$archive"
timed "$bin" --json verify "$base" "$archive"
echo "| verify (decode, every check, no output) | $wall | $cpu | $(mbps "$target_bytes" "$wall") | $rss_mb | |"
warm "$base" "$archive"
timed "$bin" --json decompress "$base" "$archive" -o "$restored"
echo "| decompress (files fsynced) | $wall | $cpu | $(mbps "$target_bytes" "$wall") | $rss_mb | |"
(cd "$target" && find . -type f | sort) >"$dir/names.target"
(cd "$restored" && find . -type f | sort) >"$dir/names.restored"
cmp "$dir/names.target" "$dir/names.restored"
while read -r name; do cmp "$target/$name" "$restored/$name"; done <"$dir/names.target"
echo
echo "round trip: $(wc -l <"$dir/names.target") files, every one identical (cmp)"

# Interrupt a compress once all but one of the fine-tune's shards are recorded done, then resume it.
mv "$archive" "$archive.full"
warm "$base" "$target"
"$bin" compress "$base" "$target" -o "$archive" >/dev/null 2>&1 &
pid=$!
state="$archive.chitty-partial/state.json"
start=$(date +%s.%N)
want=$(( target_shards > 1 ? target_shards - 1 : 1 ))
until [ -f "$state" ] && [ "$(grep -o '"kind":"model"' "$state" | wc -l)" -ge "$want" ]; do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
kill -INT "$pid" 2>/dev/null || true
code=0
wait "$pid" || code=$?
interrupted_after=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}')
left=$(find "$archive.chitty-partial" -name 'entry-*.delta' 2>/dev/null | wc -l)
timed "$bin" --json compress "$base" "$target" -o "$archive"
reused=$(field files_reused "$last")
files=$(field files "$last")
cmp "$archive" "$archive.full" && same=identical || same=DIFFERENT
echo "interrupted compress: SIGINT after ${interrupted_after} s (exit $code), $left finished entry archives kept"
echo "resumed compress: $reused of $files files reused, $wall s wall, $cpu CPU s, peak RSS $rss_mb MB; archive $same to the uninterrupted one"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "${KEEP:-0}" != 1 ]; then
  rm -rf "$restored" "$archive" "$archive.full" "$archive.chitty-partial" "$dir/names.target" "$dir/names.restored"
fi
