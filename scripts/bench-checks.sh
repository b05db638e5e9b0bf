#!/usr/bin/env bash
# Benchmark of the MonitoredService controller at scale (issue 5): builds the e2e tools and the
# release binaries, then runs e2e/src/bin/bench-checks.rs. Arguments: [SERVICES=1000] [WINDOW_SECONDS=60].
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}
bash "$root/scripts/build-e2e-tools.sh"
cd "$root"
cargo build --release --locked -p opsplane-operator -p opsplane-e2e --bin opsplane-operator --bin bench-checks
"$CARGO_TARGET_DIR/release/bench-checks" "$@"
