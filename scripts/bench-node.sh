#!/usr/bin/env bash
# Benchmark of the node-daemon against Prometheus node_exporter on this host (issue 3), in one
# run: CPU per probe cycle vs CPU per node_exporter scrape, resident memory of both, the
# daemon's steady CPU share at 1 s sampling, and node API latency under wrk.
# Installs prometheus-node-exporter and wrk from Debian when missing. Prints figures; not a test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}
window=${1:-30}
if ! command -v prometheus-node-exporter >/dev/null || ! command -v wrk >/dev/null; then
  apt-get install -y prometheus-node-exporter wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y prometheus-node-exporter wrk >/dev/null; }
fi
cd "$root"
cargo build --release --locked -p opsplane-node-daemon >&2
bin="$CARGO_TARGET_DIR/release/opsplane-node-daemon"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }        # utime + stime, clock ticks
rss() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }     # KiB
hz=$(getconf CLK_TCK)
state=$(mktemp -d)
nd_port=$(port); ne_port=$(port)
OPSPLANE_TOKEN=bench "$bin" --listen "127.0.0.1:$nd_port" --sample-interval 1s --state-dir "$state" 2>/dev/null &
nd=$!
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" >/dev/null 2>&1 &
ne=$!
trap 'kill $nd $ne 2>/dev/null; rm -rf "$state"' EXIT
sleep 5
curl -s "http://127.0.0.1:$ne_port/metrics" >/dev/null

# node-daemon: steady state at 1 s sampling over the window = cost of `window` probe cycles.
c0=$(cpu $nd); sleep "$window"; c1=$(cpu $nd)
nd_cycle_ms=$(python3 -c "print(round(($c1-$c0)/$hz/$window*1000, 2))")
nd_share=$(python3 -c "print(round(($c1-$c0)/$hz/$window*100, 2))")
nd_rss=$(rss $nd)

# node_exporter: CPU of serving 20 scrapes (it collects on scrape).
scrapes=20
e0=$(cpu $ne)
for _ in $(seq $scrapes); do curl -s "http://127.0.0.1:$ne_port/metrics" >/dev/null; done
e1=$(cpu $ne)
ne_scrape_ms=$(python3 -c "print(round(($e1-$e0)/$hz/$scrapes*1000, 2))")
ne_rss=$(rss $ne)

# Node API latency under load (closed loop, 10 connections, 10 s).
lua=$(mktemp)
printf 'wrk.method = "POST"\nwrk.headers["Authorization"] = "Bearer bench"\n' > "$lua"
wrk_out=$(wrk -t1 -c10 -d10s --latency -s "$lua" "http://127.0.0.1:$nd_port/api/v1/monitor/cpu")
rm -f "$lua"
p99=$(echo "$wrk_out" | awk '$1 == "99%" { print $2 }')
rps=$(echo "$wrk_out" | awk '/Requests\/sec/ { print $2 }')

echo "bench-node (window ${window}s, clock ticks of ${hz}/s: CPU figures are ±$(python3 -c "print(round(1000/$hz/$window,2))") ms per cycle)"
echo "  node-daemon CPU per probe cycle:   ${nd_cycle_ms} ms   (all probes, 1 s sampling, includes idle overhead)"
echo "  node_exporter CPU per scrape:      ${ne_scrape_ms} ms"
echo "  ratio node-daemon / node_exporter: $(python3 -c "print(round($nd_cycle_ms/$ne_scrape_ms, 2) if $ne_scrape_ms else 'n/a')")   (target <= 0.5)"
echo "  node-daemon steady CPU:            ${nd_share} % of one core   (target <= 0.5 %)"
echo "  RSS node-daemon / node_exporter:   $((nd_rss / 1024)) MiB / $((ne_rss / 1024)) MiB   (target <= 15 MB)"
echo "  node API under wrk (10 conns):     ${rps} req/s, p99 ${p99}   (target p99 < 1 ms at 1,000 req/s)"
