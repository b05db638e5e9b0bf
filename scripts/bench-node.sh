#!/usr/bin/env bash
# Benchmark of the node-daemon against Prometheus node_exporter on this host (issue 3), in one
# run: CPU per probe cycle vs CPU per node_exporter scrape, resident memory of both, the
# daemon's steady CPU share at 1 s sampling, node API latency at a fixed rate (open loop,
# bench-rate: 1,000 req/s on cpu and on disk, 100 req/s on port_status) and throughput under
# wrk (closed loop).
# Usage: bench-node.sh [WINDOW_SECONDS] ; RATE (req/s) and RATE_SECONDS override the fixed-rate run.
# Installs prometheus-node-exporter and wrk from Debian when missing. Prints figures; not a test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}
window=${1:-30}
rate=${RATE:-1000}
rate_seconds=${RATE_SECONDS:-30}
if ! command -v prometheus-node-exporter >/dev/null || ! command -v wrk >/dev/null; then
  apt-get install -y prometheus-node-exporter wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y prometheus-node-exporter wrk >/dev/null; }
fi
cd "$root"
cargo build --release --locked -p opsplane-node-daemon --bins >&2
bin="${NODE_DAEMON_BIN:-$CARGO_TARGET_DIR/release/opsplane-node-daemon}"   # NODE_DAEMON_BIN: compare another build
bench_rate="$CARGO_TARGET_DIR/release/bench-rate"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hz=$(getconf CLK_TCK)
# CPU time of a process in ns: the scheduler's exact run time of each of its threads
# (/proc/PID/task/*/schedstat) plus its waited-for children's (systemctl), which /proc/PID/stat
# only has in clock ticks. utime + stime alone are sampled at each tick: too coarse for a
# cycle of a millisecond.
cpu() {
  local threads children
  threads=$(cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%d", s }')
  children=$(awk -v hz="$hz" '{ printf "%d", ($16 + $17) * 1e9 / hz }' "/proc/$1/stat")
  echo $((threads + children))
}
rss() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }     # KiB
state=$(mktemp -d)
nd_port=$(port); ne_port=$(port)
# The node API's rate limits would refuse a benchmark client (env: a build without the flag ignores it).
OPSPLANE_RATE_LIMIT=off OPSPLANE_TOKEN=bench "$bin" --listen "127.0.0.1:$nd_port" --sample-interval 1s --state-dir "$state" 2>/dev/null &
nd=$!
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" >/dev/null 2>&1 &
ne=$!
trap 'kill $nd $ne 2>/dev/null; rm -rf "$state"' EXIT
sleep 5
curl -s "http://127.0.0.1:$ne_port/metrics" >/dev/null

# node-daemon: steady state at 1 s sampling over the window = cost of `window` probe cycles.
c0=$(cpu $nd); sleep "$window"; c1=$(cpu $nd)
nd_cycle_ms=$(python3 -c "print(round(($c1-$c0)/1e6/$window, 3))")
nd_share=$(python3 -c "print(round(($c1-$c0)/1e9/$window*100, 3))")
nd_rss=$(rss $nd)

# node_exporter: CPU of serving 20 scrapes (it collects on scrape).
scrapes=20
e0=$(cpu $ne)
for _ in $(seq $scrapes); do curl -s "http://127.0.0.1:$ne_port/metrics" >/dev/null; done
e1=$(cpu $ne)
ne_scrape_ms=$(python3 -c "print(round(($e1-$e0)/1e6/$scrapes, 3))")
ne_rss=$(rss $ne)

# Node API latency at a fixed rate: open loop, latency from each request's scheduled send time.
fixed_rate() {  # endpoint [rate] [seconds] [body]
  "$bench_rate" --url "http://127.0.0.1:$nd_port/api/v1/monitor/$1" --rate "${2:-$rate}" \
    --duration "${3:-$rate_seconds}s" --body "${4:-}" --token bench \
    | tee /dev/stderr | awk '/^RESULT/ { $1 = ""; print }'
}
# What else ran meanwhile: the other jobs on this host and the hypervisor's steal time show in
# the tail of any latency measured here, the client's pacing lag included.
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat; }  # busy, steal ticks
read -r b0 s0 < <(busy); l0=$(cut -d' ' -f1 /proc/loadavg)
cpu_rate=$(fixed_rate cpu)
disk_rate=$(fixed_rate disk)
read -r b1 s1 < <(busy); l1=$(cut -d' ' -f1 /proc/loadavg)
# port_status asks the kernel on each request (sock_diag walks the connection hash table).
port_rate=$(fixed_rate port_status 100 10 '{"ports": "5900,5901,5902,22"}')
cores=$(nproc)
host_load=$(python3 -c "t=2*$rate_seconds+4; print(f'host CPU busy {($b1-$b0)/$hz/t/$cores*100:.0f} % of {$cores} cores, steal {($s1-$s0)/$hz/t/$cores*100:.1f} %, load average {$l0} -> {$l1}')")
nd_rss_loaded=$(rss $nd)

# Throughput under wrk (closed loop, 10 connections, 10 s): what the API serves flat out.
lua=$(mktemp)
printf 'wrk.method = "POST"\nwrk.headers["Authorization"] = "Bearer bench"\n' > "$lua"
wrk_out=$(wrk -t1 -c10 -d10s --latency -s "$lua" "http://127.0.0.1:$nd_port/api/v1/monitor/cpu")
rm -f "$lua"
p99=$(echo "$wrk_out" | awk '$1 == "99%" { print $2 }')
rps=$(echo "$wrk_out" | awk '/Requests\/sec/ { print $2 }')

echo "bench-node (window ${window}s; CPU from the scheduler's per-thread run time)"
echo "  node-daemon CPU per probe cycle:   ${nd_cycle_ms} ms   (all probes, 1 s sampling, includes idle overhead)"
echo "  node_exporter CPU per scrape:      ${ne_scrape_ms} ms"
echo "  ratio node-daemon / node_exporter: $(python3 -c "print(round($nd_cycle_ms/$ne_scrape_ms, 3) if $ne_scrape_ms else 'n/a')")   (target <= 0.5)"
echo "  node-daemon steady CPU:            ${nd_share} % of one core   (target <= 0.5 %)"
echo "  RSS node-daemon / node_exporter:   $((nd_rss / 1024)) MiB / $((ne_rss / 1024)) MiB   (target <= 15 MB; node-daemon after the load runs: $((nd_rss_loaded / 1024)) MiB)"
echo "  node API at ${rate} req/s, ${rate_seconds} s, cpu:   ${cpu_rate}   (target p99 < 1 ms)"
echo "  node API at ${rate} req/s, ${rate_seconds} s, disk:  ${disk_rate}"
echo "    during these two runs: ${host_load}"
echo "  node API at 100 req/s, 10 s, port_status (4 ports): ${port_rate}"
echo "  node API under wrk (10 conns, closed loop): ${rps} req/s, p99 ${p99}"
