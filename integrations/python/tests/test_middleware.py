"""The WSGI and ASGI middlewares around plain apps (no framework), reporting to a real loopback
receiver: the measured fields, streamed sizes, exceptions re-raised unchanged, the client
address behind trusted proxies, excluded methods, before_send. The framework apps (Flask,
FastAPI, Django) against a real opsplane are operator/tests/integrate_python.rs."""

import asyncio
import io
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))

from receiver import Receiver  # noqa: E402

from opsplane_integrate import OpsplaneASGI, OpsplaneWSGI, Reporter, TrustedProxies  # noqa: E402


def environ(path="/", method="GET", **extra):
    env = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "q=1",
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_USER_AGENT": "unit-agent/1",
        "wsgi.input": io.BytesIO(),
    }
    env.update(extra)
    return env


def run_wsgi(app, env):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status
        return lambda data: None

    body = app(env, start_response)
    try:
        data = b"".join(body)
    finally:
        body.close()
    return seen["status"], data


def wsgi_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise KeyError("missing thing")
    if path == "/stream":
        start_response("200 OK", [("content-type", "text/plain")])
        return (b"x" * 1000 for _ in range(5))
    if path == "/user":
        environ["REMOTE_USER"] = "carol"
    start_response("404 Not Found" if path == "/nope" else "200 OK", [])
    return [b"hello"]


class Base(unittest.TestCase):
    def setUp(self):
        self.receiver = Receiver()
        self.reporter = Reporter(self.receiver.url, "t", interval=0)

    def tearDown(self):
        self.reporter.close()
        self.receiver.stop()

    def events(self):
        self.assertTrue(self.reporter.flush(5))
        return self.receiver.accepted()


