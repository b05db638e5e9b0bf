#!/usr/bin/env bash
# Benchmark of the Eve resource API (issue 11): with 1,000 MonitoredServices on the e2e
# kube-apiserver, `GET /api/v1/services?max_results=100` and an item GET at a fixed rate against
# a LIST of the same objects straight from the kube-apiserver, and PATCH with If-Match against a
# direct PATCH. Arguments: [SECONDS=5] [RATE=1000]. PROFILE=dev runs an unoptimised build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}
profile=${PROFILE:-release}
cd "$root"
bash scripts/build-e2e-tools.sh >/dev/null
if [ "$profile" = release ]; then
  cargo build --release --locked -p opsplane-operator -p opsplane-e2e --bin opsplane-operator --bin bench-eve
  "$CARGO_TARGET_DIR/release/bench-eve" "$@"
else
  cargo build --locked -p opsplane-operator -p opsplane-e2e --bin opsplane-operator --bin bench-eve
  "$CARGO_TARGET_DIR/debug/bench-eve" "$@"
fi
