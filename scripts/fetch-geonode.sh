#!/usr/bin/env bash
# Puts GeoNode 4.4.5's monitoring app (the last GeoNode that ships it) under
# ${OPSPLANE_GEONODE_DIR:-${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}/geonode-4.4.5}/ (outside the clone, kept): its code, its test fixture and its prebuilt frontend, which
# operator/tests/monitoring_api.rs replays against opsplane. A no-op when already there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${OPSPLANE_GEONODE_DIR:-${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}/geonode-4.4.5}
if [ -f "$dest/geonode/monitoring/fixtures/metric_data.json" ]; then
    exit 0
fi
command -v pip >/dev/null || command -v pip3 >/dev/null || {
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
}
pip=$(command -v pip || command -v pip3)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$pip" download --quiet --no-deps geonode==4.4.5 -d "$tmp"
mkdir -p "$dest"
python3 -m zipfile -e "$tmp"/geonode-4.4.5-*.whl "$tmp/unpacked"
mkdir -p "$dest/geonode"
rm -rf "$dest/geonode/monitoring"
mv "$tmp/unpacked/geonode/monitoring" "$dest/geonode/monitoring"
