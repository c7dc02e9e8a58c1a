#!/usr/bin/env bash
# The test command: a broker and a database, then format, lints, every unit, property and integration test, and
# the deploy files.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-rabbitmq.sh
scripts/ensure-postgres.sh
# The site-script test runs the generated JavaScript in Node.js; the live dashboard test runs a real
# Prometheus against RabbitMQ's prometheus plugin; the console's browser test drives Debian's
# Chromium through chromedriver.
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
$SUDO rabbitmq-plugins enable -q rabbitmq_prometheus >/dev/null 2>&1 || echo "rabbitmq_prometheus could not be enabled: the live dashboard test will fail" 
cargo fmt --all -- --check
for script in deliver/src/console/assets/*.js; do node --check "$script"; done
cargo clippy --workspace --all-targets -- -D warnings
python3 scripts/lib/module-cycles.py shared ingest deliver tests
cargo test --workspace
# Runs one test named with `--exact`, streaming its output without deliver's JSON log lines. cargo
# exits 0 when the name matches nothing (a renamed test), which would silently drop the test from
# CI: the "test result: ok. N passed" lines are summed, and a run that passed no test fails.
run_named() {
  local log status passed
  log=$(mktemp)
  set +e
  "$@" 2>&1 | grep --line-buffered -v '^{"timestamp' | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  passed=$(grep -oE '^test result: ok\. [0-9]+ passed' "$log" | awk '{ n += $4 } END { print n + 0 }')
  rm -f "$log"
  if [ "$status" -ne 0 ]; then
    return "$status"
  fi
  if [ "$passed" -eq 0 ]; then
    echo "run_named: no test ran (renamed or removed?): $*" >&2
    return 1
  fi
}
# The real broker stopped and started under load (rabbitmqctl stop_app/start_app): run alone, one
# after the other, as they take the shared broker away from every other test; the broker is started
# again whatever happens.
# Whatever happens, the shared broker is started again and the drill's cluster stopped.
cleanup() {
  rabbitmqctl -q start_app >/dev/null 2>&1 || true
  scripts/cluster.sh stop >/dev/null 2>&1 || true
  scripts/rabbitmq4.sh stop >/dev/null 2>&1 || true
  scripts/ensure-postgres.sh >/dev/null 2>&1 || true
}
trap cleanup EXIT
if rabbitmqctl -q status >/dev/null 2>&1; then
  run_named cargo test -p ingest --test api -- --ignored --exact outage::broker_stopped_mid_load_loses_no_accepted_event
  run_named cargo test -p deliver --test e2e -- --ignored --exact crashes::broker_restarted_under_load_loses_nothing
  # Needs the plugin's port on the local node, enabled above.
  run_named cargo test -p deliver --test e2e -- --ignored --exact --nocapture \
    live::every_panel_shows_live_data_and_breaking_things_raises_the_matching_alert
else
  echo "rabbitmqctl cannot reach the local node: the broker-restart test is skipped"
fi
# The machine's PostgreSQL stopped and started under the integrations store's four processes (alone:
# it takes the database from every other test; started again whatever happens).
run_named cargo test -p deliver --test e2e -- --ignored --exact store::with_the_postgres_store_four_processes_ride_out_a_database_restart
# The shared ledger silent (a black hole, not a refusal) for a minute under load: readiness, the
# gauge, a SIGTERM during it, and every chat once afterwards.
run_named cargo test -p deliver --test e2e -- --ignored --exact blackhole::the_shared_ledger_silent_for_60s_under_load_is_reported_and_every_chat_delivered_once
# The cluster fault drill: a 3-node cluster beside the default broker (scripts/cluster.sh), a node,
# a deliver and an ingest lost under load. Run alone: it loads the machine. It starts from a new
# cluster, whatever an earlier run or benchmark left in the nodes' data.
scripts/cluster.sh reset
scripts/cluster.sh start
run_named cargo test -p deliver --test e2e -- --ignored --exact --nocapture \
  cluster::a_node_a_deliver_and_an_ingest_lost_under_load_lose_nothing
# The chaos drill, short (90 s of load, then the drain): a seeded random schedule of faults under
# load, on the cluster the drill leaves running. Its seed is printed first: `scripts/chaos.sh 90
# SEED` replays a failure.
run_named env CHAOS_ON_RUNNING_CLUSTER=1 scripts/chaos.sh 90
# RabbitMQ 4.x, the line the compose file and the Cluster Operator run (Debian 13's, in a chroot:
# scripts/rabbitmq4.sh): the topology, and the paths through the retry and dead-letter queues.
scripts/rabbitmq4.sh start
rabbitmq4=$(scripts/rabbitmq4.sh url)
BRIDGE_TEST_AMQP_URL=$rabbitmq4 cargo test -p bridge-tests --test e2e topology
BRIDGE_TEST_AMQP_URL=$rabbitmq4 cargo test -p deliver --test e2e -- lifecycle:: faults:: dlq::
# The deploy files, with promtool, docker-compose, a Kubernetes schema check and RabbitMQ itself.
scripts/check-deploy.sh
