#!/usr/bin/env bash
# Benchmark of the Eve resource API (issue 11): with 1,000 MonitoredServices on the e2e
# kube-apiserver, `GET /api/v1/services?max_results=100` and an item GET at a fixed rate against
# a LIST of the same objects straight from the kube-apiserver, and PATCH with If-Match against a
# direct PATCH. Arguments: [SECONDS=5] [RATE=1000] [PATCHES=3000]. PROFILE=dev runs an unoptimised build.
# STORE=redis (the default, as the chart deploys it: a redis-server on loopback) or
# STORE=embedded (the operator's own redb file, each write fsynced). APISERVER_CPUS=N bounds the
# e2e API server's Go runtime to N cores (GOMAXPROCS), as when it runs on machines of its own.
set -euo pipefail
if [ -n "${APISERVER_CPUS:-}" ]; then export OPSPLANE_E2E_APISERVER_GOMAXPROCS=$APISERVER_CPUS; fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}
profile=${PROFILE:-release}
cd "$root"
bash scripts/build-e2e-tools.sh >/dev/null
if [ "${STORE:-redis}" = redis ]; then
  command -v redis-server >/dev/null || { apt-get install -y redis-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y redis-server >/dev/null; }; }
  redis_dir=$(mktemp -d)
  redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$redis_dir" >/dev/null &
  redis_pid=$!
  trap 'kill $redis_pid 2>/dev/null; rm -rf "$redis_dir"' EXIT
  until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
  export OPSPLANE_REDIS_URL="redis://127.0.0.1:$redis_port/0"
else
  unset OPSPLANE_REDIS_URL
fi
if [ "$profile" = release ]; then
  cargo build --release --locked -p opsplane-operator -p opsplane-e2e --bin opsplane-operator --bin bench-eve
  "$CARGO_TARGET_DIR/release/bench-eve" "$@"
else
  cargo build --locked -p opsplane-operator -p opsplane-e2e --bin opsplane-operator --bin bench-eve
  "$CARGO_TARGET_DIR/debug/bench-eve" "$@"
fi
