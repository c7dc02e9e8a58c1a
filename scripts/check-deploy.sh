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
if rabbitmqctl -q status >/dev/null 2>&1; then
  vhost="verbox-deploy-check-$$"
  scratch=$(mktemp --suffix=.json)
  chmod 644 "$scratch"  # rabbitmqctl reads it as the rabbitmq user
  trap 'rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true; rm -f "$scratch"' EXIT
  rabbitmqctl -q add_vhost "$vhost"
  rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
  python3 - "$vhost" "$scratch" <<'PY'
import json, sys
vhost, out = sys.argv[1], sys.argv[2]
d = json.load(open("deploy/rabbitmq/definitions.json"))
d["vhosts"] = [{"name": vhost}]
for key in ("exchanges", "queues", "bindings"):
    for item in d[key]:
        item["vhost"] = vhost
json.dump(d, open(out, "w"))
PY
  rabbitmqctl -q import_definitions "$scratch"
  cargo build -q --bin deliver
  BRIDGE__AMQP__URL="amqp://guest:guest@127.0.0.1:5672/$vhost" \
    target/debug/deliver --config deploy/local/bridge.toml dlq stats >/dev/null
  echo "deploy/rabbitmq/definitions.json: imported, and deliver's own declaration agrees with it"
else
  echo "rabbitmqctl cannot reach a local node: definitions import skipped (the deploy test still compares them with the code)"
fi
