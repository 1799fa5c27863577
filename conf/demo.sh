#!/usr/bin/env bash
# Runs pgsluice for real. With PGSLUICE_CONFIG set, it runs that config. Otherwise it starts a throwaway
# PostgreSQL (initdb into a temp dir, port 54329), writes a matching pgsluice config on port 6432 and runs
# pgsluice in the foreground until Ctrl-C, then stops PostgreSQL and removes the temp dir.
#   psql "host=127.0.0.1 port=6432 user=app password=app-secret dbname=app"          the database
#   psql "host=127.0.0.1 port=6432 user=admin password=admin-secret dbname=pgbouncer"  the console
#   curl http://127.0.0.1:9127/metrics                                                 Prometheus
set -euo pipefail
cd "$(dirname "$0")/.."
# PGSLUICE_BIN: run that binary instead of building one (tests/demo.rs); PORT and METRICS_PORT move the
# listeners.
BIN=${PGSLUICE_BIN:-}
if [ -z "$BIN" ]; then
  echo "building pgsluice (release; the first build takes a few minutes)..." >&2
  cargo build --release
  BIN=target/release/pgsluice
fi
PORT=${PORT:-6432}
METRICS_PORT=${METRICS_PORT:-9127}
if [ -n "${PGSLUICE_CONFIG:-}" ]; then exec "$BIN" "$PGSLUICE_CONFIG"; fi

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/initdb" ] || { echo "initdb not found: apt-get install postgresql (or set PG_BIN)" >&2; exit 1; }
PG_PORT=${PG_PORT:-54329}
WORK=$(mktemp -d /tmp/pgsluice-demo.XXXXXX)
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
cleanup() { as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -o "-p $PG_PORT -k $WORK/pg -c listen_addresses=127.0.0.1" -w start >/dev/null
as_pg psql -qX -h "$WORK/pg" -p "$PG_PORT" -U postgres -d postgres \
  -c "create role app login password 'app-secret'" -c "create database app owner app"
cat > "$WORK/userlist.txt" <<U
"app" "app-secret"
"admin" "admin-secret"
U
cat > "$WORK/pgsluice.toml" <<C
[pgsluice]
listen_addr = "127.0.0.1"
listen_port = $PORT
auth_type = "scram-sha-256"
auth_file = "$WORK/userlist.txt"
default_pool_size = 5
admin_users = "admin"
metrics_addr = "127.0.0.1:$METRICS_PORT"
[databases]
app = { host = "127.0.0.1", port = $PG_PORT, dbname = "app" }
C
cat <<T
pgsluice on 127.0.0.1:$PORT -> PostgreSQL on $PG_PORT (Ctrl-C stops both). In another terminal:
  psql "host=127.0.0.1 port=$PORT user=app password=app-secret dbname=app"           the database
  psql "host=127.0.0.1 port=$PORT user=admin password=admin-secret dbname=pgbouncer" the console: SHOW POOLS; SHOW HELP;
  curl -s http://127.0.0.1:$METRICS_PORT/metrics | grep pgsluice_pool                        Prometheus metrics
Config: $WORK/pgsluice.toml
T
"$BIN" "$WORK/pgsluice.toml"
