"""A real loopback HTTP server standing in for opsplane's ingestion endpoint in the unit
tests: it records every post and answers from a script of statuses (200 once it runs out)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, script=()):
        self.posts = []  # (path, headers, events)
        self.script = list(script)  # (status, body dict, headers dict)
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    status, answer, headers = (
                        receiver.script.pop(0) if receiver.script else (200, {"status": "ok"}, {})
                    )
                    receiver.posts.append((self.path, dict(self.headers), json.loads(body), status))
                    receiver.arrived.notify_all()
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self):
        """The events of every post answered 2xx, in order."""
        with self.lock:
            return [e for (_, _, events, status) in self.posts if status < 300 for e in events]

    def wait_posts(self, n, timeout=10):
        with self.lock:
            self.arrived.wait_for(lambda: len(self.posts) >= n, timeout)
            return len(self.posts)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
