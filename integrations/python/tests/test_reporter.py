"""The reporter against a real loopback receiver: batching, the bearer token, retries of what
can pass later, dropping what is refused, the bounded queue, the flush at exit."""

import json
import os
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))

from receiver import Receiver  # noqa: E402

from opsplane_integrate import Reporter, ingest_url  # noqa: E402


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def event(i):
    return {"service": "unit", "path": f"/e/{i}", "status": 200}


class IngestUrl(unittest.TestCase):
    def test_the_base_url_gets_the_ingestion_path_and_the_endpoint_stays(self):
        self.assertEqual(ingest_url("http://h:8080"), "http://h:8080/monitoring/api/ingest/")
        self.assertEqual(ingest_url("http://h:8080/"), "http://h:8080/monitoring/api/ingest/")
        self.assertEqual(ingest_url("https://h/ops"), "https://h/ops/monitoring/api/ingest/")
        self.assertEqual(
            ingest_url("http://h/monitoring/api/ingest"), "http://h/monitoring/api/ingest/"
        )

    def test_a_relative_or_missing_url_is_refused_at_start(self):
        for bad in ("opsplane:8080", "/monitoring", "ftp://h", "", None):
            with self.assertRaises(ValueError):
                ingest_url(bad)
        with self.assertRaises(ValueError):
            Reporter("http://127.0.0.1:1", "")


class Batching(unittest.TestCase):
    def setUp(self):
        self.receiver = Receiver()

    def tearDown(self):
        self.receiver.stop()

    def test_events_go_in_batches_of_batch_size_with_the_bearer_token(self):
        r = Reporter(self.receiver.url, "t0k", batch_size=4, interval=30, flush_timeout=2)
        for i in range(8):
            self.assertTrue(r.report(event(i)))
        # Two full batches go at once, without waiting for the interval.
        self.assertEqual(self.receiver.wait_posts(2, timeout=5), 2)
        path, headers, events, _ = self.receiver.posts[0]
        self.assertEqual(path, "/monitoring/api/ingest/")
        self.assertEqual(headers["Authorization"], "Bearer t0k")
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual([len(p[2]) for p in self.receiver.posts], [4, 4])
        self.assertEqual([e["path"] for e in self.receiver.accepted()], [f"/e/{i}" for i in range(8)])
        self.assertTrue(r.flush(2))
        c = r.counters()
        self.assertEqual((c.sent, c.dropped, c.refused, c.failed_posts, c.queued), (8, 0, 0, 0, 0))
        r.close()

    def test_a_partial_batch_goes_after_the_interval(self):
        r = Reporter(self.receiver.url, "t", batch_size=100, interval=0.2)
        started = time.monotonic()
        r.report(event(1))
        self.assertEqual(self.receiver.wait_posts(1, timeout=5), 1)
        self.assertGreaterEqual(time.monotonic() - started, 0.15)
        self.assertEqual(len(self.receiver.posts[0][2]), 1)
        r.close()

    def test_service_type_and_host_are_added_to_events(self):
        r = Reporter(self.receiver.url, "t", interval=0, service_type="web", host="box-1")
        r.report(event(1))
        r.report(dict(event(2), host="other"))
        self.assertTrue(r.flush(5))
        events = self.receiver.accepted()
        self.assertEqual([(e["service_type"], e["host"]) for e in events], [("web", "box-1"), ("web", "other")])
        r.close()


