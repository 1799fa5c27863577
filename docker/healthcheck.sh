#!/bin/bash
# The image's HEALTHCHECK: exits 0 when GET /readyz (or the path given as $1) on pgsluice's metrics_addr
# answers 200. The address comes from PGSLUICE_METRICS_ADDR, else from the config the entrypoint started
# pgsluice with. Plain bash (/dev/tcp): the image has no curl.
set -u
config="${PGSLUICE_CONFIG:-/etc/pgsluice/pgsluice.toml}"
effective="${PGSLUICE_RUN_DIR:-/run/pgsluice}/pgsluice.toml"
[ -f "$effective" ] && config="$effective"
addr="${PGSLUICE_METRICS_ADDR:-}"
if [ -z "$addr" ]; then
  addr=$(sed -n 's/^[[:space:]]*metrics_addr[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$config" | head -n 1)
fi
if [ -z "$addr" ]; then
  echo "metrics_addr is not set in $config: there is no /readyz to ask" >&2
  exit 1
fi
port="${addr##*:}"
host="${addr%:*}"
host="${host#[}"
host="${host%]}"
case "$host" in
  "" | 0.0.0.0) host=127.0.0.1 ;;
  ::) host=::1 ;;
esac
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "${1:-/readyz}" "$host" >&3
read -r -t 5 _ status _ <&3 || exit 1
echo "${1:-/readyz}: $status"
[ "$status" = 200 ]
