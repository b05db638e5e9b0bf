"""One request as opsplane's ingestion endpoint takes it (docs/monitoring.md, "Ingesting
request events"): what the middlewares measure, and the rules they share — the client address
behind trusted proxies, text fields cut to what opsplane accepts, the exception's type and
message.
"""

import ipaddress
import logging
import time
import traceback

log = logging.getLogger("opsplane_integrate")

#: Longest text opsplane takes in a field that becomes a label (path, user agent, ...).
MAX_NAME_BYTES = 1024
#: Longest traceback sent with an exception.
MAX_ERROR_DATA_BYTES = 16 * 1024

#: Methods not reported unless told otherwise, as UtilMeta's ``Operations.Log.exclude_methods``.
DEFAULT_EXCLUDE_METHODS = ("OPTIONS", "CONNECT", "TRACE", "HEAD")


def cut(text, limit=MAX_NAME_BYTES):
    """``text`` shortened to at most ``limit`` bytes of UTF-8, on a character boundary."""
    if text is None:
        return None
    text = str(text)
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


class TrustedProxies:
    """The addresses (``"10.0.0.1"``) and networks (``"10.0.0.0/8"``) whose
    ``X-Forwarded-For`` is believed. Without any, the socket's peer is the client."""

    def __init__(self, proxies=()):
        if isinstance(proxies, str):
            proxies = [proxies]
        self.networks = [ipaddress.ip_network(p, strict=False) for p in proxies]

    def trusts(self, address):
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in n for n in self.networks)

    def client(self, peer, forwarded_for):
        """The client's address: the peer, unless the peer is a trusted proxy; then the
        right-most address of ``X-Forwarded-For`` that is not a trusted proxy."""
        if not peer or not forwarded_for or not self.networks or not self.trusts(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


def error_of(exc):
    """The ``error`` field of an event for an exception: its type, message and traceback."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    data = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    return {
        "type": cut(name),
        "message": cut(str(exc), MAX_ERROR_DATA_BYTES),
        "data": cut(data, MAX_ERROR_DATA_BYTES),
    }


class RequestRecord:
    """What a middleware learns about one request while it passes, and the event it becomes."""

    __slots__ = (
        "service",
        "started",
        "wall",
        "method",
        "path",
        "user_agent",
        "ip",
        "status",
        "size",
        "user",
        "username",
        "error",
        "done",
    )

    def __init__(self, service, method, path, user_agent, ip):
        self.service = service
        self.started = time.perf_counter()
        self.wall = time.time()
        self.method = method
        self.path = path
        self.user_agent = user_agent
        self.ip = ip
        self.status = None
        self.size = None
        self.user = None
        self.username = None
        self.error = None
        self.done = False

    def add_size(self, n):
        self.size = (self.size or 0) + n

    def set_user(self, found):
        """Takes what a user callable returned: a name, or an ``(id, name)`` pair."""
        if found is None:
            return
        if isinstance(found, tuple) and len(found) == 2:
            user, name = found
        else:
            user = name = found
        self.user = cut(user) if user is not None else None
        self.username = cut(name) if name is not None else None

    def event(self):
        """The event for opsplane, with the fields that were measured."""
        e = {
            "service": self.service,
            "time": round(self.wall, 6),
            "method": cut(self.method),
            "path": cut(self.path),
            "duration_ms": round((time.perf_counter() - self.started) * 1000.0, 3),
        }
        if self.status is not None and 100 <= self.status <= 599:
            e["status"] = self.status
        if self.size is not None:
            e["size"] = self.size
        for key in ("user_agent", "ip", "user", "username"):
            value = getattr(self, key)
            if value:
                e[key] = cut(value)
        if self.error is not None:
            e["error"] = self.error
        return e


def call_user(get_user, arg, record):
    """Runs the app's user callable; its failure is logged, never raised."""
    if get_user is None:
        return
    try:
        record.set_user(get_user(arg))
    except Exception as e:
        log.warning("opsplane_integrate: the user callable failed: %r", e)
