#!/bin/sh
# Builds the Debian package into $CARGO_TARGET_DIR/debian/ (or cargo deb's --output): the binary, its man
# page (pgsluice --print-man), then `cargo deb --no-build` with these files (Cargo.toml's
# [package.metadata.deb]). Needs cargo-deb: cargo install --locked cargo-deb --version 3.8.0.
#   PROFILE=release (default) or another cargo profile; NO_BUILD=1 packages the binary already built.
#   Further arguments go to cargo deb (e.g. --output DIR). The packaged binary is stripped (--strip:
#   [profile.release] keeps debug info, which cargo deb would otherwise ship).
set -eu
cd "$(dirname "$0")/../.."
profile=${PROFILE:-release}
case $profile in
    dev) dir=debug ;;
    *) dir=$profile ;;
esac
out=${CARGO_TARGET_DIR:-target}/$dir
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --profile "$profile" --bin pgsluice
fi
"$out/pgsluice" --print-man | gzip -9n > "$out/pgsluice.1.gz"
exec cargo deb --no-build --strip --profile "$profile" "$@"
