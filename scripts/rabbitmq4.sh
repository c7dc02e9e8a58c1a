#!/usr/bin/env bash
# RabbitMQ 4.x beside the default broker, for checking that the topology, the definitions and the
# pipeline work on the 4.x line the compose file and the Cluster Operator run (Debian 12 packages
# 3.10 only, and container images cannot be pulled here). Debian 13's rabbitmq-server (4.0.5) is
# installed into a debootstrapped chroot under /var/lib/verbox-rmq4 and started as node
# rabbit4@localhost on 127.0.0.1:5690 (distribution port 25690; it shares the machine's epmd).
#   scripts/rabbitmq4.sh start    # builds the chroot the first time (a few minutes), starts the node
#   scripts/rabbitmq4.sh url      # amqp://guest:guest@127.0.0.1:5690/%2f
#   scripts/rabbitmq4.sh ctl ARGS # rabbitmqctl of that node
#   scripts/rabbitmq4.sh stop
set -euo pipefail
root=/var/lib/verbox-rmq4/trixie
port=5690
node=rabbit4@localhost
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
in_root() { $SUDO chroot "$root" env HOME=/var/lib/rabbitmq "$@"; }
answers() { (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

build() {
  [ -x "$root/usr/sbin/rabbitmq-server" ] && return
  command -v debootstrap >/dev/null || $SUDO apt-get install -y -qq debootstrap >/dev/null
  $SUDO mkdir -p "$(dirname "$root")"
  $SUDO debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian >/dev/null
  # Packages must not start services inside the chroot.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$root/usr/sbin/policy-rc.d" >/dev/null
  $SUDO chmod +x "$root/usr/sbin/policy-rc.d"
  mounts
  in_root apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
}

mounts() {
  mountpoint -q "$root/proc" || $SUDO mount -t proc proc "$root/proc"
  mountpoint -q "$root/dev" || $SUDO mount --bind /dev "$root/dev"
  $SUDO cp /etc/hosts "$root/etc/hosts"
}

case "${1:-}" in
  start)
    if answers; then echo "rabbitmq 4: already answering on 127.0.0.1:$port"; exit 0; fi
    build
    mounts
    $SUDO chroot "$root" env HOME=/var/lib/rabbitmq RABBITMQ_NODENAME=$node RABBITMQ_NODE_PORT=$port \
      RABBITMQ_DIST_PORT=25690 RABBITMQ_MNESIA_BASE=/var/lib/rabbitmq/mnesia4 \
      rabbitmq-server >/tmp/verbox-rabbitmq4.log 2>&1 &
    for _ in $(seq 1 60); do
      if answers; then echo "rabbitmq 4: $(in_root rabbitmqctl version) on 127.0.0.1:$port"; exit 0; fi
      sleep 1
    done
    echo "rabbitmq 4 did not start; the end of /tmp/verbox-rabbitmq4.log:" >&2
    tail -n 40 /tmp/verbox-rabbitmq4.log | sed 's/^/  /' >&2
    exit 1 ;;
  url) echo "amqp://guest:guest@127.0.0.1:$port/%2f" ;;
  ctl) shift; in_root rabbitmqctl -n "$node" "$@" ;;
  stop) answers && in_root rabbitmqctl -n "$node" stop >/dev/null 2>&1 || true ;;
  *) echo "usage: $0 start|url|ctl ARGS|stop" >&2; exit 2 ;;
esac
