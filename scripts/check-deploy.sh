#!/usr/bin/env bash
# Validates deploy/ and docker-compose.yml with the real tools: promtool (Debian's prometheus
# package) for the alert rules and the Prometheus config, Debian's docker-compose for the compose
# file, kubernetes-validate (PyPI, schemas bundled) for the Kubernetes manifests, and RabbitMQ itself
# for the definitions: they are imported into a scratch vhost and deliver then declares its topology
# on top, which the broker refuses if any queue argument differs. The dashboard's and the rules'
# metric names are checked by the `deploy` tests (cargo test -p bridge-tests).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} from Debian's packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
venv="${XDG_CACHE_HOME:-$HOME/.cache}/verbox-bridge/kubernetes-validate"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "installing kubernetes-validate from PyPI"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0'
fi

echo "== promtool"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
promtool check config deploy/prometheus/prometheus.yml

echo "== docker-compose"
docker-compose -f docker-compose.yml config -q && echo "docker-compose.yml: valid"

echo "== kubernetes"
"$venv/bin/kubernetes-validate" --strict --quiet -k 1.30.0 deploy/k8s/*.yaml && echo "deploy/k8s: valid (Kubernetes 1.30 schemas, strict)"
# The broker's RabbitmqCluster, against the operator's CRD (a copy in deploy/k8s/crds).
"$venv/bin/python" scripts/lib/check-crd.py deploy/k8s/crds/rabbitmq.com_rabbitmqclusters.yaml deploy/k8s/rabbitmq/cluster.yaml

echo "== rabbitmq definitions"
# Imports the definitions into a scratch vhost of a node, then lets deliver declare its topology
# there: the broker accepts the file, and the code agrees with it.
#   check_definitions LABEL PORT HOST_DIR NODE_DIR CTL...
# HOST_DIR is where the node reads files from as NODE_DIR (they differ for a node in a chroot).
check_definitions() {
  local label=$1 port=$2 host_dir=$3 node_dir=$4; shift 4
  local vhost="verbox-deploy-check-$$" name="verbox-definitions-$$.json"
  "$@" -q add_vhost "$vhost"
  "$@" -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
  python3 - "$vhost" "$host_dir/$name" <<'PY'
import json, sys
vhost, out = sys.argv[1], sys.argv[2]
d = json.load(open("deploy/rabbitmq/definitions.json"))
d["vhosts"] = [{"name": vhost}]
for key in ("exchanges", "queues", "bindings"):
    for item in d[key]:
        item["vhost"] = vhost
json.dump(d, open(out, "w"))
PY
  chmod 644 "$host_dir/$name"  # the node reads it as the rabbitmq user
  "$@" -q import_definitions "$node_dir/$name"
  cargo build -q --bin deliver
  BRIDGE__AMQP__URL="amqp://guest:guest@127.0.0.1:$port/$vhost" \
    "${CARGO_TARGET_DIR:-target}/debug/deliver" --config deploy/local/bridge.toml dlq stats >/dev/null
  "$@" -q delete_vhost "$vhost" >/dev/null
  rm -f "$host_dir/$name"
  echo "deploy/rabbitmq/definitions.json: imported into $label, and deliver's own declaration agrees with it"
}
if rabbitmqctl -q status >/dev/null 2>&1; then
  check_definitions "RabbitMQ $(rabbitmqctl version)" 5672 /tmp /tmp rabbitmqctl
else
  echo "rabbitmqctl cannot reach a local node: definitions import skipped (the deploy test still compares them with the code)"
fi
if [ "${BRIDGE_CHECK_RABBITMQ4:-1}" = 1 ]; then
  # The 4.x line the compose file and the Cluster Operator run (scripts/rabbitmq4.sh).
  scripts/rabbitmq4.sh start
  check_definitions "RabbitMQ $(scripts/rabbitmq4.sh ctl version)" 5690 /var/lib/verbox-rmq4/trixie/tmp /tmp scripts/rabbitmq4.sh ctl
fi
