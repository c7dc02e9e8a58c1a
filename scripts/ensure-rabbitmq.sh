#!/usr/bin/env bash
# Makes sure a RabbitMQ answers on 127.0.0.1:5672: uses the one running, else starts Debian's
# rabbitmq-server, installing it first when it is missing. Safe to run again.
set -euo pipefail

answers() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if answers; then
  echo "rabbitmq: already answering on 127.0.0.1:5672"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "rabbitmq: installing Debian's rabbitmq-server"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server >/dev/null
  # The package may start it through the init system; if so, we are done once it answers.
fi

if ! answers; then
  echo "rabbitmq: starting"
  $SUDO rabbitmq-server -detached
fi

for _ in $(seq 1 120); do
  if answers && $SUDO rabbitmqctl -q await_startup >/dev/null 2>&1; then
    echo "rabbitmq: up"
    exit 0
  fi
  sleep 1
done
echo "rabbitmq: did not start within 120 s" >&2
exit 1
