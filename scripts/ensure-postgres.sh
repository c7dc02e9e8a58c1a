#!/usr/bin/env bash
# Makes sure a PostgreSQL answers on 127.0.0.1:5432 with the tests' role and database
# (bridge / bridge, database bridge_test): uses the one running, else starts Debian's postgresql,
# installing it first when it is missing. Safe to run again.
set -euo pipefail

answers() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! answers; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "postgres: installing Debian's postgresql"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  fi
  if ! answers; then
    echo "postgres: starting"
    version=$(ls /etc/postgresql | sort -V | tail -1)
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  for _ in $(seq 1 60); do answers && break; sleep 1; done
  answers || { echo "postgres: did not start within 60 s" >&2; exit 1; }
fi

# The postgres superuser through the local socket (peer authentication), whatever TCP requires.
psql_admin() { $SUDO runuser -u postgres -- psql -qtAX "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'bridge'")" != "1" ]; then
  psql_admin -c "CREATE ROLE bridge LOGIN PASSWORD 'bridge'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'bridge_test'")" != "1" ]; then
  psql_admin -c "CREATE DATABASE bridge_test OWNER bridge"
fi
echo "postgres: up, database bridge_test for role bridge"
