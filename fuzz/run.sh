#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 600) each, with libFuzzer's RSS and per-input
# time limits, and print the exec counts. Needs nightly and `cargo install cargo-fuzz`.
# Leak detection is off: decoder threads are detached and may still be exiting when the
# fuzzer exits, which LeakSanitizer reports as a leak of the thread's handle.
# Crashes land in fuzz/artifacts/TARGET/: turn each into a regression test in tests/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tar_reader archive_index image_json merge squash registry_text engine_answer mirror_walk)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    -timeout=10 -max_len=65536 -detect_leaks=0 -print_final_stats=1 2>&1 | tee "/tmp/fuzz-$t.log" \
    | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==.*ERROR|SUMMARY)" || true
done
