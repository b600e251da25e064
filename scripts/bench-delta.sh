#!/usr/bin/env bash
# Side-by-side model-delta benchmark on one generated base / fine-tune pair:
#   chitty lossless (compress, verify, decompress to a file), the plain recipe
#   "XOR + exponent / sign-mantissa byte planes + zstd-3", and zipnn's delta mode (installed from PyPI
#   into .bench/venv). Prints sizes as % of the target file, the order-0 entropy bound of the transformed
#   symbols, throughput, CPU seconds and peak RSS (/usr/bin/time -v).
#
# Usage: scripts/bench-delta.sh [SIZE] [DTYPE] [DELTA_SCALE]     (defaults: 1G bf16 1e-3)
# Environment: SKIP_ZIPNN=1 skips zipnn; KEEP=1 keeps the archives; CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

size=${1:-1G}
dtype=${2:-bf16}
scale=${3:-1e-3}
dir=.bench
mkdir -p "$dir"
base="$dir/base-$dtype-$size-$scale.safetensors"
target="$dir/ft-$dtype-$size-$scale.safetensors"
archive="$dir/ft-$dtype-$size-$scale.delta"
restored="$dir/ft-$dtype-$size-$scale.restored"

cargo build --release --example delta --features delta >&2
bin=${CARGO_TARGET_DIR:-target}/release/examples/delta

if [ ! -f "$target" ]; then
  "$bin" generate --bytes "$size" --dtype "$dtype" --delta-scale "$scale" "$base" "$target" >&2
fi
target_bytes=$(stat -c %s "$target")

# Runs a command under /usr/bin/time -v; prints its stdout's last line, then wall, CPU, peak RSS (which
# counts the resident pages of memory-mapped inputs) and peak anonymous memory (heap: sampled every 20 ms
# from /proc/PID/status RssAnon).
timed() {
  local log anon
  log=$(mktemp)
  anon=$(mktemp)
  local out
  out=$(
    /usr/bin/time -v "$@" 2>"$log" &
    tpid=$!
    peak=0
    while kill -0 "$tpid" 2>/dev/null; do
      for child in $(pgrep -P "$tpid"); do
        kb=$(awk '/^RssAnon/ {print $2}' "/proc/$child/status" 2>/dev/null || echo 0)
        [ "${kb:-0}" -gt "$peak" ] && peak=$kb
      done
      echo "$peak" > "$anon"
      sleep 0.02
    done
    wait "$tpid"
  )
  out=$(tail -n 1 <<<"$out")
  local wall cpu rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u+s}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log")
  local heap
  heap=$(awk '{printf "%.0f", $1/1024}' "$anon")
  rm -f "$log" "$anon"
  echo "$out wall=$wall cpu_s=$cpu peak_rss_mb=$rss peak_anon_mb=$heap"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "pair: $base -> $target ($target_bytes bytes, $dtype, delta scale $scale)"
echo

# Inputs are read into the page cache first: the figures are for warm files (this VM's cache drops pages,
# and a cold read of 2 GB from its disk takes longer than the work itself).
warm() { cat "$@" > /dev/null; }
warm "$base" "$target"
c=$(timed "$bin" compress "$base" "$target" -o "$archive")
warm "$base" "$archive"
v=$(timed "$bin" verify "$base" "$archive")
warm "$base" "$archive"
d=$(timed "$bin" decompress "$base" "$archive" -o "$restored")
cmp -s "$restored" "$target" && same=yes || same=NO
a=$("$bin" analyze "$base" "$target" --levels 1,3 | tail -n 1)

pct() { awk -v a="$1" -v b="$target_bytes" 'BEGIN {printf "%.2f%%", 100 * a / b}'; }
gbps() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.2f", b / s / 1e9}'; }
secs() { awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }' <<<"$1"; }

