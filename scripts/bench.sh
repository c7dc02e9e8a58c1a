#!/usr/bin/env bash
# Benchmarks (not tests): builds release binaries and prints a table per service. Loopback only.
#   scripts/bench.sh            # both
#   scripts/bench.sh ingest     # one
#   scripts/bench.sh scale      # on a local 3-node cluster: 1, 2, 3 deliver replicas, a node killed,
#                               # and ingest on the cluster
#   scripts/bench.sh integrations # 10 against 1,000 integrations, in the file and in PostgreSQL
#   scripts/bench.sh busy       # deliver's CPU while 1,000 busy integrations wait for call slots;
#                               # compare builds with loadgen busy --deliver old=PATH,new=PATH
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-rabbitmq.sh >/dev/null
cargo build --release -q -p ingest -p deliver -p bridge-tests --bins
loadgen="${CARGO_TARGET_DIR:-target}/release/loadgen"
benches=("$@"); [ ${#benches[@]} -gt 0 ] || benches=(ingest deliver)
for bench in "${benches[@]}"; do
  if [ "$bench" = scale ]; then
    scripts/cluster.sh start >/dev/null
    scripts/ensure-postgres.sh >/dev/null
    urls=$(scripts/cluster.sh urls)
    "$loadgen" scale --amqp-urls "$urls"
    "$loadgen" ingest --amqp-url "${urls%%,*}"
  elif [ "$bench" = integrations ]; then
    scripts/ensure-postgres.sh >/dev/null
    "$loadgen" integrations
  else
    "$loadgen" "$bench"
  fi
done