class WSGI(Base):
    def test_each_request_is_reported_with_its_fields(self):
        app = OpsplaneWSGI(wsgi_app, service="plain", reporter=self.reporter)
        self.assertEqual(run_wsgi(app, environ("/hello")), ("200 OK", b"hello"))
        self.assertEqual(run_wsgi(app, environ("/nope", "POST"))[0], "404 Not Found")
        self.assertEqual(run_wsgi(app, environ("/stream"))[1], b"x" * 5000)
        run_wsgi(app, environ("/user"))
        run_wsgi(app, environ("/caf\u00e9".encode("utf-8").decode("latin-1")))
        events = self.events()
        self.assertEqual(
            [(e["method"], e["path"], e["status"], e["size"]) for e in events],
            [
                ("GET", "/hello", 200, 5),
                ("POST", "/nope", 404, 5),
                ("GET", "/stream", 200, 5000),
                ("GET", "/user", 200, 5),
                ("GET", "/caf\u00e9", 200, 5),
            ],
        )
        first = events[0]
        self.assertEqual(first["service"], "plain")
        self.assertEqual(first["ip"], "10.0.0.5")
        self.assertEqual(first["user_agent"], "unit-agent/1")
        self.assertGreaterEqual(first["duration_ms"], 0)
        self.assertNotIn("user", first)
        self.assertEqual((events[3]["user"], events[3]["username"]), ("carol", "carol"))

    def test_an_unhandled_exception_is_reported_and_reraised_unchanged(self):
        app = OpsplaneWSGI(wsgi_app, service="plain", reporter=self.reporter)
        with self.assertRaises(KeyError) as raised:
            run_wsgi(app, environ("/boom", REMOTE_USER="erin"))
        self.assertEqual(raised.exception.args, ("missing thing",))
        (e,) = self.events()
        self.assertEqual(e["status"], 500)
        self.assertEqual(e["user"], "erin", "the user of a request that raised")
        self.assertEqual(e["error"]["type"], "KeyError")
        self.assertEqual(e["error"]["message"], "'missing thing'")
        self.assertIn("Traceback", e["error"]["data"])

    def test_forwarded_for_is_believed_only_from_trusted_proxies(self):
        app = OpsplaneWSGI(wsgi_app, service="plain", reporter=self.reporter, trusted_proxies=["10.0.0.0/24"])
        run_wsgi(app, environ(HTTP_X_FORWARDED_FOR="203.0.113.9, 10.0.0.7"))
        run_wsgi(app, environ(REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="203.0.113.9"))
        self.assertEqual([e["ip"] for e in self.events()], ["203.0.113.9", "192.0.2.1"])

    def test_excluded_methods_and_before_send(self):
        def before_send(event):
            if event["path"] == "/health":
                return None
            event["path"] = event["path"].upper()
            return event

        app = OpsplaneWSGI(wsgi_app, service="plain", reporter=self.reporter, before_send=before_send)
        run_wsgi(app, environ("/a", "HEAD"))
        run_wsgi(app, environ("/a", "OPTIONS"))
        run_wsgi(app, environ("/health"))
        run_wsgi(app, environ("/b"))
        self.assertEqual([e["path"] for e in self.events()], ["/B"])

    def test_long_fields_are_cut_to_what_opsplane_takes(self):
        app = OpsplaneWSGI(wsgi_app, service="plain", reporter=self.reporter)
        run_wsgi(app, environ("/" + "\u00e9" * 2000, HTTP_USER_AGENT="a" * 5000))
        (e,) = self.events()
        self.assertLessEqual(len(e["path"].encode()), 1024)
        self.assertEqual(len(e["user_agent"]), 1024)

    def test_a_failing_user_callable_does_not_fail_the_request(self):
        def user(environ):
            raise RuntimeError("auth backend down")

        app = OpsplaneWSGI(wsgi_app, service="plain", reporter=self.reporter, user=user)
        self.assertEqual(run_wsgi(app, environ("/hello")), ("200 OK", b"hello"))
        (e,) = self.events()
        self.assertNotIn("user", e)


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/boom":
        raise ZeroDivisionError("division by zero")
    await send({"type": "http.response.start", "status": 201, "headers": []})
    for _ in range(3):
        await send({"type": "http.response.body", "body": b"abcd", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def run_asgi(app, path, client=("10.0.0.5", 5000), headers=()):
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "client": client,
        "headers": [(b"user-agent", b"asgi-agent")] + list(headers),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


class ASGI(Base):
    def test_each_request_is_reported_with_its_streamed_size(self):
        app = OpsplaneASGI(asgi_app, service="async", reporter=self.reporter)
        sent = run_asgi(app, "/s")
        self.assertEqual(sent[0]["status"], 201)
        (e,) = self.events()
        self.assertEqual(
            (e["service"], e["method"], e["path"], e["status"], e["size"], e["ip"], e["user_agent"]),
            ("async", "GET", "/s", 201, 12, "10.0.0.5", "asgi-agent"),
        )

    def test_an_unhandled_exception_is_reported_and_reraised_unchanged(self):
        app = OpsplaneASGI(asgi_app, service="async", reporter=self.reporter, user=lambda scope: "dave")
        with self.assertRaises(ZeroDivisionError):
            run_asgi(app, "/boom")
        (e,) = self.events()
        self.assertEqual((e["status"], e["error"]["type"], e["error"]["message"]), (500, "ZeroDivisionError", "division by zero"))
        self.assertEqual(e["user"], "dave", "the user of a request that raised")
        self.assertNotIn("size", e)

    def test_other_scopes_pass_untouched(self):
        app = OpsplaneASGI(asgi_app, service="async", reporter=self.reporter)

        async def lifespan():
            await app({"type": "lifespan"}, None, None)

        asyncio.run(lifespan())
        self.assertEqual(self.events(), [])

    def test_forwarded_for_from_a_trusted_proxy(self):
        app = OpsplaneASGI(asgi_app, service="async", reporter=self.reporter, trusted_proxies="127.0.0.1")
        run_asgi(app, "/s", client=("127.0.0.1", 1), headers=[(b"x-forwarded-for", b"198.51.100.4")])
        run_asgi(app, "/s", client=("10.0.0.9", 1), headers=[(b"x-forwarded-for", b"198.51.100.4")])
        self.assertEqual([e["ip"] for e in self.events()], ["198.51.100.4", "10.0.0.9"])


class Proxies(unittest.TestCase):
    def test_the_rightmost_untrusted_hop_is_the_client(self):
        p = TrustedProxies(["10.0.0.0/8", "::1"])
        self.assertEqual(p.client("10.1.1.1", "1.2.3.4, 5.6.7.8, 10.2.2.2"), "5.6.7.8")
        self.assertEqual(p.client("::1", "1.2.3.4"), "1.2.3.4")
        self.assertEqual(p.client("10.1.1.1", "10.3.3.3"), "10.3.3.3")
        self.assertEqual(p.client("8.8.8.8", "1.2.3.4"), "8.8.8.8")
        self.assertEqual(TrustedProxies().client("10.1.1.1", "1.2.3.4"), "10.1.1.1")


if __name__ == "__main__":
    unittest.main()
