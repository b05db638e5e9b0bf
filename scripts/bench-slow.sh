#!/usr/bin/env bash
# Benchmark of slow clients against the operator (issue 16, defect 1): N connections (default
# 10,000, from 20 loopback addresses) trickle a request head one byte a second, reconnecting
# when the server closes them, while a new client asks for an authenticated API page twice a
# second. Prints how many slow connections were open, how many of the new client's requests
# were served and how fast, and the operator's RSS at the peak and after the slow clients left.
# Release build; loopback only; prints figures, not a test.
# Usage: bench-slow.sh [CONNECTIONS] [SECONDS]   (defaults 10000, 30)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export OPSPLANE_CACHE=${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$OPSPLANE_CACHE/target}
conns=${1:-10000}
seconds=${2:-30}
cd "$root"
cargo build --release --locked -p opsplane-operator --bin opsplane-operator >&2
operator="$CARGO_TARGET_DIR/release/opsplane-operator"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
: > "$work/services.yaml"
OPSPLANE_TOKEN=bench-token OPSPLANE_LOG=warn "$operator" standalone --listen "127.0.0.1:$port" \
  --config "$work/services.yaml" --data-dir "$work/data" >/dev/null 2>&1 &
op=$!
trap 'kill $op 2>/dev/null; rm -rf "$work"' EXIT
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done
python3 - "$port" "$conns" "$seconds" "$op" <<'EOF'
import asyncio, socket, statistics, sys, time, urllib.request

port, conns, seconds, pid = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
hosts = [f"127.0.1.{i}" for i in range(1, 21)]
open_now = 0
peak_open = 0
closed_by_server = 0
stop = False

def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0

async def slow(i):
    global open_now, peak_open, closed_by_server
    host = hosts[i % len(hosts)]
    while not stop:
        try:
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind((host, 0))
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except OSError:
            await asyncio.sleep(1)
            continue
        open_now += 1
        peak_open = max(peak_open, open_now)
        try:
            writer.write(b"GET /monitoring/api/resource_types/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await writer.drain()
            while not stop:
                await asyncio.sleep(1)
                writer.write(b"a")
                await writer.drain()
                if reader.at_eof():
                    break
        except (OSError, ConnectionError):
            pass
        finally:
            open_now -= 1
            if not stop:
                closed_by_server += 1
            writer.close()

def probe():
    start = time.monotonic()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/monitoring/api/resource_types/",
                                 headers={"Authorization": "Bearer bench-token"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            ok = r.status == 200
    except Exception:
        ok = False
    return ok, (time.monotonic() - start) * 1000

async def main():
    global stop
    base_rss = rss_mib()
    tasks = [asyncio.create_task(slow(i)) for i in range(conns)]
    served, latencies, total, peak_rss, samples = 0, [], 0, 0.0, []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        await asyncio.sleep(0.5)
        ok, ms = await asyncio.to_thread(probe)
        total += 1
        served += ok
        if ok:
            latencies.append(ms)
        peak_rss = max(peak_rss, rss_mib())
        samples.append(open_now)
    stop = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(3)
    after = rss_mib()
    steady = statistics.median(samples[len(samples) // 2:]) if samples else 0
    lat = sorted(latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")
    print(f"\n== {conns} slow clients (one header byte a second, from {len(hosts)} addresses) for {seconds:.0f}s")
    print(f"  slow connections open: peak {peak_open}, median over the second half {steady:.0f}; closed by the server {closed_by_server} times (header-read timeout)")
    print(f"  new client meanwhile: {served}/{total} requests served, p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms")
    print(f"  operator RSS: {base_rss:.1f} MiB before, peak {peak_rss:.1f} MiB, {after:.1f} MiB 3 s after the slow clients left   (target: < 100 MiB)")

asyncio.run(main())
EOF
