#!/usr/bin/env bash
# pgbench through PgBouncer 1.25, PgBouncer 1.18, pgsluice and direct PostgreSQL in one sitting, targets
# interleaved rep by rep, same machine, same pool size; PgBouncer 1.25 is the anchor ratios are taken against.
# Uses the workplace bench kit (BENCH_KIT, default ../shared/bench relative to the repo): its PostgreSQL on
# 15432 with pgbench data, PgBouncer 1.25 built from its vendored source on 16434, Debian's PgBouncer 1.18
# on 16432 when `pgbouncer` is installed; this script adds pgsluice on 16435 with the same settings
# (transaction mode, pool 20, md5) and runs the kit's matrix through bench_ctx.py (the kit's bench.py plus
# the pooler's context switches). It ends with a Markdown table (TPS, pgsluice / 1.25, pooler CPU µs and
# context switches per transaction), also written to $BENCH_ROOT/results.md.
#
# usage: benches/compare.sh [simple|c256|extended|prepared|tpcb|churn|all]...   (default: simple)
# env:   REPS (3), DUR (15 s per run), WARMUP (5 s per target before the simple section),
#        CLIENTS (e.g. 16: replaces every section's client counts), QUIET_PCT (15: before each run wait
#        until the machine is at most this % of a core busy; 0 = don't wait), RETRIES (2: reruns of a run
#        other tenants disturbed), PGSLUICE_BIN (skip the build), KEEP_RUNNING=1 (leave PostgreSQL and the
#        PgBouncers running), BENCH_ROOT (/tmp/pgbench-anchor)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${REPS:=3}" "${DUR:=15}" "${WARMUP:=5}" "${CLIENTS:=}" "${QUIET_PCT:=15}" "${RETRIES:=2}"
sections=("$@"); [ "${#sections[@]}" = 0 ] && sections=(simple)
[ "${sections[0]}" = all ] && sections=(simple c256 extended prepared tpcb churn)
for s in "${sections[@]}"; do
  case "$s" in simple|c256|extended|prepared|tpcb|churn) ;; *) echo "unknown section $s" >&2; exit 2 ;; esac
done
run_dir="$RESULTS_DIR/compare-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$run_dir"
out="$run_dir/results.jsonl"

build_pgsluice
start_kit_postgres

# targets in this order: the first is bench.py's ratio baseline
targets=()
say "building PgBouncer 1.25 (once) with $kit/build-pgbouncer125.sh"
if "$kit/build-pgbouncer125.sh" >"$run_dir/build-pgbouncer125.log" 2>&1 &&
   start_kit_pooler pgbouncer125 start-pgbouncer125.sh; then
  targets+=("pgbouncer125:16434:$PIDS_DIR/pgbouncer125.pid")
else
  say "SKIPPING PgBouncer 1.25: it could not be built or started (see $run_dir/build-pgbouncer125.log);"
  say "  the table's 1.25 column and the pgsluice / 1.25 ratio stay empty"
fi
if command -v pgbouncer >/dev/null; then
  start_kit_pooler pgbouncer start-pgbouncer.sh
  targets+=("pgbouncer:$PGB_PORT:$PIDS_DIR/pgbouncer.pid")
else
  say "skipping PgBouncer 1.18: not installed (apt-get install pgbouncer)"
fi
start_pgsluice "$BENCH_ROOT/pgsluice" 16435 10000
targets+=("pgsluice:16435:$BENCH_ROOT/pgsluice/pgsluice.pid")
say "pgsluice running, pid $(cat "$BENCH_ROOT/pgsluice/pgsluice.pid"), port 16435"

targs=(); ptargs=()
for t in "${targets[@]}" "direct:$PG_PORT"; do targs+=(--target "$t"); done
for t in "${targets[@]}"; do ptargs+=(--target "$t"); done
B() {
  python3 "$repo/benches/bench_ctx.py" --out "$out" --reps "$REPS" --duration "$DUR" \
    --quiet-pct "$QUIET_PCT" --retries "$RETRIES" "$@"
}
cl() { echo "${CLIENTS:-$1}"; }
for s in "${sections[@]}"; do
  say "=== section $s"
  case "$s" in
    simple)   B --label select-simple --clients "$(cl 1,16,64)" --warmup "$WARMUP" "${targs[@]}" -- -S -M simple ;;
    c256)     # direct PostgreSQL refuses 256 clients (max_connections 200): recorded once, as the kit does
              B --label select-simple-256 --reps 1 --duration 5 --retries 0 --clients "$(cl 256)" \
                --target "direct:$PG_PORT" -- -S -M simple || true
              B --label select-simple-256 --clients "$(cl 256)" "${ptargs[@]}" -- -S -M simple ;;
    extended) B --label select-extended --clients "$(cl 16,64)" "${targs[@]}" -- -S -M extended ;;
    prepared) B --label select-prepared --clients "$(cl 16,64)" "${targs[@]}" -- -S -M prepared ;;
    tpcb)     B --label tpcb            --clients "$(cl 16,64)" "${targs[@]}" -- -M simple ;;
    churn)    B --label churn-connect   --clients "$(cl 16)"    "${targs[@]}" -- -C -S -M simple ;;
  esac
done

python3 "$repo/benches/results_table.py" "$out" \
  --title "pgbench, REPS=$REPS DUR=$DUR, sections: ${sections[*]} (benches/compare.sh)" > "$run_dir/results.md"
cp "$run_dir/results.md" "$BENCH_ROOT/results.md"
echo
cat "$run_dir/results.md"
echo
say "results: $run_dir/results.md (also $BENCH_ROOT/results.md), runs: $out"
