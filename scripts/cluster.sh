#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, from Debian's rabbitmq-server (installed when
# missing): nodes bridge-1..3@localhost with their own data, logs and plugins under
# /var/lib/rabbitmq/verbox-cluster, AMQP on 127.0.0.1:5681..5683, the prometheus plugin on
# 15681..15683. It runs beside the machine's default node (5672), which it does not touch.
#
#   scripts/cluster.sh start         start the three nodes and join them (idempotent)
#   scripts/cluster.sh stop          stop them (their data stays)
#   scripts/cluster.sh reset         stop them and delete their data (the next start makes a new cluster)
#   scripts/cluster.sh kill N        SIGKILL node N (1-3), as a machine that dies
#   scripts/cluster.sh start-node N  start node N again after a kill or stop
#   scripts/cluster.sh stop-node N   stop node N cleanly
#   scripts/cluster.sh urls          the nodes' AMQP URLs, comma-separated (for [amqp] urls)
#   scripts/cluster.sh leader QUEUE  the node (1-3) that leads a quorum queue
#   scripts/cluster.sh status        the cluster as node 1 sees it
#   scripts/cluster.sh pids          the running nodes' VM process ids (for the benchmark's CPU figures)
set -euo pipefail

BASE=/var/lib/rabbitmq/verbox-cluster
NODES=(1 2 3)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

