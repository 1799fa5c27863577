#!/usr/bin/env bash
# Idle-client memory: for each N, start each pooler fresh (so memory kept from an earlier N does not hide
# the growth), open N authenticated idle clients with the kit's idle_conns.py (through idle_clients.py,
# which spreads more than 20,000 connections over several loopback source addresses), read the pooler's
# RSS before, with the N clients open, after `select 1` on 100 of them and after they all closed, stop it.
# Poolers: pgsluice, PgBouncer 1.25 (built by the kit) and Debian's PgBouncer 1.18 if installed, on their
# own ports (16455, 16454, 16452) so a compare.sh set-up can stay running. Same settings as compare.sh
# (transaction mode, pool 20, md5 checked by the pooler from a plain-text userlist); PostgreSQL (the kit's,
# started if needed) only serves the pool's first server login and the 100 queries. The kit's start
# scripts cap max_client_conn at 10,000, so the PgBouncers are started here with their settings and
# max_client_conn = N + 100. Raises the open-files limit to N + 1,024 (the hard limit too, where allowed:
# root with CAP_SYS_RESOURCE); an N that does not fit under a hard limit that cannot be raised is skipped.
#
# usage: benches/idle_memory.sh [N...]   (default 10000; e.g. 1000 10000 50000)
# env:   PGSLUICE_BIN (skip the build), SETTLE (3 s before each RSS reading), KEEP_RUNNING=1, BENCH_ROOT
# Prints a Markdown table, also written to $BENCH_ROOT/idle.md; raw lines in $RESULTS_DIR/idle-*/idle.jsonl.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${SETTLE:=3}"
counts=("$@"); [ "${#counts[@]}" = 0 ] && counts=(10000)
max=0
for n in "${counts[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [N...] (client counts)" >&2; exit 2; }
  [ "$n" -gt "$max" ] && max=$n
done
# open files: the pooler and the client process each hold one per connection, plus the pool, listeners, logs
nofile=$((max + 1024))
hard=$(ulimit -Hn); [ "$hard" = unlimited ] && hard=$nofile
if [ "$hard" -lt "$nofile" ]; then
  if ulimit -Hn "$nofile" 2>/dev/null; then hard=$nofile
  else
    say "the open-files hard limit is $hard and cannot be raised (that needs root with CAP_SYS_RESOURCE;"
    say "  in a container e.g. docker run --ulimit nofile=$nofile): N above $((hard - 1024)) is skipped"
    nofile=$hard
  fi
fi
[ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$nofile" ] && ulimit -n "$nofile"
fits=()
for n in "${counts[@]}"; do
  if [ $((n + 1024)) -le "$nofile" ]; then fits+=("$n"); else say "SKIPPING N=$n: needs $((n + 1024)) open files per process, the limit is $nofile"; fi
done
[ "${#fits[@]}" -gt 0 ] || exit 1
counts=("${fits[@]}")
run_dir="$RESULTS_DIR/idle-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$run_dir"
out="$run_dir/idle.jsonl"
root="$BENCH_ROOT/idle"; mkdir -p "$root"

build_pgsluice
start_kit_postgres

poolers=()
if pgb125=$("$kit/build-pgbouncer125.sh" 2>"$run_dir/build-pgbouncer125.log"); then
  poolers+=(pgbouncer125)
else
  say "SKIPPING PgBouncer 1.25: it could not be built (see $run_dir/build-pgbouncer125.log)"
fi
if command -v pgbouncer >/dev/null; then poolers+=(pgbouncer); else say "skipping PgBouncer 1.18: not installed (apt-get install pgbouncer)"; fi
poolers+=(pgsluice)

# start_pgbouncer NAME BINARY PORT MAX_CLIENT_CONN EXTRA_SETTING: the kit's start-pgbouncer*.sh settings;
# sets pidfile
start_pgbouncer() {
  local name=$1 bin=$2 port=$3 maxconn=$4 extra=$5 d="$root/$1" pid i
  mkdir -p "$d"; rm -f "$d/pgbouncer.pid"
  printf '"%s" "%s"\n' "$BENCH_USER" "$BENCH_PASSWORD" > "$d/userlist.txt"
  cat > "$d/pgbouncer.ini" <<INI
[databases]
$BENCH_DB = host=127.0.0.1 port=$PG_PORT dbname=$BENCH_DB
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = md5
auth_file = $d/userlist.txt
pool_mode = transaction
default_pool_size = ${PGB_POOL_SIZE:-20}
max_client_conn = $maxconn
$extra
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = $d/pgbouncer.log
pidfile = $d/pgbouncer.pid
INI
  cp "$bin" "$d/pgbouncer"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$d"   # PgBouncer refuses to run as root; setpriv keeps the raised rlimit
    setpriv --reuid=postgres --regid=postgres --init-groups "$d/pgbouncer" -d "$d/pgbouncer.ini"
  else
    "$d/pgbouncer" -d "$d/pgbouncer.ini"
  fi
  for i in $(seq 50); do [ -s "$d/pgbouncer.pid" ] && break; sleep 0.1; done
  pid=$(pid_in "$d/pgbouncer.pid")
  alive "$pid" || { say "$name did not start; $d/pgbouncer.log:"; tail -5 "$d/pgbouncer.log" >&2; return 1; }
  at_exit "stop_pid $pid $name"
  wait_port "$port"
  pidfile="$d/pgbouncer.pid"
}

for n in "${counts[@]}"; do
  for p in "${poolers[@]}"; do
    case $p in
      pgbouncer125) port=16454; start_pgbouncer pgbouncer125 "$pgb125" $port $((n + 100)) "max_prepared_statements = 200" ;;
      pgbouncer)    port=16452; start_pgbouncer pgbouncer "$(command -v pgbouncer)" $port $((n + 100)) "" ;;
      pgsluice)     port=16455; start_pgsluice "$root/pgsluice" $port $((n + 100)); pidfile="$root/pgsluice/pgsluice.pid" ;;
    esac
    sleep 1
    pid=$(pid_in "$pidfile")
    say "$p: $n idle clients (pid $pid, port $port)"
    python3 "$repo/benches/idle_clients.py" --port $port --pid "$pid" --n "$n" --settle "$SETTLE" \
      --user "$BENCH_USER" --password "$BENCH_PASSWORD" --db "$BENCH_DB" --label "$p" --json-out "$out" >&2
    stop_pid "$pid" "$p"
  done
