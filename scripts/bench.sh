#!/usr/bin/env bash
# Benchmarks (not tests): builds release binaries and prints a table per service. Loopback only.
#   scripts/bench.sh            # both
#   scripts/bench.sh ingest     # one
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-rabbitmq.sh >/dev/null
cargo build --release -q -p ingest -p deliver -p bridge-tests --bins
benches=("$@"); [ ${#benches[@]} -gt 0 ] || benches=(ingest deliver)
for bench in "${benches[@]}"; do
  target/release/loadgen "$bench"
done
