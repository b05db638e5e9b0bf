#!/usr/bin/env bash
# Re-vendors the console's one third-party piece, uPlot, from npm at the version package.json
# and package-lock.json pin (npm ci checks the lockfile's integrity hash). The copied files are
# committed under web/vendor/, so `cargo build` never needs npm or a network.
# Usage: bash console/vendor.sh   (after changing the version: npm install uplot@X in console/)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v npm >/dev/null || { echo "vendor.sh: npm is required" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
dist="$work/node_modules/uplot/dist"
mkdir -p "$here/web/vendor"
cp "$dist/uPlot.iife.min.js" "$here/web/vendor/uPlot.iife.min.js"
cp "$dist/uPlot.min.css" "$here/web/vendor/uPlot.min.css"
cp "$work/node_modules/uplot/LICENSE" "$here/web/vendor/uPlot.LICENSE"
version=$(node -p "require('$work/node_modules/uplot/package.json').version")
echo "uPlot $version" > "$here/web/vendor/VERSION"
echo "vendored uPlot $version into $here/web/vendor"
