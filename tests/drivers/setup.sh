#!/usr/bin/env bash
# Installs the client drivers the compatibility matrix (tests/drivers.rs) runs through pgsluice:
# psycopg 3, psycopg2 and asyncpg in a virtualenv (with prometheus_client for tests/metrics.rs), node-postgres in a local folder, and the PostgreSQL
# JDBC driver from Debian. Idempotent; everything lands in target/driver-env/ except the apt packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
env_dir=target/driver-env
mkdir -p "$env_dir"

apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "need root to apt-get install $*" >&2
    return 1
  fi
}

if [ ! -x "$env_dir/venv/bin/python" ]; then
  python3 -m venv "$env_dir/venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$env_dir/venv"; }
fi
# prometheus_client: its text-format parser checks pgsluice's /metrics (tests/metrics.rs).
if ! "$env_dir/venv/bin/python" -c 'import psycopg, psycopg2, asyncpg, prometheus_client' 2>/dev/null; then
  "$env_dir/venv/bin/pip" install -q --disable-pip-version-check 'psycopg[binary]>=3.1' psycopg2-binary asyncpg \
    prometheus_client
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
if [ ! -d "$env_dir/node/node_modules/pg" ]; then
  mkdir -p "$env_dir/node"
  (cd "$env_dir/node" && npm install --silent --no-audit --no-fund pg@8 >/dev/null)
fi

if ! command -v java >/dev/null; then
  apt_install default-jre-headless
fi
if [ ! -f /usr/share/java/postgresql.jar ]; then
  apt_install libpostgresql-jdbc-java
fi
echo "driver environment ready in $env_dir"
