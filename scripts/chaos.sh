#!/usr/bin/env bash
# The chaos drill (deliver/tests/e2e/chaos): a seeded random schedule of faults (broker nodes,
# deliver and ingest replicas killed and started again, CoMagic answering 500, losing answers,
# slow, hanging) under a steady 100 webhooks/s on the local 3-node cluster, then the verdict (each
# webhook stored exactly once, nothing dead-lettered) and the latency from the 200 to CoMagic.
#
#   scripts/chaos.sh [SECONDS] [SEED]   SECONDS of load (90 unless given; 600 for the figure in
#                                       docs/benchmarks.md); SEED replays a run (each run prints its own first)
#
# Starts RabbitMQ's default node and PostgreSQL if none answers, makes a new cluster
# (`scripts/cluster.sh reset` and `start`) and stops it afterwards, whatever happens. With
# CHAOS_ON_RUNNING_CLUSTER=1 it runs on the cluster already up and leaves it so (scripts/test.sh,
# right after the cluster drill, saves a new cluster's start that way).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-90}
seed=${2:-}
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "chaos: SECONDS must be a number, not '$seconds'" >&2; exit 2; }
[[ -z "$seed" || "$seed" =~ ^[0-9]+$ ]] || { echo "chaos: SEED must be a number, not '$seed'" >&2; exit 2; }
scripts/ensure-rabbitmq.sh
scripts/ensure-postgres.sh
if [ "${CHAOS_ON_RUNNING_CLUSTER:-}" != "1" ]; then
  trap 'scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
  scripts/cluster.sh reset
  scripts/cluster.sh start
fi
export CHAOS_SECONDS=$seconds
if [ -n "$seed" ]; then export CHAOS_SEED=$seed; fi
# deliver's JSON log lines go to its own files; ingest's, in the test process, are left out here.
cargo test -p deliver --test e2e -- --ignored --exact --nocapture \
  chaos::a_seeded_schedule_of_faults_under_load_loses_nothing_and_stores_each_once 2>&1 \
  | grep --line-buffered -v '^{"timestamp'