done

python3 - "$out" > "$run_dir/idle.md" <<'PY'
import json, sys
names = {"pgbouncer": "PgBouncer 1.18", "pgbouncer125": "PgBouncer 1.25", "pgsluice": "pgsluice"}
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
poolers = [p for p in ("pgbouncer", "pgbouncer125", "pgsluice") if any(r["label"] == p for r in recs)]
counts = sorted({r["requested"] for r in recs})
get = {(r["requested"], r["label"]): r for r in recs}
kib = lambda b: f"{b / 1024:.1f}" if b is not None else "—"
mib = lambda k: f"{k / 1024:.1f}" if k is not None else "—"
print("RSS growth per idle authenticated client, KiB (RSS with N clients open minus RSS before, / N):")
print()
print("| clients | " + " | ".join(names[p] for p in poolers) + " | pgsluice RSS MiB: before / open / after close |")
print("|---|" + "---|" * len(poolers) + "---|")
for n in counts:
    row = [f"{n:,}"]
    for p in poolers:
        r = get.get((n, p))
        row.append("—" if r is None else kib(r["per_conn_idle_bytes"]) + ("" if r["opened"] == n else f" ({r['opened']:,} opened)"))
    r = get.get((n, "pgsluice"))
    row.append("—" if r is None else f"{mib(r['rss_before_kib'])} / {mib(r['rss_open_kib'])} / {mib(r['rss_after_close_kib'])}")
    print("| " + " | ".join(row) + " |")
print()
print("| clients | pooler | opened | logins/s | RSS before MiB | open MiB | per client KiB | per client after `select 1` on 100, KiB | after close MiB | growth given back |")
print("|---|---|---|---|---|---|---|---|---|---|")
for n in counts:
    for p in poolers:
        r = get.get((n, p))
        if r is None:
            continue
        grew = r["rss_open_kib"] - r["rss_before_kib"]
        back = f"{100 * (r['rss_open_kib'] - r['rss_after_close_kib']) / grew:.0f}%" if grew > 0 else "—"
        print(f"| {n:,} | {names[p]} | {r['opened']:,} | {r['handshakes_per_s'] or 0:,.0f} | {mib(r['rss_before_kib'])} | "
              f"{mib(r['rss_open_kib'])} | {kib(r['per_conn_idle_bytes'])} | {kib(r['per_conn_after_query_bytes'])} | "
              f"{mib(r['rss_after_close_kib'])} | {back} |")
PY
cp "$run_dir/idle.md" "$BENCH_ROOT/idle.md"
echo
cat "$run_dir/idle.md"
echo
say "results: $run_dir/idle.md (also $BENCH_ROOT/idle.md), raw: $out"
