#!/usr/bin/env bash
# Runs inside a network namespace of its own (the caller's `unshare --net`): only loopback, so
# nothing the fuzzer creates (a MonitoredService URL, a NodeTask) reaches another host. Starts
# the standalone operator on loopback, validates its OpenAPI document with
# openapi-spec-validator, then runs schemathesis against every operation of it (the examples
# and fuzzing phases; its coverage phase fails inside its own generator on the CRD schemas).
# Usage: conformance.sh OPERATOR_BINARY VENV WORK_DIR MAX_EXAMPLES
set -euo pipefail
operator=$1 venv=$2 dir=$3 examples=$4
ip link set lo up
port=18080
token=conformance-token
: > "$dir/services.yaml"
OPSPLANE_TOKEN=$token "$operator" standalone --listen "127.0.0.1:$port" \
  --config "$dir/services.yaml" --data-dir "$dir" --rate-limit off >"$dir/operator.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do
  if "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done
"$venv/bin/python" - "$port" "$token" "$dir/openapi.json" <<'PY'
import sys, urllib.request
port, token, out = sys.argv[1:]
req = urllib.request.Request(f"http://127.0.0.1:{port}/openapi.json", headers={"Authorization": f"Bearer {token}"})
open(out, "wb").write(urllib.request.urlopen(req, timeout=10).read())
PY
"$venv/bin/openapi-spec-validator" "$dir/openapi.json"
cd "$dir" # schemathesis keeps its .schemathesis/ cache in the working directory
"$venv/bin/schemathesis" run "$dir/openapi.json" --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" --seed 1 --generation-deterministic --workers 2 \
  --request-timeout 20 --no-color --report-dir "$dir/report" \
  --phases examples,fuzzing
