#!/usr/bin/env bash
# Benchmark of the auth + rate-limit layer (issue 18), in one run against one redis-server on
# loopback, on a route that reads nothing from the store (so every Redis command is the
# limiter's): p99 of an authenticated GET at a fixed rate (open loop, bench-rate) with the limiter
# on and off; Redis commands per request; and the limited requests/s one process sustains
# (wrk, closed loop) with its Redis commands per request. Prints figures; not a test.
# Usage: bench-auth.sh [RATE] [SECONDS] [ROUNDS]   (defaults 2000 req/s, 10 s, 5 rounds)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}
rate=${1:-2000}
seconds=${2:-10}
rounds=${3:-5}
warmup=2  # seconds bench-rate sends at the same rate before it measures
for tool in redis-server wrk; do
  command -v "$tool" >/dev/null || { apt-get install -y redis-server wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y redis-server wrk >/dev/null; }; }
done
cd "$root"
cargo build --release --locked -p opsplane-operator -p opsplane-node-daemon --bins >&2
operator="$CARGO_TARGET_DIR/release/opsplane-operator"
bench_rate="$CARGO_TARGET_DIR/release/bench-rate"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
redis_port=$(port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$work" >/dev/null &
redis=$!
# start() runs in a command substitution (a subshell): the operators' pids go to a file, so the
# trap stops them too.
echo "$redis" > "$work/pids"
trap 'kill $(cat "$work/pids") 2>/dev/null; rm -rf "$work"' EXIT
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
: > "$work/services.yaml"
start() {  # name rate-limit -> port
  local p; p=$(port)
  mkdir -p "$work/$1"
  OPSPLANE_TOKEN=bench-token OPSPLANE_REDIS_URL="redis://127.0.0.1:$redis_port/0" OPSPLANE_LOG=warn OPSPLANE_NODE_AGENT=false \
    "$operator" standalone --listen "127.0.0.1:$p" --config "$work/services.yaml" --data-dir "$work/$1" \
    --rate-limit "$2" >/dev/null 2>&1 &
  echo "$!" >> "$work/pids"
  until curl -sf "http://127.0.0.1:$p/healthz" >/dev/null; do sleep 0.1; done
  echo "$p"
}
on=$(start on "GET=1000000000/1h")
off=$(start off off)
route=/monitoring/api/resource_types/
fixed() {  # port
  "$bench_rate" --method GET --expect '"resource_types"' --url "http://127.0.0.1:$1$route" \
    --rate "$rate" --duration "${seconds}s" --warmup "${warmup}s" --token bench-token | awk '/^RESULT/ { $1 = ""; print }'
}
# Commands the clients sent: Redis also counts the INCR/EXPIRE run inside the limiter's script,
# which are no round trips, so those two are left out (nothing else here sends them).
calls() { redis-cli -p "$redis_port" info commandstats | awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_incr" && $1 != "cmdstat_expire" { n += $3 } END { print n }'; }
# ROUNDS rounds of off, on, off: a round's figure is on minus the mean of its two offs, so the
# host's drift (other work on a shared machine) shows as the spread of the rounds; the figure
# reported is their median.
p99() { echo "$1" | sed -E 's/^ *p50_ms=[0-9.]+ p99_ms=([0-9.]+).*/\1/'; }  # not sent_p99_ms
p50() { echo "$1" | sed -E 's/^ *p50_ms=([0-9.]+).*/\1/'; }
added99=() added50=() lines=() cmds=0 requests=0
for round in $(seq "$rounds"); do
  off_a=$(fixed "$off")
  c0=$(calls)
  on_r=$(fixed "$on")
  c1=$(calls)
  off_b=$(fixed "$off")
  # Every request sent while limited counts, the warm-up's too (they were limited as well).
  requests=$((requests + $(echo "$on_r" | sed -E 's/.*ok=([0-9]+).*/\1/') + rate * warmup))
  cmds=$((cmds + c1 - c0))
  added99+=("$(python3 -c "print(round($(p99 "$on_r") - ($(p99 "$off_a") + $(p99 "$off_b"))/2, 3))")")
  added50+=("$(python3 -c "print(round($(p50 "$on_r") - ($(p50 "$off_a") + $(p50 "$off_b"))/2, 3))")")
  lines+=("  round $round: off $off_a" "           on  $on_r" "           off $off_b")
done
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
lua="$work/get.lua"
printf 'wrk.method = "GET"\nwrk.headers["Authorization"] = "Bearer bench-token"\n' > "$lua"
c0=$(calls)
wrk_on_out=$(wrk -t2 -c32 -d10s -s "$lua" "http://127.0.0.1:$on$route")
c1=$(calls)
wrk_on=$(echo "$wrk_on_out" | awk '/Requests\/sec/ { print $2 }')
wrk_on_requests=$(echo "$wrk_on_out" | awk '/requests in/ { print $1 }')
wrk_off=$(wrk -t2 -c32 -d10s -s "$lua" "http://127.0.0.1:$off$route" | awk '/Requests\/sec/ { print $2 }')
echo
echo "== auth + rate limits, GET $route at $rate req/s, $rounds rounds of ${seconds}s off/on/off (open loop), Redis on loopback"
printf '%s\n' "${lines[@]}"
echo "  p99 added by the limiter, per round: ${added99[*]} ms; median $(median "${added99[@]}") ms   (target <= 0.3 ms)"
echo "  p50 added by the limiter, per round: ${added50[*]} ms; median $(median "${added50[@]}") ms"
echo "  Redis commands per limited request: $(python3 -c "print(round($cmds / max($requests, 1), 3))")   (target 1)"
echo "  closed loop (wrk, 32 connections): limiter on ${wrk_on} req/s, off ${wrk_off} req/s   (target >= 20,000 limited req/s)"
echo "  closed loop: Redis commands per limited request $(python3 -c "print(round(($c1 - $c0) / max($wrk_on_requests, 1), 3))") (concurrent hits share one script call)"
