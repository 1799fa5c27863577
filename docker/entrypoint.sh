#!/bin/sh
# pgsluice's container entrypoint. Reads the config at $PGSLUICE_CONFIG (default
# /etc/pgsluice/pgsluice.toml); when PGSLUICE_* variables are set (the table below), writes the config
# with those [pgsluice] settings replaced to $PGSLUICE_RUN_DIR/pgsluice.toml. Then runs
# `pgsluice --check` on the config it will use, and only if that passes execs pgsluice on it, with any
# arguments given (e.g. --log-format json). A first argument that is not an option runs as a command.
set -eu

config="${PGSLUICE_CONFIG:-/etc/pgsluice/pgsluice.toml}"
run_dir="${PGSLUICE_RUN_DIR:-/run/pgsluice}"
bin="${PGSLUICE_BIN:-pgsluice}"

# Variable, the [pgsluice] key it sets, and the value's kind (str: quoted; num; bool).
overrides='PGSLUICE_LISTEN_ADDR listen_addr str
PGSLUICE_LISTEN_PORT listen_port num
PGSLUICE_POOL_MODE pool_mode str
PGSLUICE_POOL_SIZE default_pool_size num
PGSLUICE_MIN_POOL_SIZE min_pool_size num
PGSLUICE_RESERVE_POOL_SIZE reserve_pool_size num
PGSLUICE_MAX_CLIENT_CONN max_client_conn num
PGSLUICE_MAX_DB_CONNECTIONS max_db_connections num
PGSLUICE_MAX_USER_CONNECTIONS max_user_connections num
PGSLUICE_QUERY_WAIT_TIMEOUT query_wait_timeout num
PGSLUICE_TRANSACTION_TIMEOUT transaction_timeout num
PGSLUICE_SERVER_LIFETIME server_lifetime num
PGSLUICE_AUTH_TYPE auth_type str
PGSLUICE_AUTH_FILE auth_file str
PGSLUICE_ADMIN_USERS admin_users str
PGSLUICE_STATS_USERS stats_users str
PGSLUICE_METRICS_ADDR metrics_addr str
PGSLUICE_WORKERS workers num
PGSLUICE_SO_REUSEPORT so_reuseport bool'

die() {
  echo "pgsluice-entrypoint: $*" >&2
  exit 1
}

case "${1:-}" in
  "" | -*) ;;
  *) exec "$@" ;;
esac

[ -r "$config" ] || die "no config at $config: mount one there, or set PGSLUICE_CONFIG"

# "key = value" lines for the variables that are set.
settings=""
keys=""
nl='
'
while read -r var key kind; do
  eval "set_=\${$var+x} value=\${$var-}"
  [ -n "$set_" ] || continue
  case "$kind" in
    num) case "$value" in "" | *[!0-9.]*) die "$var must be a number, not '$value'" ;; esac ;;
    bool) case "$value" in true | false) ;; *) die "$var must be true or false, not '$value'" ;; esac ;;
    str)
      case "$value" in *'"'* | *'\'* | *"$nl"*) die "$var must not contain quotes, backslashes or newlines" ;; esac
      case "$key" in *_file) case "$value" in /*) ;; *) die "$var must be an absolute path" ;; esac ;; esac
      value="\"$value\""
      ;;
  esac
  settings="$settings$key = $value$nl"
  keys="$keys $key"
done <<EOT
$overrides
EOT

effective="$run_dir/pgsluice.toml"
if [ -z "$keys" ]; then
  rm -f "$effective" # a file left from an earlier start would mislead the healthcheck
  effective="$config"
else
  echo "pgsluice-entrypoint: from the environment:$keys" >&2
  mkdir -p "$run_dir"
  umask 077
  # Replaces the overridden keys in [pgsluice] (adding the section if the file has none) and makes a
  # relative *_file name absolute: pgsluice takes it relative to the config, which now lives elsewhere.
  awk -v keys="$keys" -v settings="$settings" -v dir="$(cd "$(dirname "$config")" && pwd)" '
    BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) drop[k[i]] = 1 }
    function name_of(line) { sub(/^[ \t]*\[[ \t]*/, "", line); sub(/[ \t]*\].*$/, "", line); return line }
    NR == FNR { if ($0 ~ /^[ \t]*\[/ && name_of($0) == "pgsluice") has = 1; next }
    FNR == 1 && !has { printf "[pgsluice]\n%s", settings }
    /^[ \t]*\[/ {
      section = name_of($0)
      if (section == "pgsluice") { printf "%s\n%s", $0, settings; next }
    }
    section == "pgsluice" {
      key = $0; sub(/^[ \t]*/, "", key); sub(/[ \t]*=.*$/, "", key)
      if (key in drop) next
      if (key ~ /_file$/ && $0 ~ /=[ \t]*"[^\/"]/) sub(/=[ \t]*"/, "= \"" dir "/")
    }
    { print }
  ' "$config" "$config" >"$effective.tmp"
  mv "$effective.tmp" "$effective"
fi

"$bin" --check "$effective" >/dev/null || die "the config does not pass pgsluice --check (above); not starting"
exec "$bin" "$@" "$effective"
