#!/usr/bin/env bash
# pgbench through pgsluice and PgBouncer (and direct PostgreSQL) in one run, same machine, same pool size.
# Uses the workplace bench kit (BENCH_KIT, default ../shared/bench relative to the repo): it starts a
# PostgreSQL on 15432 with pgbench data and Debian's PgBouncer on 16432 (apt-get install pgbouncer);
# this script adds pgsluice on 16435 with the same settings (transaction mode, pool 20, md5) and runs
# the kit's matrix. Usage: benches/compare.sh [simple|extended|tpcb|churn|c256|all]...
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
kit=${BENCH_KIT:-$repo/../shared/bench}
[ -x "$kit/run-matrix.sh" ] || { echo "bench kit not found at $kit (set BENCH_KIT)" >&2; exit 1; }
. "$kit/env.sh"
(cd "$repo" && cargo build --release --quiet)
"$kit/start-postgres.sh"
command -v pgbouncer >/dev/null && "$kit/start-pgbouncer.sh"
work="$BENCH_ROOT/pgsluice"; mkdir -p "$work"
printf '"%s" "%s"\n' "$BENCH_USER" "$BENCH_PASSWORD" > "$work/userlist.txt"
cat > "$work/pgsluice.toml" <<C
[pgsluice]
listen_addr = "127.0.0.1"
listen_port = 16435
auth_type = "md5"
auth_file = "$work/userlist.txt"
pool_mode = "transaction"
default_pool_size = 20
max_client_conn = 10000
ignore_startup_parameters = ["extra_float_digits"]
[databases]
$BENCH_DB = { host = "127.0.0.1", port = $PG_PORT, dbname = "$BENCH_DB" }
C
ulimit -n 20000
RUST_LOG=warn "$repo/target/release/pgsluice" "$work/pgsluice.toml" 2>"$work/pgsluice.log" &
echo $! > "$work/pgsluice.pid"
trap 'kill $(cat "$work/pgsluice.pid") 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/16435) 2>/dev/null && break; sleep 0.1; done
targets="pgsluice:16435:$work/pgsluice.pid direct:$PG_PORT"
command -v pgbouncer >/dev/null && targets="pgsluice:16435:$work/pgsluice.pid pgbouncer:$PGB_PORT:$PIDS_DIR/pgbouncer.pid direct:$PG_PORT"
TARGETS="$targets" REPS="${REPS:-3}" DUR="${DUR:-15}" "$kit/run-matrix.sh" "${@:-simple}"
