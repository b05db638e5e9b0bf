"""Real Flask, FastAPI and Django apps, each given opsplane by one `integrate(...)` line and
served by a real server on a loopback port (werkzeug's, uvicorn, werkzeug around Django's WSGI
handler), then asked the same requests over HTTP: two that answer, one that raises, one
streamed, one 404, and an OPTIONS that is not reported. Prints, as JSON, what the client saw of
each request and each reporter's counters after a flush; operator/tests/integrate_python.rs
compares that with what opsplane's monitoring API says arrived.

usage: apps.py <opsplane url> <token> <work dir>
"""

import asyncio
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

from opsplane_integrate import integrate

OPSPLANE, TOKEN, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
CHUNKS, CHUNK, PAUSE = 10, 100, 0.03  # the streamed body: 1000 bytes over >= 0.3 s
FORWARDED = "203.0.113.10"


def flask_app():
    from flask import Flask, Response, request

    app = Flask("flask_shop")

    @app.get("/hello")
    def hello():
        return "hello from flask"

    @app.get("/boom")
    def boom():
        raise ValueError("flask boom")

    @app.get("/stream")
    def stream():
        def chunks():
            for _ in range(CHUNKS):
                time.sleep(PAUSE)
                yield b"f" * CHUNK

        return Response(chunks(), mimetype="text/plain")

    # The user callable runs inside Flask's request context.
    reporter = integrate(
        app,
        service="flask-shop",
        url=OPSPLANE,
        token=TOKEN,
        user=lambda environ: request.headers.get("X-User"),
        trusted_proxies=["127.0.0.1"],
        interval=0.2,
    )
    return app, reporter


def fastapi_app():
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.get("/hello")
    def hello():
        return {"hello": "from fastapi"}

    @app.get("/boom")
    def boom():
        raise RuntimeError("fastapi boom")

    @app.get("/stream")
    async def stream():
        async def chunks():
            for _ in range(CHUNKS):
                await asyncio.sleep(PAUSE)
                yield b"a" * CHUNK

        return StreamingResponse(chunks(), media_type="text/plain")

    def user(scope):
        return Request(scope).headers.get("x-user")

    # No trusted proxies: X-Forwarded-For is not believed, the client is the socket's peer.
    reporter = integrate(app, service="fastapi-shop", url=OPSPLANE, token=TOKEN, user=user, interval=0.2)
    return app, reporter


def django_app():
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="integrate-test",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="django_urls",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django_urls.HeaderRemoteUserMiddleware",
        ],
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.RemoteUserBackend"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(WORK, "django.sqlite3"),
            }
        },
        LOGGING_CONFIG=None,
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    # wsgi.py as seed 000 writes it, with opsplane's line instead of Operations(...).
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    reporter = integrate(
        application,
        service="django-shop",
        url=OPSPLANE,
        token=TOKEN,
        trusted_proxies=["127.0.0.1"],
        interval=0.2,
    )
    return application, reporter


def serve_wsgi(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_port


def serve_asgi(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # uvicorn's own proxy_headers (on by default, trusting 127.0.0.1) would already put
    # X-Forwarded-For into scope["client"]; off, so the middleware's trusted_proxies decide.
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="critical", lifespan="off", proxy_headers=False)
    )
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return port


# (method, path with query, X-User) of the requests every app is asked.
REQUESTS = [
    ("GET", "/hello", "alice"),
    ("GET", "/hello?page=2", "bob"),
    ("GET", "/boom", "alice"),
    ("GET", "/stream", None),
    ("GET", "/missing", None),
    ("OPTIONS", "/hello", None),
]


def ask(port, service):
    seen = []
    for method, target, user in REQUESTS:
        headers = {"User-Agent": f"integrate-test/{service}", "X-Forwarded-For": FORWARDED}
        if user:
            headers["X-User"] = user
        req = urllib.request.Request(f"http://127.0.0.1:{port}{target}", method=method, headers=headers)
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        seen.append(
            {
                "method": method,
                "path": target.split("?")[0],
                "user": user,
                "status": status,
                "size": len(body),
                "ms": (time.perf_counter() - started) * 1000,
            }
        )
    return seen


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    out = {}
    for service, make, serve in (
        ("flask-shop", flask_app, serve_wsgi),
        ("fastapi-shop", fastapi_app, serve_asgi),
        ("django-shop", django_app, serve_wsgi),
    ):
        app, reporter = make()
        port = serve(app)
        seen = ask(port, service)
        flushed = reporter.flush(20)
        out[service] = {"requests": seen, "flushed": flushed, "counters": vars(reporter.counters())}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
