# Shared pieces of the benches/ scripts. Source it (bash, set -euo pipefail): it finds the workplace bench
# kit (BENCH_KIT, default ../shared/bench relative to the repo), sources its env.sh, and keeps a list of
# what the calling script started so that it is stopped on exit (KEEP_RUNNING=1 leaves the kit's
# PostgreSQL and PgBouncers running for the next run; pgsluice is always stopped).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_find_kit() {
  local d common
  if [ -n "${BENCH_KIT:-}" ]; then d=$BENCH_KIT
  else
    d=$repo/../shared/bench
    # a git worktree elsewhere (e.g. under /tmp): ../shared/bench of the main checkout
    if [ ! -d "$d" ] && common=$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
      d=$(dirname "$common")/../shared/bench
    fi
  fi
  (cd "$d" 2>/dev/null && [ -f env.sh ] && [ -f bench.py ] && pwd) ||
    { echo "bench kit not found at $d (set BENCH_KIT)" >&2; return 1; }
}
kit=$(_find_kit) || exit 1
export BENCH_KIT=$kit
. "$kit/env.sh"

say() { echo "[$(date +%T)] $*" >&2; }

# --- stop on exit what this script started, newest first ---
_on_exit=()
at_exit() { _on_exit+=("$1"); }
_run_exit() {
  local i
  for ((i = ${#_on_exit[@]} - 1; i >= 0; i--)); do eval "${_on_exit[i]}" || true; done
}
trap _run_exit EXIT
trap 'exit 130' INT TERM

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_in() { [ -s "$1" ] && head -1 "$1" | tr -dc 0-9; }

# stop_pid PID [NAME]: SIGTERM, wait up to 10 s, then SIGKILL. Only ever the recorded PID.
stop_pid() {
  local pid=$1 name=${2:-$1} i
  alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; say "killed $name ($pid) with SIGKILL"; fi
  say "stopped $name ($pid)"
}

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# The kit's PostgreSQL (15432, pgbench data at scale 10); stopped on exit if this script started it.
start_kit_postgres() {
  local was=0
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1 && was=1
  "$kit/start-postgres.sh" >&2
  if [ $was = 0 ] && [ "${KEEP_RUNNING:-0}" != 1 ]; then
    at_exit 'as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast stop >/dev/null && rm -f "$PIDS_DIR/postgres.pid" && say "stopped postgres"'
  fi
}

# start_kit_pooler NAME SCRIPT: run a kit start script that leaves its PID in $PIDS_DIR/NAME.pid;
# stopped on exit if it was not already running.
start_kit_pooler() {
  local name=$1 script=$2 f="$PIDS_DIR/$1.pid" was=0
  alive "$(pid_in "$f")" && was=1
  "$kit/$script" >&2 || return 1
  alive "$(pid_in "$f")" || { say "$name did not start"; return 1; }
  if [ $was = 0 ] && [ "${KEEP_RUNNING:-0}" != 1 ]; then
    at_exit "stop_pid \$(pid_in '$f') $name; rm -f '$f'"
  fi
}

# Build pgsluice (release) unless PGSLUICE_BIN names a binary; sets PGSLUICE_BIN. Honours CARGO_TARGET_DIR
# and build.target-dir (asks cargo where its target directory is).
build_pgsluice() {
  if [ -n "${PGSLUICE_BIN:-}" ]; then
    [ -x "$PGSLUICE_BIN" ] || { echo "PGSLUICE_BIN=$PGSLUICE_BIN is not executable" >&2; exit 1; }
    return
  fi
  say "cargo build --release (pgsluice)"
  (cd "$repo" && cargo build --release --quiet --bin pgsluice)
  local target
  target=$(cd "$repo" && cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  PGSLUICE_BIN=$target/release/pgsluice
}

wait_port() {
  local port=$1 i
  for i in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# start_pgsluice DIR PORT MAX_CLIENT_CONN: pgsluice in front of the kit's PostgreSQL with the kit's PgBouncer
# settings (transaction mode, pool 20, md5 from a plain-text userlist, connection logging off, no Unix
# socket). Writes DIR/pgsluice.pid; stopped on exit.
start_pgsluice() {
  local d=$1 port=$2 maxconn=$3
  mkdir -p "$d"
  printf '"%s" "%s"\n' "$BENCH_USER" "$BENCH_PASSWORD" > "$d/userlist.txt"
  cat > "$d/pgsluice.toml" <<C
[pgsluice]
listen_addr = "127.0.0.1"
listen_port = $port
unix_socket_dir = ""
auth_type = "md5"
auth_file = "$d/userlist.txt"
pool_mode = "transaction"
default_pool_size = ${PGB_POOL_SIZE:-20}
max_client_conn = $maxconn
ignore_startup_parameters = ["extra_float_digits"]
log_connections = false
log_disconnections = false
[databases]
$BENCH_DB = { host = "127.0.0.1", port = $PG_PORT, dbname = "$BENCH_DB" }
C
  # setsid: a session (and so a scheduler autogroup) of its own, as a daemon or a systemd service has and
  # as the PgBouncers have here (they daemonize); sharing pgbench's autogroup skews both CPU and TPS.
  # In a script without job control the background child is no group leader, so setsid execs in place
  # and $! is pgsluice itself.
  RUST_LOG=warn setsid "$PGSLUICE_BIN" "$d/pgsluice.toml" 2>>"$d/pgsluice.log" &
  echo $! > "$d/pgsluice.pid"
  at_exit "stop_pid $! pgsluice"
  wait_port "$port" || { say "pgsluice did not listen on $port; $d/pgsluice.log:"; tail -5 "$d/pgsluice.log" >&2; return 1; }
}
