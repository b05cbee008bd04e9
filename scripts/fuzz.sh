#!/usr/bin/env bash
# Runs every fuzz target under libFuzzer for a while (cargo fuzz, on the nightly toolchain),
# starting from the seeds in fuzz/seeds/ and keeping what it learns in fuzz/corpus/.
# Crashes land in fuzz/artifacts/<target>/. The same targets run as property tests on stable
# in scripts/test.sh (fuzz/tests/properties.rs).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(workflow_parser task_message worker_events heartbeat control dead_letter)
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "==> fuzzing $target for ${seconds}s" >&2
  cargo +nightly fuzz run --features libfuzzer "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added|==[0-9]+==|SUMMARY|Done)|panicked|artifact" || true
done
