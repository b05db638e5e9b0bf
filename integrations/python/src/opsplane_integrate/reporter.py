"""The reporter: a bounded in-memory queue of request events and one background thread that
posts them in batches to opsplane's ingestion endpoint (``POST /monitoring/api/ingest/``,
docs/monitoring.md), off the request path.

What it promises the app: :meth:`Reporter.report` never blocks and never raises. When the queue
is full the new event is dropped and counted. What the server cannot take now (no connection, a
timeout, 408, 429, 5xx) is retried with a capped exponential backoff while the queue keeps
filling; what it refuses as invalid (another 4xx) is dropped, counted and logged once. At exit
(``atexit``) what is queued is sent within a bounded time.
"""

import atexit
import http.client
import json
import logging
import os
import random
import re
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("opsplane_integrate")

INGEST_PATH = "/monitoring/api/ingest/"

# `events[3]` or `events[3].status` (a JSON array body), as the operator names a bad event.
_BAD_EVENT = re.compile(r"^events\[(\d+)\]")


@dataclass(frozen=True)
class Counters:
    """What a reporter has done with the events it was given, since it was made."""

    #: events opsplane acknowledged
    sent: int
    #: events dropped here: the queue was full, or they were still unsent when the exit
    #: flush ran out of time
    dropped: int
    #: events opsplane refused as invalid (a 4xx other than 408 and 429)
    refused: int
    #: posts that failed and were retried (no connection, timeout, 408, 429, 5xx)
    failed_posts: int
    #: events waiting in the queue or in the batch being sent
    queued: int


