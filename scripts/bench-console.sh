#!/usr/bin/env bash
# Measures the web console's first meaningful render in Debian's headless Chromium against the
# operator binary standalone, next to a baseline navigation (/healthz) in the same run.
# Usage: bash scripts/bench-console.sh [LOADS]   (default 30)
# Builds the dev profile (the same binary the tests run); pass OPSPLANE_BENCH_PROFILE=release
# for an optimised build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}
profile=${OPSPLANE_BENCH_PROFILE:-dev}
for tool in chromium chromedriver; do
  command -v "$tool" >/dev/null || { echo "bench-console.sh: $tool is required (apt-get install chromium chromium-driver)" >&2; exit 1; }
done
cd "$root"
cargo build -q --profile "$profile" -p opsplane-operator --bin opsplane-operator --example bench_console
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
"$CARGO_TARGET_DIR/$dir/examples/bench_console" "$CARGO_TARGET_DIR/$dir/opsplane-operator" "${1:-30}"
