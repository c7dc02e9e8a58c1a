#!/usr/bin/env bash
# The pipeline on this machine, no Docker: RabbitMQ (installed and started if none answers on
# :5672), the CoMagic sandbox, deliver and ingest with deploy/local's config; posts three sample
# webhooks and shows them arriving in the sandbox with their attribution; a Prometheus (Debian's,
# installed when missing) scrapes all of it with the alert rules loaded. Ctrl-C stops what it
# started, and only that.
#
#   scripts/run-local.sh --cluster        on a local 3-node RabbitMQ cluster (scripts/cluster.sh),
#                                         with two deliver replicas sharing a PostgreSQL ledger
#   scripts/run-local.sh --no-prometheus  without Prometheus, for a quicker start
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=false
prometheus=true
for arg in "$@"; do
  case "$arg" in
    --cluster) cluster=true ;;
    --no-prometheus) prometheus=false ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if $cluster; then
  scripts/cluster.sh start
  scripts/ensure-postgres.sh
  BRIDGE__AMQP__URLS=$(scripts/cluster.sh urls)
  export BRIDGE__AMQP__URLS
  export BRIDGE__DELIVER__LEDGER_POSTGRES=postgres://bridge:bridge@127.0.0.1:5432/bridge_test
else
  scripts/ensure-rabbitmq.sh
fi
if $prometheus; then
  if ! command -v prometheus >/dev/null 2>&1; then
    echo "prometheus: installing Debian's prometheus"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  # RabbitMQ's own metrics (the cluster's nodes have the plugin already).
  $cluster || $SUDO rabbitmq-plugins enable -q rabbitmq_prometheus >/dev/null
fi
if [ -x target/release/ingest ] && [ -x target/release/deliver ]; then
  echo "building (release): only what changed; a few seconds"
else
  echo "building (release): the first build compiles some 330 crates and takes about 5 minutes on a"
  echo "2-core machine (longer on a smaller one); later runs start in seconds. Cargo's progress follows."
fi
cargo build --release -p ingest -p deliver -p bridge-tests --bins

run=var/local
mkdir -p "$run"
cp deploy/local/bridge.toml deploy/local/integrations.toml "$run/"
# The sandbox's visitor session started an hour ago (in the account's zone), so the chat may use it.
session_start=$(TZ=Europe/Moscow date -d '-1 hour' '+%Y-%m-%d %H:%M:%S')
cat > "$run/sandbox.toml" <<TOML
[[account]]
name = "demo-shop"
token = "demo-comagic-token-0123456789"
employees = [{ id = 101, full_name = "Olga Operator" }]
campaigns = [{ id = 5001, name = "Site chats", site_id = 77 }, { id = 5002, name = "Telegram", site_id = 77 }]
sites = [{ id = 77, domain_name = "shop.example" }]
sources = [{ id = 12, name = "Organic" }]
sessions = [{ id = 900001, started_at = "$session_start" }]
TOML

pids=()
stop() {
  trap - EXIT INT TERM
  echo; echo "stopping what this script started..."
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT INT TERM
target/release/comagic-sandbox --config "$run/sandbox.toml" --listen 127.0.0.1:8099 >"$run/sandbox.log" 2>&1 &
pids+=($!)
target/release/deliver --config "$run/bridge.toml" >"$run/deliver.log" 2>&1 &
pids+=($!)
if $cluster; then
  BRIDGE__DELIVER__LISTEN=127.0.0.1:9092 target/release/deliver --config "$run/bridge.toml" >"$run/deliver-2.log" 2>&1 &
  pids+=($!)
fi
target/release/ingest --config "$run/bridge.toml" >"$run/ingest.log" 2>&1 &
pids+=($!)
# The settings console, with an admin token made for this run (the console refuses to start
# without one; a real deployment takes it from a Secret).
admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
console_pages='["http://127.0.0.1:9091/metrics"]'
if $cluster; then console_pages='["http://127.0.0.1:9091/metrics", "http://127.0.0.1:9092/metrics"]'; fi
BRIDGE_ADMIN_TOKENS=$admin_token BRIDGE__CONSOLE__DELIVER_METRICS=$console_pages \
  BRIDGE__CONSOLE__COMAGIC_ENDPOINTS='["http://127.0.0.1:8099/v2.0"]' \
  target/release/deliver --config "$run/bridge.toml" console >"$run/console.log" 2>&1 &
pids+=($!)
prometheus_url=""
if $prometheus; then
  if $cluster; then
    rabbit_targets='"127.0.0.1:15681", "127.0.0.1:15682", "127.0.0.1:15683"'
    deliver_targets='"127.0.0.1:9091", "127.0.0.1:9092"'
  else
    rabbit_targets='"127.0.0.1:15692"'
    deliver_targets='"127.0.0.1:9091"'
  fi
  # 9090 unless something (Debian's own prometheus service, say) has it.
  port=9090; (exec 3<>/dev/tcp/127.0.0.1/9090) 2>/dev/null && port=19090
  prometheus_url="http://127.0.0.1:$port"
  cat > "$run/prometheus.yml" <<YML
# Written by scripts/run-local.sh: the local pipeline, with the project's alert rules.
global: { scrape_interval: 5s, evaluation_interval: 5s }
rule_files: ["$PWD/deploy/prometheus/alerts.yml"]
scrape_configs:
  - { job_name: ingest, static_configs: [{ targets: ["127.0.0.1:9094"] }] }
  - { job_name: deliver, static_configs: [{ targets: [$deliver_targets] }] }
  - { job_name: comagic-sandbox, static_configs: [{ targets: ["127.0.0.1:8099"] }] }
  - { job_name: rabbitmq, metrics_path: /metrics/per-object, static_configs: [{ targets: [$rabbit_targets] }] }
YML
  prometheus --config.file="$run/prometheus.yml" --storage.tsdb.path="$run/prometheus" \
    --web.listen-address="127.0.0.1:$port" >"$run/prometheus.log" 2>&1 &
  pids+=($!)
fi

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what (logs in $run/)" >&2; exit 1
}
wait_for "ingest" curl -fs http://127.0.0.1:8080/readyz
wait_for "deliver" curl -fs http://127.0.0.1:9091/readyz
wait_for "the console" curl -fs http://127.0.0.1:9093/
if $cluster; then wait_for "the second deliver" curl -fs http://127.0.0.1:9092/readyz; fi
wait_for "the sandbox" curl -fs http://127.0.0.1:8099/__sandbox/calls
[ -z "$prometheus_url" ] || wait_for "Prometheus" curl -fs "$prometheus_url/-/ready"

