#!/usr/bin/env bash
# Benchmark of the metric store and the seed 001 API (issue 6): ingestion events/s into Redis
# through the batch endpoint vs redis-benchmark's pipelined SETs, and metric_data over 7 days of
# 1-minute data (50 labels, interval=3600) vs Prometheus query_range over the same samples.
# Argument: [INGEST_SECONDS=20]. Installs redis-server and prometheus (Debian) when missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}
for pkg in redis-server:redis-server redis-benchmark:redis-tools prometheus:prometheus promtool:prometheus; do
  cmd=${pkg%%:*}; deb=${pkg#*:}
  command -v "$cmd" >/dev/null || apt-get install -y "$deb" >/dev/null
done
cd "$root"
cargo build --release --locked -p opsplane-operator -p opsplane-e2e --bin opsplane-operator --bin bench-store
"$CARGO_TARGET_DIR/release/bench-store" "$@"