echo "| method | size | % of target | order-0 bound (changed tensors) | compress | decompress | peak RSS |"
echo "|---|---|---|---|---|---|---|"
cw=$(secs "$(field wall "$c")"); vw=$(secs "$(field wall "$v")"); dw=$(secs "$(field wall "$d")")
echo "| chitty lossless | $(field output_bytes "$c") | $(pct "$(field output_bytes "$c")") | $(field packed_h0_pct "$a")% of changed tensors (stored $(field packed_best_pct "$a")%) | $(gbps "$target_bytes" "$cw") GB/s wall, $(field cpu_s "$c") CPU s | verify $(gbps "$target_bytes" "$vw") GB/s wall, $(field cpu_s "$v") CPU s; to file $(gbps "$target_bytes" "$dw") GB/s (fsync incl.) | $(field peak_rss_mb "$c") / $(field peak_rss_mb "$v") MB incl. maps; heap $(field peak_anon_mb "$c") / $(field peak_anon_mb "$v") MB |"
echo "| recipe XOR + exp/sign-mant planes + zstd-3 | $(field recipe_file_bytes "$a") | $(pct "$(field recipe_file_bytes "$a")") | $(field recipe_h0_pct "$a")% of changed tensors (stored $(field recipe_zstd3_pct "$a")%) | - | - | - |"

if [ "${SKIP_ZIPNN:-0}" = 1 ]; then
  echo "| zipnn delta | skipped (SKIP_ZIPNN=1) | | | | | |"
else
  venv="$dir/venv"
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
  if ! "$venv/bin/python" -c 'import zipnn' 2>/dev/null; then
    "$venv/bin/pip" install -q zipnn >&2 || true
  fi
  if ! "$venv/bin/python" -c 'import zipnn' 2>/dev/null; then
    echo "| zipnn delta | not measured: \`pip install zipnn\` failed here | | | | | |"
  else
    # The program goes through a file: `timed` runs its command in the background, where a here-document
    # on stdin arrived empty (python then ran nothing and printed nothing).
    py=$(mktemp --suffix=.py)
    cat > "$py" <<'PY'
# zipnn's delta mode XORs equal-length byte buffers, so it runs per tensor: against the base tensor of the
# same name and size, else (resized, new tensors) against zeros, which is its plain byte-grouped mode
# (its non-delta bytearray path did not round-trip in 0.5.4 here). The header counts raw.
import json, struct, sys, time
from zipnn import ZipNN
base_path, target_path, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
names = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
def load(p):
    data = open(p, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    return data, 8 + n, header
b, bstart, bh = load(base_path)
t, tstart, th = load(target_path)
zipnn = ZipNN(input_format="byte", bytearray_dtype=names[dtype], delta_compressed_type="byte")
total, c_time, d_time, ok = tstart, 0.0, 0.0, True
for name, info in th.items():
    lo, hi = info["data_offsets"]
    tb = t[tstart + lo:tstart + hi]
    if len(tb) == 0:
        continue
    bi = bh.get(name)
    same = bi is not None and bi["data_offsets"][1] - bi["data_offsets"][0] == hi - lo and bi["dtype"] == info["dtype"]
    bb = b[bstart + bi["data_offsets"][0]:bstart + bi["data_offsets"][1]] if same else bytes(len(tb))
    s = time.perf_counter()
    comp = zipnn.compress(tb, delta_second_data=bb)
    c_time += time.perf_counter() - s
    s = time.perf_counter()
    ok &= bytes(zipnn.decompress(comp, delta_second_data=bb)) == tb
    d_time += time.perf_counter() - s
    total += len(comp)
print(f"result=ok op=zipnn output_bytes={total} compress_s={c_time:.2f} decompress_s={d_time:.2f} round_trip={'yes' if ok else 'NO'}")
PY
    z=$(timed "$venv/bin/python" "$py" "$base" "$target" "$dtype")
    rm -f "$py"
    zb=$(field output_bytes "$z")
    echo "| zipnn $("$venv/bin/pip" show zipnn 2>/dev/null | awk '/^Version/ {print $2}') delta (per tensor) | $zb | $(pct "$zb") | - | $(gbps "$target_bytes" "$(field compress_s "$z")") GB/s | $(gbps "$target_bytes" "$(field decompress_s "$z")") GB/s (round trip $(field round_trip "$z")) | $(field peak_rss_mb "$z") MB |"
  fi
fi
echo
echo "chitty round trip identical: $same"
echo "raw: compress: $c"
echo "raw: verify: $v"
echo "raw: decompress: $d"
echo "raw: analyze: $a"
[ "${KEEP:-0}" = 1 ] || rm -f "$archive" "$restored"
