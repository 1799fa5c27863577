#!/usr/bin/env bash
# pgbench with sslmode=require through PgBouncer 1.25 (built by the bench kit from vendored source) and
# pgsluice, same machine, same pool: TLS with the clients, plain text to PostgreSQL. Steady state
# (select-only at 1, 16, 64 clients) and a new TLS connection per transaction (-C). The first rep after
# PostgreSQL starts is cold: read the second. Usage: benches/tls_vs_pgbouncer.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"   # kit lookup (also from a worktree), env.sh
build_pgsluice               # sets PGSLUICE_BIN (honours CARGO_TARGET_DIR)
"$kit/start-postgres.sh" >/dev/null
pgb=$("$kit/build-pgbouncer125.sh")
d=$BENCH_ROOT/tls; mkdir -p $d; cd $d
if [ ! -f cert.pem ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 30 -subj /CN=localhost 2>/dev/null
  chmod 644 key.pem cert.pem
fi
printf '"%s" "%s"\n' "$BENCH_USER" "$BENCH_PASSWORD" > userlist.txt
cat > pgb.ini <<INI
[databases]
$BENCH_DB = host=127.0.0.1 port=$PG_PORT dbname=$BENCH_DB
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 16440
unix_socket_dir =
auth_type = md5
auth_file = $d/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 10000
log_connections = 0
log_disconnections = 0
logfile = $d/pgb.log
pidfile = $d/pgb.pid
client_tls_sslmode = require
client_tls_key_file = $d/key.pem
client_tls_cert_file = $d/cert.pem
server_tls_sslmode = disable
INI
cat > sluice.toml <<T
[pgsluice]
listen_addr = "127.0.0.1"
listen_port = 16441
unix_socket_dir = ""
auth_type = "md5"
auth_file = "$d/userlist.txt"
pool_mode = "transaction"
default_pool_size = 20
max_client_conn = 10000
log_connections = false
log_disconnections = false
client_tls_sslmode = "require"
client_tls_key_file = "$d/key.pem"
client_tls_cert_file = "$d/cert.pem"
server_tls_sslmode = "disable"
[databases]
$BENCH_DB = { host = "127.0.0.1", port = $PG_PORT, dbname = "$BENCH_DB" }
T
chown -R postgres:postgres $d
cp "$pgb" $d/pgbouncer
setpriv --reuid=postgres --regid=postgres --init-groups $d/pgbouncer -d $d/pgb.ini
RUST_LOG=warn "$PGSLUICE_BIN" $d/sluice.toml 2>$d/sluice.log & echo $! > $d/sluice.pid
trap 'kill $(cat $d/sluice.pid) $(cat $d/pgb.pid) 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/16441) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/16440) 2>/dev/null && break; sleep 0.1; done
export PGSSLMODE=require
B() { python3 $kit/bench.py --out $d/results.jsonl --reps 2 --duration 8 "$@"; }
T="--target pgbouncer125:16440:$d/pgb.pid --target pgsluice:16441:$d/sluice.pid"
B --label tls-select-simple --clients 1,16,64 --warmup 3 $T -- -S -M simple
B --label tls-churn-connect --clients 16 $T -- -C -S -M simple