node_name() { echo "bridge-$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }
metrics_port() { echo $((15680 + $1)); }
ports_of() { echo "$(amqp_port "$1") $(dist_port "$1") $(metrics_port "$1")"; }

as_rabbitmq() { $SUDO runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq "$@"; }
ctl() { # node, rabbitmqctl args... (given up after CTL_TIMEOUT seconds, 600 unless set)
  local n=$1; shift
  as_rabbitmq timeout "${CTL_TIMEOUT:-600}" /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$(node_name "$n")" "$@"
}
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$(amqp_port "$1")") 2>/dev/null; }

install() {
  if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "cluster: installing Debian's rabbitmq-server"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  # The package's own node starts from the init system, or not: either way it is left alone.
}

prepare() { # node
  local n=$1 dir="$BASE/node-$1"
  as_rabbitmq mkdir -p "$dir/mnesia" "$dir/log"
  as_rabbitmq sh -c "cat > '$dir/rabbitmq.conf'" <<CONF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
prometheus.tcp.port = $(metrics_port "$n")
prometheus.tcp.ip = 127.0.0.1
CONF
  as_rabbitmq sh -c "echo '[rabbitmq_prometheus].' > '$dir/enabled_plugins'"
}

launch() { # node: starts its VM, detached, unless it runs already
  local n=$1 dir="$BASE/node-$1"
  # A VM of this node may still be starting (waiting for its peers) or stopping: the first is
  # awaited by await_node, the second must exit before a new one can take the node's name.
  for _ in $(seq 1 300); do
    answers "$n" && return 0
    [ -z "$(vm_of "$n")" ] && break
    sleep 0.1
  done
  [ -n "$(vm_of "$n")" ] && return 0
  # No VM of this node runs, so whatever holds one of its ports is something else, and the node
  # would die at boot where nobody sees it.
  local port
  for port in $(ports_of "$n"); do
    if [ -n "$($SUDO ss -ltnH "sport = :$port" 2>/dev/null)" ]; then
      echo "cluster: port $port, which node $n needs, is taken:" >&2
      $SUDO ss -ltnpH "sport = :$port" >&2
      return 1
    fi
  done
  prepare "$n"
  as_rabbitmq env \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/pid" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    /usr/lib/rabbitmq/bin/rabbitmq-server -detached
}

await_node() { # node
  for _ in $(seq 1 240); do
    if answers "$1" && ctl "$1" await_startup >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "cluster: node $1 did not start within 120 s (logs in $BASE/node-$1/log)" >&2
  explain "$1"
  return 1
}

# Why a node is not serving, on stderr: whether its VM runs, what holds its ports, and the end of its
# log (a CI run shows only what the script printed).
explain() { # node
  local n=$1 port vm
  vm=$(vm_of "$n")
  echo "cluster: node $n's VM: ${vm:-none}" >&2
  for port in $(ports_of "$n"); do
    $SUDO ss -ltnpH "sport = :$port" 2>/dev/null | sed "s/^/cluster: listening on $port: /" >&2 || true
  done
  echo "cluster: the end of $(node_name "$n")'s log:" >&2
  $SUDO tail -n 40 "$BASE/node-$n/log/$(node_name "$n").log" 2>/dev/null | sed 's/^/  /' >&2 || true
}

start_node() { # node
  launch "$1"
  await_node "$1"
}

# The Erlang VM of a node, if one runs: the beam whose environment names the node (its command
# line does not, and a pid file can be stale after a kill).
vm_of() {
  local pid
  for pid in $(pgrep -u rabbitmq beam.smp || true); do
    # A zombie (killed, not yet reaped) is gone already.
    [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = "Z" ] && continue
    if $SUDO tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qx "RABBITMQ_NODENAME=$(node_name "$1")"; then
      echo "$pid"
    fi
  done
}

gone() { # node: waits until its VM has exited; one that has not after 30 s is killed
  for _ in $(seq 1 300); do [ -z "$(vm_of "$1")" ] && return 0; sleep 0.1; done
  echo "cluster: node $1's VM is still running 30 s after its stop: killing it" >&2
  kill_vm "$1"
  for _ in $(seq 1 50); do [ -z "$(vm_of "$1")" ] && return 0; sleep 0.1; done
  echo "cluster: node $1's VM survived SIGKILL" >&2
  return 1
}

halt() { # node: stops a serving node cleanly; one still booting is killed
  # `rabbitmqctl stop` on a node that waits for its peers' tables blocks until that wait gives up,
  # up to five minutes; such a node serves nothing and its data is crash-safe.
  if answers "$1"; then
    CTL_TIMEOUT=60 ctl "$1" stop >/dev/null 2>&1 || true
  else
    kill_vm "$1"
  fi
}

kill_vm() { # node: SIGKILL to its VM, as a machine that dies
  local pid
  for pid in $(vm_of "$1"); do $SUDO kill -9 "$pid" 2>/dev/null || true; done
}

joined() { # node: whether node 1 lists it as a running member
  ctl 1 cluster_status --formatter json 2>/dev/null | python3 -c '
import json, sys
print("yes" if sys.argv[1] in json.load(sys.stdin).get("running_nodes", []) else "no")' "$(node_name "$1")"
}

join() { # node
  local n=$1
  [ "$(joined "$n")" = "yes" ] && return 0
  local log="$BASE/node-$n/log/join.log"
  { ctl "$n" stop_app && ctl "$n" reset && ctl "$n" join_cluster "$(node_name 1)" && ctl "$n" start_app \
      && ctl "$n" await_startup; } >"/tmp/verbox-cluster-join-$n.log" 2>&1 \
    || { cat "/tmp/verbox-cluster-join-$n.log" >&2; echo "cluster: node $n could not join (see above)" >&2; return 1; }
}


case "${1:-}" in
  start)
    install
    # All at once: a node that stopped last waits for its peers' tables before it serves, so
    # starting them one by one after a full stop would deadlock until the timeout.
    for n in "${NODES[@]}"; do launch "$n"; done
    for n in "${NODES[@]}"; do await_node "$n"; done
    for n in 2 3; do join "$n"; done
    echo "cluster: up, $($0 urls)"
    ;;
  stop)
    for n in "${NODES[@]}"; do halt "$n"; done
    for n in "${NODES[@]}"; do gone "$n"; done
    echo "cluster: stopped"
    ;;
  reset)
    $0 stop
    $SUDO rm -rf "$BASE"
    echo "cluster: data deleted"
    ;;
  kill)
    [ -n "$(vm_of "${2:?node 1-3}")" ] || { echo "cluster: node $2 is not running" >&2; exit 1; }
    kill_vm "$2"
    for _ in $(seq 1 50); do answers "$2" || break; sleep 0.1; done
    ! answers "$2" || { echo "cluster: node $2 still answers after SIGKILL" >&2; exit 1; }
    echo "cluster: node $2 killed"
    ;;
  pids)
    for n in "${NODES[@]}"; do vm_of "$n"; done
    ;;
  start-node)
    start_node "${2:?node 1-3}"
    echo "cluster: node $2 running"
    ;;
  stop-node)
    halt "${2:?node 1-3}"
    gone "$2"
    echo "cluster: node $2 stopped"
    ;;
  urls)
    urls=()
    for n in "${NODES[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
    (IFS=,; echo "${urls[*]}")
    ;;
  leader)
    for n in "${NODES[@]}"; do
      answers "$n" || continue
      leader=$(ctl "$n" list_queues name leader --formatter json 2>/dev/null | python3 -c '
import json, sys
for q in json.load(sys.stdin):
    if q["name"] == sys.argv[1]:
        print(q["leader"])' "${2:?queue}")
      [ -n "$leader" ] && { echo "$leader" | sed -E 's/^bridge-([0-9])@.*/\1/'; exit 0; }
    done
    echo "cluster: no node answers for $2" >&2; exit 1
    ;;
  status)
    ctl 1 cluster_status
    ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