class Failures(unittest.TestCase):
    def test_5xx_and_429_are_retried_until_they_pass(self):
        receiver = Receiver(
            [
                (503, {"status": "error"}, {}),
                (429, {"status": "error"}, {"Retry-After": "0"}),
                (500, {"status": "error"}, {}),
            ]
        )
        try:
            r = Reporter(receiver.url, "t", batch_size=2, interval=10, max_backoff=0.05)
            r.report(event(1))
            r.report(event(2))
            self.assertTrue(r.flush(5))
            self.assertEqual(len(receiver.posts), 4)
            self.assertEqual([e["path"] for e in receiver.accepted()], ["/e/1", "/e/2"])
            c = r.counters()
            self.assertEqual((c.sent, c.failed_posts, c.refused, c.dropped), (2, 3, 0, 0))
            r.close()
        finally:
            receiver.stop()

    def test_the_event_opsplane_names_as_bad_is_dropped_and_the_rest_sent(self):
        bad = {"status": "error", "success": False, "errors": {"events[1].status": ["no"]}, "data": {}}
        receiver = Receiver([(400, bad, {})])
        try:
            r = Reporter(receiver.url, "t", batch_size=3, interval=10)
            for i in range(3):
                r.report(event(i))
            self.assertTrue(r.flush(5))
            self.assertEqual([e["path"] for e in receiver.accepted()], ["/e/0", "/e/2"])
            c = r.counters()
            self.assertEqual((c.sent, c.refused, c.failed_posts), (2, 1, 0))
            r.close()
        finally:
            receiver.stop()

    def test_a_refused_batch_is_dropped_counted_and_logged_once(self):
        auth = {"status": "error", "success": False, "errors": {"authorization": ["wrong"]}, "data": {}}
        receiver = Receiver([(401, auth, {}), (401, auth, {})])
        try:
            r = Reporter(receiver.url, "wrong", batch_size=2, interval=10)
            with self.assertLogs("opsplane_integrate", "DEBUG") as logs:
                for i in range(4):
                    r.report(event(i))
                self.assertTrue(r.flush(5))
            errors = [m for m in logs.output if m.startswith("ERROR")]
            self.assertEqual(len(errors), 1, logs.output)
            self.assertIn("HTTP 401", errors[0])
            c = r.counters()
            self.assertEqual((c.sent, c.refused, c.failed_posts), (0, 4, 0))
            r.close()
        finally:
            receiver.stop()

    def test_with_opsplane_down_report_stays_fast_and_drops_beyond_the_queue(self):
        r = Reporter(f"http://127.0.0.1:{closed_port()}", "t", queue_size=10, batch_size=5, interval=0, max_backoff=0.05)
        accepted = 0
        slowest = 0.0
        for i in range(100):
            started = time.perf_counter()
            accepted += r.report(event(i))
            slowest = max(slowest, time.perf_counter() - started)
        self.assertLess(slowest, 0.05)
        time.sleep(0.3)
        c = r.counters()
        self.assertEqual(c.sent, 0)
        self.assertGreaterEqual(c.failed_posts, 1)
        # At most the queue and one batch in flight are held; the rest were dropped, counted.
        self.assertLessEqual(c.queued, 15)
        self.assertEqual(c.dropped, 100 - accepted)
        self.assertGreaterEqual(c.dropped, 85)
        self.assertFalse(r.flush(0.2))
        started = time.monotonic()
        r.close(0.3)
        self.assertLess(time.monotonic() - started, 2.0)
        c = r.counters()
        # What was held is dropped when the exit flush gives up.
        self.assertEqual(c.dropped, 100)
        self.assertEqual(c.queued, 0)
        self.assertFalse(r.report(event(0)))


class AtExit(unittest.TestCase):
    def test_queued_events_are_sent_at_exit(self):
        receiver = Receiver()
        try:
            code = (
                "import sys; from opsplane_integrate import Reporter\n"
                f"r = Reporter({receiver.url!r}, 't', batch_size=100, interval=60)\n"
                "for i in range(7): r.report({'service': 'exit', 'path': '/x'})\n"
            )
            subprocess.run([sys.executable, "-c", code], check=True, timeout=20)
            self.assertEqual(len(receiver.accepted()), 7)
        finally:
            receiver.stop()

    def test_exit_is_bounded_when_opsplane_is_down(self):
        code = (
            "from opsplane_integrate import Reporter\n"
            f"r = Reporter('http://127.0.0.1:{closed_port()}', 't', interval=0, flush_timeout=0.5)\n"
            "r.report({'service': 'exit'})\n"
        )
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, timeout=20)
        self.assertLess(time.monotonic() - started, 5)


if __name__ == "__main__":
    unittest.main()
