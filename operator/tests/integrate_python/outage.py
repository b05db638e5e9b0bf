"""A real Flask app (werkzeug's server on a loopback port) integrated with an opsplane that is
not running: it must keep answering fast, hold what its queue holds, drop and count the rest,
and send again once opsplane is back on the same port.

usage: outage.py <opsplane port> <token>
Prints one JSON line {"phase": "down", ...}, waits for a line on stdin (the test has started
opsplane), prints {"phase": "up", ...} after a flush, then makes three more requests, fewer than
a batch, and exits without flushing: the reporter's atexit flush must send them.
"""

import json
import sys
import threading
import time
import urllib.request

from flask import Flask
from werkzeug.serving import make_server

from opsplane_integrate import integrate

PORT, TOKEN = sys.argv[1], sys.argv[2]
QUEUE, BATCH = 20, 5

app = Flask("outage")


@app.get("/<name>")
def page(name):
    return f"page {name}"


reporter = integrate(
    app,
    service="outage-shop",
    url=f"http://127.0.0.1:{PORT}",
    token=TOKEN,
    queue_size=QUEUE,
    batch_size=BATCH,
    # Batches go when full (or flushed): the last three requests stay queued until the exit.
    interval=30,
    max_backoff=0.3,
    timeout=2,
    flush_timeout=10,
)
server = make_server("127.0.0.1", 0, app, threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()


def get(path, n):
    slowest = 0.0
    for _ in range(n):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{path}", timeout=10) as r:
            assert r.status == 200 and r.read() == f"page {path[1:]}".encode()
        slowest = max(slowest, time.perf_counter() - started)
    return slowest * 1000


def emit(**fields):
    print(json.dumps(fields), flush=True)


# Fewer requests than the queue and a batch hold: nothing is dropped yet.
slowest = get("/before", 10)
time.sleep(0.5)
early = vars(reporter.counters())
slowest = max(slowest, get("/before", 50))
time.sleep(0.5)
emit(phase="down", early=early, counters=vars(reporter.counters()), slowest_ms=slowest)

sys.stdin.readline()
# What was held goes at the next try (within max_backoff); only then is there room again.
held_sent = reporter.flush(15)
slowest = get("/after", 10)
flushed = held_sent and reporter.flush(15)
emit(phase="up", flushed=flushed, counters=vars(reporter.counters()), slowest_ms=slowest)
get("/late", 3)
# werkzeug reports a request when it closes the body, just after the client has it: wait until
# the three are queued (not sent: the batch is not full), then exit without a flush.
deadline = time.monotonic() + 10
while reporter.counters().queued < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
assert reporter.counters().queued == 3, reporter.counters()
