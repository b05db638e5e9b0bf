#!/usr/bin/env bash
# Puts GeoNode 4.4.5's monitoring app (the last GeoNode that ships it) under
# ${OPSPLANE_GEONODE_DIR:-${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}/geonode-4.4.5}/ (outside the clone, kept): its code, its test fixture and its prebuilt frontend, which
# operator/tests/monitoring_api.rs replays against opsplane, and its prebuilt frontend (static/
# with bundle.js, templates/, the frontend/ sources), which operator/tests/geonode_frontend.rs loads
# in a browser. A no-op when every file those tests read is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${OPSPLANE_GEONODE_DIR:-${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}/geonode-4.4.5}
needed=(
    fixtures/metric_data.json
    static/monitoring/bundle.js
    static/monitoring/translations/en.json
    static/monitoring/assets/world-50m.json
    templates/monitoring/index.html
    frontend/src/routes.js
    frontend/monitoring/src/routes.js
)
missing=0
for f in "${needed[@]}"; do
    [ -f "$dest/geonode/monitoring/$f" ] || missing=1
done
if [ "$missing" = 0 ]; then
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
for f in "${needed[@]}"; do
    [ -f "$dest/geonode/monitoring/$f" ] || { echo "fetch-geonode.sh: the wheel has no geonode/monitoring/$f" >&2; exit 1; }
done