def ingest_url(url):
    """The ingestion endpoint of the opsplane at ``url`` (its base URL, or the endpoint
    itself). Raises ``ValueError`` when ``url`` is not an absolute http(s) URL."""
    if not isinstance(url, str) or not url:
        raise ValueError(
            "opsplane_integrate requires url: opsplane's base URL, e.g. http://opsplane:8080 "
            "(or set OPSPLANE_URL)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"opsplane url should be an absolute http(s) URL such as http://opsplane:8080, got {url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(INGEST_PATH.rstrip("/")):
        path = path + INGEST_PATH
    elif not path.endswith("/"):
        path = path + "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


class _Refused(Exception):
    """The server refused a batch (a 4xx that will not pass later)."""

    def __init__(self, status, body):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body

    def bad_event_index(self):
        """The index of the event the operator named as bad, if it named one."""
        if self.status != 400:
            return None
        try:
            errors = json.loads(self.body).get("errors") or {}
        except (ValueError, AttributeError):
            return None
        for key in errors:
            m = _BAD_EVENT.match(key)
            if m:
                return int(m.group(1))
        return None


class _Retry(Exception):
    """The post may pass later (no connection, timeout, 408, 429, 5xx)."""

    def __init__(self, reason, retry_after=None):
        super().__init__(reason)
        self.retry_after = retry_after


class Reporter:
    """Queues request events and posts them to opsplane in batches from a background thread.

    ``url`` is opsplane's base URL (``http://opsplane:8080``) or its ingestion endpoint;
    ``token`` a bearer token with the operator role (docs/auth.md). ``queue_size`` bounds the
    events held in memory; ``batch_size`` events at most go in one post, which is made as soon
    as a batch is full or ``interval`` seconds after its first event. A failed post is retried
    after 0.5 s, doubling up to ``max_backoff`` seconds (or the server's ``Retry-After``).
    ``timeout`` bounds each post; ``flush_timeout`` the flush at exit. ``service_type`` and
    ``host`` are added to every event that does not carry them.
    """

    def __init__(
        self,
        url,
        token,
        *,
        queue_size=10_000,
        batch_size=500,
        interval=1.0,
        timeout=5.0,
        max_backoff=30.0,
        flush_timeout=5.0,
        service_type=None,
        host=None,
        ssl_context=None,
    ):
        if not token:
            raise ValueError(
                "opsplane_integrate requires token: a bearer token with the operator role "
                "(or set OPSPLANE_TOKEN)"
            )
        for name, value in (
            ("queue_size", queue_size),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        # The operator takes at most 10,000 events per request.
        if batch_size > 10_000:
            raise ValueError(f"batch_size may be at most 10000, got {batch_size}")
        for name, value in (
            ("interval", interval),
            ("timeout", timeout),
            ("max_backoff", max_backoff),
            ("flush_timeout", flush_timeout),
        ):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
        self.url = ingest_url(url)
        parts = urlsplit(self.url)
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._path = parts.path
        self._token = token
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.max_backoff = float(max_backoff)
        self.flush_timeout = float(flush_timeout)
        self.service_type = service_type
        self.host = host
        self._ssl_context = ssl_context
        self._sent = 0
        self._dropped = 0
        self._refused = 0
        self._failed_posts = 0
        self._logged = set()
        self._init_state()
        atexit.register(self._at_exit)
        if hasattr(os, "register_at_fork"):
            # A worker forked from a preloaded app (gunicorn --preload) has the parent's queue
            # and lock but not its thread: start over in the child.
            os.register_at_fork(after_in_child=self._after_fork)

    def _init_state(self):
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue = deque()
        self._in_flight = 0
        self._closing = False
        self._deadline = None
        self._flushes = 0
        self._thread = None
        self._conn = None
        self._pid = os.getpid()

    def _after_fork(self):
        self._init_state()
        with self._lock:
            self._sent = self._dropped = self._refused = self._failed_posts = 0

    # -- the app's side ---------------------------------------------------------------------

    def report(self, event):
        """Queues one event (a dict of the ingestion fields). Never blocks, never raises;
        returns False when the event was dropped (the queue is full or the reporter closed)."""
        try:
            if self.service_type is not None:
                event.setdefault("service_type", self.service_type)
            if self.host is not None:
                event.setdefault("host", self.host)
            with self._lock:
                if self._closing or len(self._queue) >= self.queue_size:
                    self._dropped += 1
                    full = not self._closing
                else:
                    self._queue.append(event)
                    if self._thread is None:
                        self._start()
                    if len(self._queue) >= self.batch_size:
                        self._wake.notify()
                    return True
            if full:
                self._log_once(
                    "full",
                    logging.WARNING,
                    "opsplane_integrate: the queue is full (%d events): dropping new events "
                    "until opsplane takes them (counted in counters().dropped)",
                    self.queue_size,
                )
            return False
        except Exception:  # the app must never see the reporter fail
            return False

    def counters(self):
        """A snapshot of the :class:`Counters`."""
        with self._lock:
            return Counters(
                sent=self._sent,
                dropped=self._dropped,
                refused=self._refused,
                failed_posts=self._failed_posts,
                queued=len(self._queue) + self._in_flight,
            )

    def flush(self, timeout=None):
        """Waits until every queued event was sent (or dropped, or refused), at most
        ``timeout`` seconds (default ``flush_timeout``). Returns True when nothing is left."""
        timeout = self.flush_timeout if timeout is None else timeout
        end = time.monotonic() + timeout
        with self._lock:
            self._flushes += 1
            self._wake.notify()
            try:
                while self._queue or self._in_flight:
                    left = end - time.monotonic()
                    if left <= 0 or self._thread is None:
                        break
                    self._wake.wait(min(left, 0.05))
                return not (self._queue or self._in_flight)
            finally:
                self._flushes -= 1

    def close(self, timeout=None):
        """Sends what is queued (at most ``timeout`` seconds, default ``flush_timeout``), then
        stops the thread; what is left is dropped and counted. Later events are dropped."""
        timeout = self.flush_timeout if timeout is None else timeout
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + timeout
            thread = self._thread
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout + 0.5)
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
            self._dropped += left

    def _at_exit(self):
        if os.getpid() == self._pid:
            self.close()

    # -- the thread's side ------------------------------------------------------------------

    def _start(self):
        # Called with the lock held.
        self._thread = threading.Thread(
            target=self._run, name="opsplane-integrate", daemon=True
        )
        self._thread.start()

    def _next_batch(self):
        """Waits for a batch to be due and takes it; None when closing with nothing left."""
        with self._lock:
            first_seen = None
            while True:
                if self._queue and (
                    len(self._queue) >= self.batch_size or self._closing or self._flushes
                ):
                    break
                if self._closing and not self._queue:
                    return None
                now = time.monotonic()
                if self._queue:
                    if first_seen is None:
                        first_seen = now
                    left = first_seen + self.interval - now
                    if left <= 0:
                        break
                    self._wake.wait(left)
                else:
                    first_seen = None
                    self._wake.wait()
            n = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._in_flight = n
            return batch

    def _run(self):
        while True:
            try:
                batch = self._next_batch()
                if batch is None:
                    return
                self._send(batch)
            except Exception as e:  # never let the thread die with events queued
                self._log_once("bug", logging.ERROR, "opsplane_integrate: %r", e)
            finally:
                with self._lock:
                    self._in_flight = 0
                    self._wake.notify_all()

    def _send(self, batch):
        backoff = 0.5
        index_drops = 0
        down = False
        while batch:
            if self._past_deadline():
                with self._lock:
                    self._dropped += len(batch)
                return
            try:
                self._post(batch)
            except _Refused as refused:
                index = refused.bad_event_index()
                # One bad event refuses the whole batch: drop that one and send the rest,
                # a few times per batch (each costs a round trip).
                if index is not None and index < len(batch) and index_drops < 5:
                    index_drops += 1
                    del batch[index]
                    with self._lock:
                        self._refused += 1
                        self._in_flight = len(batch)
                    self._log_refused(refused)
                    continue
                with self._lock:
                    self._refused += len(batch)
                self._log_refused(refused)
                return
            except _Retry as retry:
                with self._lock:
                    self._failed_posts += 1
                if not down:
                    down = True
                    self._log_once(
                        "down",
                        logging.WARNING,
                        "opsplane_integrate: cannot post to %s (%s); retrying, events queue up "
                        "to %d and are dropped beyond",
                        self.url,
                        retry,
                        self.queue_size,
                    )
                wait = backoff if retry.retry_after is None else retry.retry_after
                wait = min(wait, self.max_backoff) * random.uniform(0.8, 1.0)
                backoff = min(backoff * 2, self.max_backoff)
                if not self._wait_before_retry(wait):
                    with self._lock:
                        self._dropped += len(batch)
                    return
                continue
            with self._lock:
                self._sent += len(batch)
            if down:
                self._logged.discard("down")
                log.info("opsplane_integrate: posting to %s again", self.url)
            return

    def _past_deadline(self):
        with self._lock:
            return self._closing and time.monotonic() >= self._deadline

    def _wait_before_retry(self, wait):
        """Sleeps ``wait`` seconds, less when closing; False when the exit deadline passed."""
        end = time.monotonic() + wait
        with self._lock:
            while True:
                now = time.monotonic()
                if self._closing:
                    if now >= self._deadline:
                        return False
                    end = min(end, self._deadline)
                if now >= end:
                    return True
                # close() notifies: the wait is cut to the exit deadline.
                self._wake.wait(end - now)

    def _connection(self):
        if self._conn is None:
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    self._netloc,
                    timeout=self.timeout,
                    context=self._ssl_context or ssl.create_default_context(),
                )
            else:
                self._conn = http.client.HTTPConnection(self._netloc, timeout=self.timeout)
        return self._conn

    def _post(self, batch):
        body = json.dumps(batch, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "User-Agent": "opsplane-integrate-python/0.1",
        }
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as e:
            self._drop_connection()
            raise _Retry(f"{type(e).__name__}: {e}") from None
        status = response.status
        if response.getheader("connection", "").lower() == "close":
            self._drop_connection()
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500:
            retry_after = None
            try:
                retry_after = float(response.getheader("retry-after", ""))
            except ValueError:
                pass
            raise _Retry(f"HTTP {status}", retry_after)
        raise _Refused(status, answer)

    def _drop_connection(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _log_refused(self, refused):
        body = refused.body[:500].decode("utf-8", "replace")
        self._log_once(
            f"refused-{refused.status}",
            logging.ERROR,
            "opsplane_integrate: opsplane refused events with HTTP %d (dropped, counted in "
            "counters().refused): %s",
            refused.status,
            body,
        )

    def _log_once(self, key, level, message, *args):
        if key in self._logged:
            log.debug(message, *args)
            return
        self._logged.add(key)
        log.log(level, message, *args)
