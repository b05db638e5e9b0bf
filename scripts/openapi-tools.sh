#!/usr/bin/env bash
# Makes the Python venv with openapi-spec-validator and schemathesis (PyPI, pinned in
# scripts/openapi/requirements.txt) under $OPSPLANE_CACHE/openapi-venv, once per version of the
# requirements; the operator's openapi_conformance test runs them. Prints the venv's path.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
venv=$cache/openapi-venv
requirements=$root/scripts/openapi/requirements.txt
stamp=$venv/requirements.stamp
if [ -x "$venv/bin/schemathesis" ] && cmp -s "$requirements" "$stamp"; then
  echo "$venv"
  exit 0
fi
command -v python3 >/dev/null || { echo "openapi-tools.sh: python3 is required" >&2; exit 1; }
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  apt-get install -y python3-venv >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y python3-venv >/dev/null; }
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
cp "$requirements" "$stamp"
echo "$venv"
