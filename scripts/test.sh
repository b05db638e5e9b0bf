#!/usr/bin/env bash
# Runs every test of opsplane on a fresh machine: builds what the tests need (the e2e harness
# with a real kube-apiserver, helm) into a cache outside the clone, then the whole cargo suite
# (unit, API-over-TCP, CRD, chart and e2e tests).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}

for tool in cargo go; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is required but not on PATH" >&2; exit 1; }
done

# Network-namespace tests (node-daemon network probe, e2e instances) need iproute2.
if ! command -v ip >/dev/null; then
  apt-get install -y iproute2 >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y iproute2 >/dev/null; }
fi

# The store conformance suite and the monitoring API tests start their own redis-server.
if ! command -v redis-server >/dev/null; then
  apt-get install -y redis-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y redis-server >/dev/null; }
fi
# Debian's package starts a system-wide server on 6379; the tests never use it.

# The console's browser test (operator/tests/console_browser.rs) drives Debian's headless
# Chromium through Debian's chromedriver (a browser download at install time fails here).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get install -y chromium chromium-driver >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y chromium chromium-driver >/dev/null; }
fi
# The image test (e2e/tests/image.rs) builds the OCI archive with umoci and converts it with
# skopeo, as scripts/build-image.sh does (no docker daemon, no registry).
for tool in umoci skopeo; do
  if ! command -v "$tool" >/dev/null; then
    apt-get install -y "$tool" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$tool" >/dev/null; }
  fi
done
# The chart's alert rules are checked and unit-tested with promtool (Debian's prometheus package).
if ! command -v promtool >/dev/null; then
  apt-get install -y prometheus >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y prometheus >/dev/null; }
fi
# The OpenAPI conformance test (operator/tests/openapi_conformance.rs) runs openapi-spec-validator
# and schemathesis from a venv of their own, inside a network namespace made with `unshare`.
command -v unshare >/dev/null || apt-get install -y util-linux >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y util-linux >/dev/null; }
bash "$root/scripts/openapi-tools.sh" >/dev/null

bash "$root/scripts/build-e2e-tools.sh"
# The monitoring API tests replay GeoNode 4.4.5's own test fixture.
export OPSPLANE_GEONODE_DIR=${OPSPLANE_GEONODE_DIR:-$OPSPLANE_CACHE/geonode-4.4.5}
bash "$root/scripts/fetch-geonode.sh"

cd "$root"
cargo test --workspace --locked --no-fail-fast "$@"