hook=http://127.0.0.1:8080/v1/verbox/demo-shop
token=demo-webhook-token-0123456789
now=$(date -u -d '-2 minutes' '+%Y-%m-%d %H:%M:%S')
later=$(date -u -d '-1 minute' '+%Y-%m-%d %H:%M:%S')
dialog=$(date +%s)
post() { echo "POST $1 → $(curl -s -X POST "$hook/$1/$token" --data-binary "$2")"; }
post chat '{"eventId":"dialogFinished","data":{"client":{"clientId":"site-1","name":"Ivan","phone":"8 912 345-67-89","customData":{"comagic_session_id":"900001"}},"dialog":{"id":'"$dialog"',"messages":[{"whoSend":"client","text":"Is it in stock?","dateTimeUTC":"'"$now"'"},{"whoSend":"operator","text":"Yes.","dateTimeUTC":"'"$later"'"}]}}}'
post chat '{"eventId":"dialogFinished","data":{"client":{"clientId":"tg-1","name":"Petr","phone":"+7 903 000-11-22","source":{"type":{"id":"telegram"}}},"dialog":{"id":'"$((dialog + 1))"',"messages":[{"whoSend":"client","text":"Hi from Telegram","dateTimeUTC":"'"$now"'"}]}}}'
post offline '{"eventId":"newOfflineQuestion","client":{"clientId":"off-'"$dialog"'","name":"Anna","email":"anna@example.ru"},"message":{"whoSend":"client","text":"Call me back, please ('"$dialog"')","dateTimeUTC":"'"$now"'"}}'

sandbox=http://127.0.0.1:8099/__sandbox/accounts/demo-shop
count() { curl -fs "$sandbox/$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
has() { test "$(count "$1")" -ge "$2"; }
wait_for "the chats in the sandbox" has chats 2
wait_for "the offline request in the sandbox" has offline_messages 1
echo; echo "arrived in the CoMagic sandbox:"
for upload in chats offline_messages; do
  curl -fs "$sandbox/$upload" | python3 -c '
import json, sys
for item in json.load(sys.stdin)[-3:]:
    who = {k: item[k] for k in ("visitor_session_id", "campaign_id", "site_id", "source_id") if k in item}
    contact = item.get("phone") or item.get("email")
    print("  %-17s %s  %s  attributed to %s" % (sys.argv[1], item["ext_id"], contact, who))
' "$upload"
done
cat <<TXT

webhooks:  $hook/chat/$token
           $hook/offline/$token
metrics:   http://127.0.0.1:9094/metrics (ingest), http://127.0.0.1:9091/metrics (deliver)$($cluster && echo ", :9092 (deliver 2)")
console:   http://127.0.0.1:9093  admin token: $admin_token
sandbox:   http://127.0.0.1:8099/__sandbox/calls
logs:      $run/*.log
operate:   target/release/deliver --config deploy/local/bridge.toml check --all
           target/release/deliver --config deploy/local/bridge.toml dlq stats
TXT
if [ -n "$prometheus_url" ]; then
  echo "prometheus: $prometheus_url (alerts: $prometheus_url/alerts; queries to try: docs/operations.md, \"Watching it\")"
fi
if $cluster; then
  echo "cluster:   scripts/cluster.sh kill 1 / start-node 1 / status; each process's node: curl -s 127.0.0.1:9091/readyz"
fi
echo "Running; Ctrl-C stops what this script started (the broker and a cluster stay up)." 
wait
